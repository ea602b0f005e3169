"""
End to end, C{twistd securenet --workers 2}: a supervisor and two worker
processes on one listening socket.  Sessions are served by both; a worker
killed with SIGKILL is restarted and no session is lost meanwhile; SIGHUP
reaches every worker; SIGTERM drains every worker and the supervisor exits
0 with no worker left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

from tests.support import Twistd, run, script
from tests.support.e2e import E2EBase, client_endpoint, server_listen


def wait_until(predicate: object, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.05)
    return bool(callable(predicate) and predicate())


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class WorkersTests(E2EBase):
    def start(self) -> Twistd:
        server = self.startServer("--workers", "2", "--listen", server_listen(self.certs))
        self.assertTrue(wait_until(lambda: server.logText().count("securenet listening on") >= 2), server.logText())
        return server

    def pids(self, server: Twistd) -> dict[int, int]:
        """Worker number -> pid, the latest start of each."""
        return {int(n): int(pid) for n, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", server.logText())}

    def echo(self, port: int, data: bytes) -> subprocess.CompletedProcess[bytes]:
        return run([script("securenet"), "connect", "--linger", "0.2", "-q", client_endpoint(self.certs, port)], input=data)

    def test_restartReloadStop(self) -> None:
        server = self.start()
        pids = self.pids(server)
        self.assertEqual(sorted(pids), [1, 2])
        self.assertTrue(all(running(p) for p in pids.values()))
        for n in range(4):
            result = self.echo(server.port, b"hello %d\n" % n)
            self.assertEqual((result.returncode, result.stdout), (0, b"hello %d\n" % n), result.stderr)

        # A worker dies: the other serves meanwhile, the supervisor starts a new one.
        os.kill(pids[1], signal.SIGKILL)
        for n in range(3):
            result = self.echo(server.port, b"meanwhile %d\n" % n)
            self.assertEqual((result.returncode, result.stdout), (0, b"meanwhile %d\n" % n), result.stderr)
        self.assertTrue(wait_until(lambda: self.pids(server)[1] != pids[1]), server.logText())
        self.assertIn("worker 1 ended", server.logText())
        self.assertTrue(wait_until(lambda: server.logText().count("securenet listening on") >= 3), server.logText())
        restarted = self.pids(server)
        self.assertEqual(restarted[2], pids[2])

        # SIGHUP reaches both workers.
        server.process.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: server.logText().count("SIGHUP: reloaded 1, refused 0") == 2), server.logText())

        # SIGTERM: every worker drains and exits, then the supervisor, with status 0.
        server.process.send_signal(signal.SIGTERM)
        self.assertEqual(server.process.wait(60), 0, server.logText())
        log = server.logText()
        self.assertEqual(log.count("] stopped: "), 2, log)
        self.assertIn("supervisor stopped: every worker exited", log)
        self.assertFalse(any(running(p) for p in restarted.values()))
        self.assertNotIn("Traceback", log)

    def test_badConfigurationRefusedOnce(self) -> None:
        """A configuration error stops the supervisor with one line before any worker starts."""
        from tests.support import run_twistd_expecting_failure

        listen = server_listen(self.certs, certKey=str(self.base / "missing.pem"))
        result = run_twistd_expecting_failure(self.base, ["--workers", "2", "--listen", listen])
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"missing.pem", result.stdout + result.stderr)
        self.assertNotIn(b"worker 1 started", result.stdout + result.stderr)
