"""
The root of securenet's exception hierarchy.

Each layer (pki, tls, cred, ...) defines its own small hierarchy under
L{SecurenetError}; every exception carries the facts a user needs as
attributes, so tests compare values and the CLI prints one clear line.
"""

from __future__ import annotations


class SecurenetError(Exception):
    """
    Base class of every error securenet raises on purpose.

    C{str()} of an instance is one line, fit for a log or a CLI message.
    """
