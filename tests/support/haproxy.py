"""
A real HAProxy (the Debian C{haproxy} package) in TCP mode in front of
securenet hosts, on 127.0.0.1, started by a test and stopped by its
cleanup.  It cannot be skipped: a machine without HAProxy fails the test
that needs it (C{make test} installs the package).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support.e2e import free_port


def haproxy_command() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if path is None:
        raise AssertionError("haproxy is not installed: run `make test`, which installs the Debian haproxy package")
    return path


class HAProxy:
    """
    HAProxy balancing C{backends} (securenet ports) round-robin, sending the
    PROXY protocol v2 header; C{health} maps a backend port to the port of
    its plain-HTTP health endpoint (C{GET /healthz}), checked every 300 ms.
    """

    def __init__(
        self,
        testcase: SynchronousTestCase,
        directory: Path,
        backends: Sequence[int],
        *,
        health: dict[int, int] | None = None,
        proxy_protocol: bool = True,
    ) -> None:
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        servers = []
        for n, backend in enumerate(backends, start=1):
            line = f"    server host{n} 127.0.0.1:{backend}"
            if proxy_protocol:
                line += " send-proxy-v2"
            if health is not None:
                line += f" check port {health[backend]} inter 300 fall 1 rise 1"
            servers.append(line)
        check = "    option httpchk GET /healthz\n" if health is not None else ""
        config = directory / "haproxy.cfg"
        config.write_text(
            "global\n"
            "    maxconn 2000\n"
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 2s\n"
            "    timeout client 60s\n"
            "    timeout server 60s\n"
            "    retries 2\n"
            "    option redispatch\n"
            "frontend securenet\n"
            f"    bind 127.0.0.1:{self.port}\n"
            "    default_backend hosts\n"
            "backend hosts\n"
            "    balance roundrobin\n"
            f"{check}" + "\n".join(servers) + "\n"
        )
        self.config = config
        self.log = directory / "haproxy.log"
        self._log = open(self.log, "wb")
        self.process = subprocess.Popen(
            [haproxy_command(), "-db", "-f", str(config)], stdout=self._log, stderr=subprocess.STDOUT, cwd=directory
        )
        testcase.addCleanup(self.stop)
        self._wait_listening(testcase)

    def _wait_listening(self, testcase: SynchronousTestCase, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                testcase.fail(f"haproxy exited with {self.process.returncode}: {self.log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        testcase.fail(f"haproxy did not listen on 127.0.0.1:{self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
