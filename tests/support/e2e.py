"""
The pieces of the process-level tests: the development PKI made once per
run by the real CLI, server and client endpoint strings, free ports, sslyze,
and the base class that starts twistd.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Twistd, run, script

_PKI_DIRS: dict[str, Path] = {}


def dev_pki(base: Path) -> Path:
    """A directory with a CA, server and client certificates, made once per run by the CLI."""
    if "dir" in _PKI_DIRS:
        return _PKI_DIRS["dir"]
    certs = base / "certs"
    securenet = script("securenet")
    for args in (
        ["pki", "init", "--dir", str(certs)],
        ["pki", "issue", "server", "server", "--dir", str(certs), "--san", "DNS:localhost,IP:127.0.0.1"],
        ["pki", "issue", "client", "dev-client", "--dir", str(certs)],
    ):
        result = run([securenet, *args])
        assert result.returncode == 0, result.stderr
    _PKI_DIRS["dir"] = certs
    return certs


def server_listen(certs: Path, **extra: str) -> str:
    parts = {
        "interface": "127.0.0.1",
        "certKey": str(certs / "server.pem"),
        "privateKey": str(certs / "server.key"),
        "trustRoots": str(certs / "ca.pem"),
        "clientAuth": "required",
    }
    parts.update(extra)
    return "securenet:0:" + ":".join(f"{k}={v}" for k, v in parts.items() if v)


def client_endpoint(certs: Path, port: int, **extra: str) -> str:
    parts = {
        "host": "127.0.0.1",
        "port": str(port),
        "trustRoots": str(certs / "ca.pem"),
        "certificate": str(certs / "dev-client.pem"),
        "privateKey": str(certs / "dev-client.key"),
    }
    parts.update(extra)
    return "securenet:" + ":".join(f"{k}={v}" for k, v in parts.items() if v)


def pin_of(path: Path) -> str:
    result = run([script("securenet"), "pki", "pin", str(path)])
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


class E2EBase(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir(parents=True)
        self.certs = dev_pki(Path(self.mktemp()).resolve())

    def startServer(self, *args: str) -> Twistd:
        server = Twistd(self.base, args)
        self.addCleanup(server.stop)
        return server

    def connect(self, endpoint: str, data: bytes = b"", *extra: str) -> subprocess.CompletedProcess[bytes]:
        return run([script("securenet"), "connect", "--linger", "0.5", *extra, endpoint], input=data, timeout=60)


# sslyze lives in its own virtualenv (it pins an older cryptography);
# `make test` installs it and sets SECURENET_SSLYZE.  A test that needs a tool
# and cannot run it fails: it never skips.
def sslyze() -> str:
    path = os.environ.get("SECURENET_SSLYZE")
    if not path:
        raise AssertionError(
            "SECURENET_SSLYZE is not set (the path of the sslyze command): run the suite with `make test`, "
            "which installs sslyze in .venv-sslyze and sets it"
        )
    if not Path(path).exists():
        raise AssertionError(f"sslyze not found at SECURENET_SSLYZE={path!r}: run `make test`, which installs it there")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


METRICS_LISTENING = re.compile(r"securenet metrics listening on (https?)://127\.0\.0\.1:(\d+)/metrics")


def metrics_base(server: Twistd) -> str:
    """The base URL of a twistd's C{--metrics} listener, once it logged that it listens."""
    found = METRICS_LISTENING.search(server.waitForLog("securenet metrics listening on"))
    assert found is not None, server.logText()
    return f"{found.group(1)}://127.0.0.1:{found.group(2)}"


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """C{/metrics}, parsed by prometheus_client's own parser: (sample name, sorted labels) -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
