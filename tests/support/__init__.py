"""
Running the real thing from tests: C{twistd securenet} as a subprocess, the
C{securenet} console script, openssl and sslyze.  Only loopback addresses;
every wait is bounded.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent


def script(name: str) -> str:
    """A console script installed next to this Python (the project venv)."""
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise RuntimeError(f"{name} is not installed next to {sys.executable} nor on PATH: run `make test`")
        return found
    return str(path)


def child_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: the source tree first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def run(
    args: Sequence[str],
    *,
    input: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(args),
        input=input,
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        env=env if env is not None else child_env(),
    )


class Twistd:
    """
    C{twistd -n securenet ARGS} in C{cwd}, on a port the kernel picks
    (C{securenet:0:...}), stopped with SIGTERM by L{stop}.
    """

    def __init__(self, cwd: Path, args: Sequence[str], *, timeout: float = 30) -> None:
        self.cwd = cwd
        self.log = cwd / f"twistd-{os.getpid()}-{time.monotonic_ns()}.log"
        self.args = [script("twistd"), "-n", "--pidfile=", "-l", str(self.log), "securenet", *args]
        self.process = subprocess.Popen(self.args, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.ports = self._waitForPorts(timeout)

    def logText(self) -> str:
        try:
            return self.log.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _waitForPorts(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        expected = sum(1 for a in self.args if a == "--listen") or 1
        while time.monotonic() < deadline:
            ports = [int(p) for p in re.findall(r"\(TLS\)(?: \(PROXY\))? starting on (\d+)", self.logText())]
            if len(ports) >= expected:
                return ports
            if self.process.poll() is not None:
                out = self.process.stdout.read().decode("utf-8", "replace") if self.process.stdout else ""
                raise RuntimeError(f"twistd exited with {self.process.returncode}:\n{out}\n{self.logText()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"twistd did not start listening within {timeout} s:\n{self.logText()}")

    def waitForLog(self, text: str, timeout: float = 10) -> str:
        """The log once it contains C{text} (the server logs a moment after it closes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.logText()
            if text in log:
                return log
            time.sleep(0.05)
        return self.logText()

    @property
    def port(self) -> int:
        return self.ports[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def run_twistd_expecting_failure(cwd: Path, args: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """Run C{twistd -n securenet ARGS} expecting it to refuse to start."""
    return run([script("twistd"), "-n", "--pidfile=", "securenet", *args], cwd=cwd, timeout=timeout)


def converse(args: Sequence[str], data: bytes, expect: bytes, timeout: float = 20) -> tuple[bytes, int | None]:
    """
    Start C{args}, write C{data} to its stdin (kept open), read its stdout
    until C{expect} appears or it exits or C{timeout} passes; then stop it.
    For clients like C{openssl s_client} that close on end of input.
    """
    import selectors

    proc = subprocess.Popen(list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env())
    assert proc.stdin is not None and proc.stdout is not None
    out = b""
    try:
        proc.stdin.write(data)
        proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while expect not in out and time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    finally:
        code = proc.poll()
        if code is None:
            proc.kill()
        proc.wait(10)
        proc.stdin.close()
        proc.stdout.close()
    return out, code


@attrs.frozen
class CLIResult:
    code: int
    out: str
    err: str


def run_cli(*argv: str | Path) -> CLIResult:
    """Run C{securenet ARGV...} in-process (the source tree), capturing its output."""
    import io

    from securenet.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own errors
            code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdout, sys.stderr = saved
    return CLIResult(code, out.getvalue(), err.getvalue())


def nobody_ids() -> tuple[int, int]:
    """The uid and gid root drops to for tests of file modes (nobody's)."""
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


@contextmanager
def unprivileged() -> Iterator[None]:
    """
    Run the block without root's power to ignore file modes: as is for a
    user; for root, as nobody (effective ids only, restored after; no other
    thread may touch files meanwhile).  Twisted's plugins are looked up
    before, for nobody may not list the directories they are installed in
    (tox makes its environments mode 0700): C{--auth} still finds its
    checkers.
    """
    if os.geteuid() != 0:
        yield
        return
    from twisted.cred import strcred

    factories: dict[str, strcred.ICheckerFactory] = {f.authType: f for f in strcred.findCheckerFactories()}
    find = strcred.findCheckerFactory

    def found(authType: str) -> strcred.ICheckerFactory:
        if authType not in factories:
            raise strcred.InvalidAuthType(authType)
        return factories[authType]

    uid, gid = nobody_ids()
    egid = os.getegid()
    try:
        os.setegid(gid)
        try:
            os.seteuid(uid)
        except BaseException:
            os.setegid(egid)
            raise
    except PermissionError as e:
        raise AssertionError(f"root cannot drop its privileges here ({e}), so file modes cannot be tested") from None
    strcred.findCheckerFactory = found
    try:
        yield
    finally:
        strcred.findCheckerFactory = find
        os.seteuid(0)
        os.setegid(egid)
