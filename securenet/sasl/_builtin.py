"""
Client sides of the simple mechanisms (EXTERNAL, ANONYMOUS, PLAIN); the
SCRAM, OAUTHBEARER and APIKEY clients live beside their servers.
"""

from __future__ import annotations

import attrs
from zope.interface import implementer

from securenet.interfaces import IClientMechanism
from securenet.sasl._mechanism import _NoChallenges


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
