"""
What a client sees when the exchange does not end in C{OK}.
"""

from __future__ import annotations

import attrs

from securenet._errors import SecurenetError


@attrs.define(auto_exc=True, str=False)
class AuthenticationFailed(SecurenetError):
    """
    The server refused us (C{code} is its C{NO} code, e.g. C{AUTH-FAILED}),
    or the exchange could not proceed on our side.
    """

    code: str
    text: str

    def __str__(self) -> str:
        return f"authentication failed: {self.code} {self.text}".rstrip()


class ServerNotAuthenticated(AuthenticationFailed):
    """The server's final proof (e.g. SCRAM's signature) was missing or wrong."""


class ProtocolViolation(AuthenticationFailed):
    """The server did not speak the securenet exchange."""
