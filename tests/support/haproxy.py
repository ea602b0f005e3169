"""
A real HAProxy (the Debian C{haproxy} package) in TCP mode in front of
securenet hosts, on 127.0.0.1, started by a test and stopped by its
cleanup, with the configuration users are given
(C{examples/deploy/haproxy.cfg}) with only its ports changed.  It cannot be
skipped: a machine without HAProxy fails the test that needs it (C{make
test} installs the package).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import REPO
from tests.support.e2e import free_port

EXAMPLE = REPO / "examples" / "deploy" / "haproxy.cfg"
_SERVER = re.compile(r"^(\s*server host(\d+) )127\.0\.0\.1:\d+( .*? check port )\d+(.*)$", re.M)


def haproxy_command() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if path is None:
        raise AssertionError("haproxy is not installed: run `make test`, which installs the Debian haproxy package")
    return path


def configure(hosts: Sequence[tuple[int, int]], port: int) -> str:
    """The example configuration for C{hosts} (each C{(securenet port, metrics port)}), listening on C{port}."""
    text = EXAMPLE.read_text()
    text, bound = re.subn(r"bind 127\.0\.0\.1:\d+", f"bind 127.0.0.1:{port}", text)
    assert bound == 1, "the example has one frontend"
    found = _SERVER.findall(text)
    assert len(found) == len(hosts), f"the example has {len(found)} servers, the test {len(hosts)} hosts"

    def host(match: re.Match[str]) -> str:
        securenet, metrics = hosts[int(match.group(2)) - 1]
        return f"{match.group(1)}127.0.0.1:{securenet}{match.group(3)}{metrics}{match.group(4)}"

    return _SERVER.sub(host, text)


class HAProxy:
    """HAProxy with the example configuration, balancing C{hosts} (C{(securenet port, metrics port)})."""

    def __init__(self, testcase: SynchronousTestCase, directory: Path, hosts: Sequence[tuple[int, int]]) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "haproxy.cfg"
        self.config.write_text(configure(hosts, self.port))
        check = subprocess.run([haproxy_command(), "-c", "-f", str(self.config)], capture_output=True, timeout=30)
        if check.returncode != 0:
            testcase.fail(f"haproxy refuses the example configuration: {check.stdout!r} {check.stderr!r}")
        self.log = directory / "haproxy.log"
        self._log = open(self.log, "wb")
        self.process = subprocess.Popen(
            [haproxy_command(), "-db", "-f", str(self.config)], stdout=self._log, stderr=subprocess.STDOUT, cwd=directory
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
