"""
SASL C{PLAIN} (RFC 4616): C{[authzid] NUL authcid NUL passwd}, parsed into
C{UsernamePassword} for any C{IUsernamePassword} checker; and the client side.
"""

from __future__ import annotations

import attrs
from twisted.cred.credentials import UsernamePassword
from twisted.internet import defer
from zope.interface import implementer

from securenet.cred._names import canonical_user_name
from securenet.interfaces import IClientMechanism, IMechanismFactory, IServerMechanism
from securenet.sasl._mechanism import Challenge, ChannelBindings, Complete, MechanismError, Step, _NoChallenges

# -- PLAIN (RFC 4616) ----------------------------------------------------------

#: The longest PLAIN message accepted (RFC 4616 asks for at least 255 bytes per field).
MAX_PLAIN_MESSAGE = 4096


def parse_plain(message: bytes) -> UsernamePassword:
    """
    Parse C{[authzid] NUL authcid NUL passwd} (RFC 4616).

    @return: credentials whose C{username} and C{password} are the UTF-8
        bytes of authcid and passwd.
    @raise MechanismError: malformed, not UTF-8, an empty authcid or
        password, or an authzid naming someone else (acting as another user
        is not supported).  The message never contains the password.
    """
    if len(message) > MAX_PLAIN_MESSAGE:
        raise MechanismError(f"PLAIN message is longer than {MAX_PLAIN_MESSAGE} bytes")
    fields = message.split(b"\0")
    if len(fields) != 3:
        raise MechanismError(
            f"PLAIN message must be authzid NUL authcid NUL password; it has {len(fields) - 1} NUL separators, not 2"
        )
    raw_authzid, raw_authcid, raw_password = fields
    try:
        authzid, authcid = raw_authzid.decode("utf-8"), raw_authcid.decode("utf-8")
        raw_password.decode("utf-8")
    except UnicodeDecodeError:
        raise MechanismError("PLAIN message is not valid UTF-8") from None
    if not authcid:
        raise MechanismError("PLAIN message has an empty authentication identity")
    if not raw_password:
        raise MechanismError("PLAIN message has an empty password")
    if authzid and canonical_user_name(authzid) != canonical_user_name(authcid):
        raise MechanismError("PLAIN authorization identity differs from the authentication identity (not supported)")
    return UsernamePassword(raw_authcid, raw_password)


@implementer(IServerMechanism)
class PlainMechanism:
    """
    One run of C{PLAIN}: the credentials come in the initial response or,
    if there is none, in the response to an empty challenge.
    """

    def __init__(self) -> None:
        self._state = "start"

    def step(self, response: bytes | None) -> defer.Deferred[Step]:
        try:
            return defer.succeed(self._step(response))
        except MechanismError:
            self._state = "done"
            return defer.fail()

    def _step(self, response: bytes | None) -> Step:
        if self._state == "start":
            if response is None:
                self._state = "waiting"
                return Challenge(b"")
        elif self._state == "waiting":
            if response is None:
                raise MechanismError("PLAIN expected a response to its empty challenge")
        else:
            raise MechanismError("PLAIN exchange is already complete")
        self._state = "done"
        return Complete(parse_plain(response))


@implementer(IMechanismFactory)
@attrs.frozen
class PlainMechanismFactory:
    """C{PLAIN}: a user name and password, sent in the clear over TLS; TOTP may follow."""

    name: str = "PLAIN"
    second_factor_allowed: bool = True

    def __call__(self, bindings: ChannelBindings, peer: str) -> PlainMechanism:
        return PlainMechanism()


PLAIN = PlainMechanismFactory()


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
