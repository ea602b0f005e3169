"""
Trust on first use: a C{known_hosts}-like file of C{host:port sha256/...} lines.

The first connection to a C{host:port} records the server's pin; later
connections must present the same key.  Writing is synchronous on purpose:
it happens once per new server, and the pin must be on disk before the first
application byte is trusted to that server.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from securenet.pki._pins import InvalidPin, parse_pin
from securenet.tls._errors import TLSConfigurationError


def _key(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@attrs.define
class TofuStore:
    """The pins recorded in one file; loaded once, appended to on first use."""

    path: Path
    _pins: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TofuStore:
        """Read C{path} (a missing file is an empty store); refuse a malformed line."""
        store = cls(Path(path))
        try:
            text = store.path.read_text("utf-8")
        except FileNotFoundError:
            return store
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
            raise TLSConfigurationError(f"{store.path}: cannot read the TOFU store ({e.__class__.__name__})") from None
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise TLSConfigurationError(f"{store.path}:{lineno}: expected 'HOST:PORT sha256/...'")
            try:
                parse_pin(parts[1])
            except InvalidPin as e:
                raise TLSConfigurationError(f"{store.path}:{lineno}: {e}") from None
            store._pins[parts[0]] = parts[1]
        return store

    def lookup(self, host: str, port: int) -> str | None:
        return self._pins.get(_key(host, port))

    def record(self, host: str, port: int, pin: str) -> None:
        """Remember C{pin} for C{host:port}, appending it to the file."""
        key = _key(host, port)
        self._pins[key] = pin
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"{key} {pin}\n")
            f.flush()
            os.fsync(f.fileno())
