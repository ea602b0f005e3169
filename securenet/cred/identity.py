"""
The identity an authenticated peer gets: the avatar of securenet's realm.

Applications receive an L{Identity}; how it was established (certificate,
and in later mechanisms password, token, ...) is recorded in
C{mechanism}, never assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.cred.checkers import ANONYMOUS
from twisted.cred.portal import IRealm
from zope.interface import Attribute, Interface, implementer

from securenet.pki.facts import CertificateFacts

ANONYMOUS_ID = "anonymous"


class IIdentity(Interface):
    """Who the peer is, and how they proved it."""

    avatar_id = Attribute("The identity's name (str).")
    mechanism = Attribute("How the peer authenticated, as a SASL mechanism name: EXTERNAL, ANONYMOUS, ...")
    peer = Attribute("The peer's address, as host:port.")
    certificate = Attribute("CertificateFacts of the peer's verified certificate, or None.")


@implementer(IIdentity)
@attrs.frozen
class Identity:
    avatar_id: str
    mechanism: str
    peer: str
    certificate: CertificateFacts | None = None
    attributes: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def anonymous(self) -> bool:
        return self.mechanism == "ANONYMOUS"


@attrs.frozen
class AuthenticationContext:
    """
    The C{mind} passed to the portal: facts of the connection that the realm
    needs to build the identity (checkers never see it).
    """

    mechanism: str
    peer: str
    certificate: CertificateFacts | None = None


def _avatar_name(avatar_id: object) -> str:
    if avatar_id is ANONYMOUS or avatar_id == ():
        return ANONYMOUS_ID
    if isinstance(avatar_id, bytes):
        return avatar_id.decode("utf-8")
    return str(avatar_id)


@implementer(IRealm)
class IdentityRealm:
    """Turns an avatar id and the connection's context into an L{Identity}."""

    def requestAvatar(
        self, avatarId: object, mind: object, *interfaces: Any
    ) -> tuple[Any, Identity, Callable[[], None]]:
        if IIdentity not in interfaces:
            raise NotImplementedError("IdentityRealm only provides IIdentity")
        if not isinstance(mind, AuthenticationContext):
            raise TypeError("IdentityRealm needs an AuthenticationContext as the mind")
        identity = Identity(
            avatar_id=_avatar_name(avatarId),
            mechanism=mind.mechanism,
            peer=mind.peer,
            certificate=mind.certificate,
        )
        return IIdentity, identity, lambda: None
