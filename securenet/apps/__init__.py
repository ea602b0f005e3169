"""
Built-in applications, selectable by name with C{twistd securenet --app NAME};
any other value of C{--app} is a dotted path to a factory or protocol.
"""

from __future__ import annotations

BUILTIN_APPS: dict[str, str] = {
    "echo": "securenet.apps.EchoFactory",
}

from securenet.apps._echo import Echo, EchoFactory  # noqa: E402 - after the table it serves

__all__ = ["BUILTIN_APPS", "Echo", "EchoFactory"]
