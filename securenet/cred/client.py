"""
Client sides of the simple mechanisms (EXTERNAL, ANONYMOUS, PLAIN); the
SCRAM, OAUTHBEARER and APIKEY clients live beside their servers.
"""

from __future__ import annotations

import attrs
from zope.interface import implementer

from securenet.cred.sasl import IClientMechanism, MechanismError


class _NoChallenges:
    name = ""

    def respond(self, challenge: bytes) -> bytes:
        raise MechanismError(f"{self.name} expects no challenge, but the server sent one")

    def verify_success(self, data: bytes | None) -> None:
        if data:
            raise MechanismError(f"{self.name} expects no data with success")


@implementer(IClientMechanism)
@attrs.frozen
class ExternalClientMechanism(_NoChallenges):
    """EXTERNAL: the TLS client certificate is the credential; an optional authorization id."""

    authzid: str = ""
    name = "EXTERNAL"

    def initial(self) -> bytes | None:
        return self.authzid.encode("utf-8")


@implementer(IClientMechanism)
@attrs.frozen
class AnonymousClientMechanism(_NoChallenges):
    """ANONYMOUS (RFC 4505), with an optional trace string."""

    trace: str = ""
    name = "ANONYMOUS"

    def initial(self) -> bytes | None:
        return self.trace.encode("utf-8")


@implementer(IClientMechanism)
@attrs.frozen
class PlainClientMechanism(_NoChallenges):
    """PLAIN (RFC 4616): only ever sent inside TLS, to a verified server."""

    username: str
    password: str = attrs.field(repr=False)
    name = "PLAIN"

    def initial(self) -> bytes | None:
        if not self.username or not self.password:
            raise MechanismError("PLAIN needs a username and a password")
        return b"\0" + self.username.encode("utf-8") + b"\0" + self.password.encode("utf-8")
