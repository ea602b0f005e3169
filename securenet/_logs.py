"""
securenet's log events, and the level below which they are not emitted.

securenet's audit events are C{twisted.logger} events.  Twisted filters no
level by default (under C{twistd} a debug event is formatted and written
like any other), so events that are useful but frequent -- an allowed
authorization decision on every RPC call, a successful authentication on
every HTTP request -- are emitted at debug and dropped here, before any
event is built, unless the level is lowered::

    securenet.logs.set_level("debug")      # twistd securenet --log-level debug

Warnings and errors (every refusal) are always emitted; C{set_level} can
raise the threshold up to C{warn}, never above.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, LogLevel

_PRIORITY = {LogLevel.debug: 0, LogLevel.info: 1, LogLevel.warn: 2, LogLevel.error: 3, LogLevel.critical: 4}
LEVELS = ("debug", "info", "warn")
DEFAULT_LEVEL = "info"

_threshold = _PRIORITY[LogLevel.levelWithName(DEFAULT_LEVEL)]


def set_level(name: str) -> None:
    """Emit securenet's events at C{name} (C{debug}, C{info} or C{warn}) and above."""
    global _threshold
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {name!r}")
    _threshold = _PRIORITY[LogLevel.levelWithName(name)]


def level() -> str:
    """The current level's name."""
    return next(name for name in LEVELS if _PRIORITY[LogLevel.levelWithName(name)] == _threshold)


def enabled(level: LogLevel) -> bool:
    """Whether an event at C{level} would be emitted (to skip building one that would not)."""
    return _PRIORITY.get(level, 4) >= _threshold


def literal(text: str) -> str:
    """
    C{text} as a C{log_format} that formats to exactly C{text}.

    For an event emitted often (one per connection), the line is rendered
    once with an f-string and the fields are still attached for structured
    observers, instead of every text observer parsing a template and looking
    up each field (Twisted's formatter is pure Python: ~10 us per event).
    Braces in values (an identity, a certificate subject) are escaped, so a
    value can never act as a template.
    """
    return text.replace("{", "{{").replace("}", "}}")


class SecurenetLogger(Logger):
    """A C{twisted.logger.Logger} that drops events below the level set by L{set_level}."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if _PRIORITY.get(level, 4) < _threshold:
            return
        super().emit(level, format, **kwargs)


__all__ = ["DEFAULT_LEVEL", "LEVELS", "SecurenetLogger", "enabled", "level", "literal", "set_level"]
