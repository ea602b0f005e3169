"""
Starting and stopping the benchmark's processes: every server, client and
load generator is a child of the runner, started with a deadline and killed
on exit, including when the runner fails.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

_children: list[subprocess.Popen[Any]] = []


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.pop("PYTHONWARNINGS", None)
    return e


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    kwargs.setdefault("env", env())
    kwargs.setdefault("cwd", str(ROOT))
    proc = subprocess.Popen(argv, **kwargs)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after C{timeout}; this process only, by its id."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for proc in list(_children):
        stop(proc, timeout=3.0)


atexit.register(stop_all)


def _on_signal(signum: int, frame: Any) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def read_line(proc: subprocess.Popen[Any], timeout: float) -> str | None:
    """One line of C{proc}'s stdout within C{timeout} seconds, or None."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, min(0.2, deadline - time.monotonic())))
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                return None
            buf += chunk
            if chunk == b"\n":
                return buf.decode("utf-8", "replace").strip()
        elif proc.poll() is not None:
            return None
    return None


class ServerProcess:
    """A bench server child: its port (and FURL), its pid, its stderr file."""

    def __init__(self, name: str, argv: list[str], workdir: Path, start_timeout: float = 60.0) -> None:
        self.name = name
        self.error: str | None = None
        self.port = 0
        self.info: dict[str, Any] = {}
        self.stderr_path = workdir / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = spawn(argv, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL)
        line = read_line(self.proc, start_timeout)
        try:
            self.info = json.loads(line) if line else {}
            self.port = int(self.info["port"])
        except (ValueError, KeyError):
            self.error = f"did not start: {self.tail() or line or 'no output'}"
            self.close()

    @property
    def pid(self) -> int:
        return int(self.info.get("pid", self.proc.pid))

    def tail(self, n: int = 3) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])[-300:]

    @property
    def alive(self) -> bool:
        return self.error is None and self.proc.poll() is None

    def close(self) -> None:
        stop(self.proc)
        self._stderr.close()


def which(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)
