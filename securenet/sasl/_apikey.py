"""
The C{APIKEY} mechanism: one message, the key itself, turned into a
L{securenet.cred.PresentedAPIKey} for the portal; and the client side.
"""

from __future__ import annotations

import attrs
from zope.interface import implementer

from securenet.cred._apikeys import MAX_KEY_LENGTH, PresentedAPIKey
from securenet.interfaces import IClientMechanism, IMechanismFactory, IServerMechanism
from securenet.sasl._mechanism import ChannelBindings, MechanismError, SingleMessageMechanism


def _api_key_message(response: bytes) -> PresentedAPIKey:
    """The APIKEY message: the key itself, ASCII, not empty, not too long."""
    if not response or len(response) > MAX_KEY_LENGTH:
        raise MechanismError("APIKEY: the key is empty or too long")
    try:
        return PresentedAPIKey(response.decode("ascii"))
    except UnicodeDecodeError:
        raise MechanismError("APIKEY: the key is not ASCII") from None


@implementer(IMechanismFactory)
class APIKeyMechanismFactory:
    """APIKEY: a key is a complete credential, so no TOTP follows it."""

    name = "APIKEY"
    second_factor_allowed = False

    def __call__(self, bindings: ChannelBindings, peer: str) -> IServerMechanism:
        return SingleMessageMechanism(self.name, _api_key_message)


@implementer(IClientMechanism)
@attrs.frozen
class APIKeyClientMechanism:
    """The client side of APIKEY: sends the key as the initial response."""

    key: str = attrs.field(repr=False)
    name = "APIKEY"

    def initial(self) -> bytes | None:
        if not self.key or not self.key.isascii() or len(self.key) > MAX_KEY_LENGTH:
            raise MechanismError("APIKEY: the key must be non-empty ASCII")
        return self.key.encode("ascii")

    def respond(self, challenge: bytes) -> bytes:
        if challenge:
            raise MechanismError("APIKEY: unexpected server challenge")
        initial = self.initial()
        assert initial is not None
        return initial

    def verify_success(self, data: bytes | None) -> None:
        if data:
            raise MechanismError("APIKEY expects no data with success")
