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
from twisted.internet import defer
from zope.interface import implementer

from securenet.cred._passwords import LoginRefused
from securenet.interfaces import ICredentialStore, IIdentity
from securenet.pki._facts import CertificateFacts
from securenet.store._records import User

ANONYMOUS_ID = "anonymous"


@implementer(IIdentity)
@attrs.frozen
class Identity:
    avatar_id: str
    mechanism: str
    peer: str
    certificate: CertificateFacts | None = None
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    roles: tuple[str, ...] = ()
    second_factor: str | None = None
    #: Scopes the credential itself was limited to (an API key's or token's), or ().
    scopes: tuple[str, ...] = ()

    @property
    def anonymous(self) -> bool:
        return self.mechanism == "ANONYMOUS"

    @property
    def mfa(self) -> bool:
        """Whether two factors were passed (a password mechanism and TOTP)."""
        return self.second_factor is not None


@attrs.frozen
class AuthenticationContext:
    """
    The C{mind} passed to the portal: facts of the connection that the realm
    needs to build the identity (checkers never see it).
    """

    mechanism: str
    peer: str
    certificate: CertificateFacts | None = None
    second_factor: str | None = None


def _avatar_name(avatar_id: object) -> str:
    if avatar_id is ANONYMOUS or avatar_id == ():
        return ANONYMOUS_ID
    if isinstance(avatar_id, bytes):
        return avatar_id.decode("utf-8")
    return str(avatar_id)


@implementer(IRealm)
class IdentityRealm:
    """
    Turns an avatar id and the connection's context into an L{Identity}.

    With a C{store}, the identity carries the user's roles and attributes
    from it (a certificate or token subject with no user record gets none),
    and a disabled user is refused however they authenticated.
    """

    def __init__(self, store: ICredentialStore | None = None) -> None:
        self.store = store

    def requestAvatar(self, avatarId: object, mind: object, *interfaces: Any) -> Any:
        if IIdentity not in interfaces:
            raise NotImplementedError("IdentityRealm only provides IIdentity")
        if not isinstance(mind, AuthenticationContext):
            raise TypeError("IdentityRealm needs an AuthenticationContext as the mind")
        name = _avatar_name(avatarId)

        def build(user: User | None) -> tuple[Any, Identity, Callable[[], None]]:
            if user is not None and user.disabled:
                # Whatever proved the name (a certificate, a token), a disabled
                # user does not get in.
                raise LoginRefused(f"user {name!r} is disabled") from None
            identity = Identity(
                avatar_id=name,
                mechanism=mind.mechanism,
                peer=mind.peer,
                certificate=mind.certificate,
                attributes=dict(user.attributes) if user is not None else {},
                roles=tuple(user.roles) if user is not None else (),
                second_factor=mind.second_factor,
            )
            return IIdentity, identity, lambda: None

        if self.store is None or name == ANONYMOUS_ID:
            return defer.succeed(build(None))
        return self.store.get_user(name).addCallback(build)
