"""
SASL C{OAUTHBEARER} (RFC 7628): the GS2 header and key/value message that
carries a bearer token, parsed into a L{securenet.cred.PresentedToken} for
the portal; and the client side.
"""

from __future__ import annotations

import json
import re

import attrs
from zope.interface import implementer

from securenet.cred._jwt import MAX_TOKEN_LENGTH, PresentedToken
from securenet.interfaces import IClientMechanism, IMechanismFactory, IServerMechanism
from securenet.sasl._mechanism import ChannelBindings, MechanismError, SingleMessageMechanism

# -- OAUTHBEARER (RFC 7628) ----------------------------------------------------

#: The longest OAUTHBEARER client message accepted.
MAX_MESSAGE_LENGTH = MAX_TOKEN_LENGTH + 1024

_KEY = re.compile(r"[A-Za-z]+")
_VALUE = re.compile(r"[\x21-\x7e \t\r\n]*")
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] ([A-Za-z0-9\-._~+/]+=*)")


def _decode_saslname(text: str) -> str:
    """RFC 5801 saslname: C{=2C} is a comma, C{=3D} an equals sign; any other C{=} is an error."""
    if not text:
        raise MechanismError("OAUTHBEARER: empty authorization id")
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "=":
            escape = text[i : i + 3]
            if escape == "=2C":
                out.append(",")
            elif escape == "=3D":
                out.append("=")
            else:
                raise MechanismError("OAUTHBEARER: bad escape in the authorization id")
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _encode_saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def parse_oauthbearer(message: bytes) -> PresentedToken:
    """
    Parse an OAUTHBEARER client response (RFC 7628 section 3.1)::

        n,a=user,^Ahost=server^Aport=143^Aauth=Bearer <token>^A^A

    Only the C{auth} pair is required; C{a=} is optional.  Raises
    L{MechanismError} for anything malformed, including a channel-binding
    request (C{p=}), which OAUTHBEARER does not support.
    """
    if len(message) > MAX_MESSAGE_LENGTH:
        raise MechanismError("OAUTHBEARER: message too long")
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise MechanismError("OAUTHBEARER: message is not UTF-8") from None
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise MechanismError("OAUTHBEARER: missing GS2 header")
    flag, authzid_field, rest = parts
    if flag.startswith("p="):
        raise MechanismError("OAUTHBEARER: channel binding is not supported")
    if flag not in ("n", "y"):
        raise MechanismError("OAUTHBEARER: bad GS2 channel-binding flag")
    authzid: str | None = None
    if authzid_field:
        if not authzid_field.startswith("a="):
            raise MechanismError("OAUTHBEARER: bad GS2 authorization id field")
        authzid = _decode_saslname(authzid_field[2:])
    if len(rest) < 2 or not rest.startswith("\x01") or not rest.endswith("\x01"):
        raise MechanismError("OAUTHBEARER: key/value pairs are not framed by ^A")
    inner = rest[1:-1]
    pairs: dict[str, str] = {}
    if inner:
        if not inner.endswith("\x01"):
            raise MechanismError("OAUTHBEARER: key/value pairs are not framed by ^A")
        for pair in inner[:-1].split("\x01"):
            key, eq, value = pair.partition("=")
            if not eq or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
                raise MechanismError("OAUTHBEARER: malformed key/value pair")
            if key in pairs:
                raise MechanismError(f"OAUTHBEARER: {key!r} given twice")
            pairs[key] = value
    if "auth" not in pairs:
        raise MechanismError("OAUTHBEARER: no auth=Bearer <token>")
    match = _BEARER.fullmatch(pairs["auth"])
    if match is None:
        raise MechanismError("OAUTHBEARER: auth is not 'Bearer <token>'")
    return PresentedToken(match.group(1), authzid=authzid)


@implementer(IMechanismFactory)
class OAuthBearerMechanismFactory:
    """OAUTHBEARER: a token is a complete credential, so no TOTP follows it."""

    name = "OAUTHBEARER"
    second_factor_allowed = False

    def __call__(self, bindings: ChannelBindings, peer: str) -> IServerMechanism:
        # A refused token ends the attempt with NO AUTH-FAILED rather than
        # RFC 7628's error challenge, which tells the client the same thing.
        return SingleMessageMechanism(self.name, parse_oauthbearer)


@implementer(IClientMechanism)
@attrs.frozen
class OAuthBearerClientMechanism:
    """
    The client side of OAUTHBEARER: sends C{token}, and C{user} as the
    authorization id if given (the server refuses it unless it is the
    token's subject).
    """

    token: str = attrs.field(repr=False)
    user: str | None = None
    name = "OAUTHBEARER"

    def initial(self) -> bytes | None:
        if not _BEARER.fullmatch(f"Bearer {self.token}"):
            raise MechanismError("OAUTHBEARER: the token has characters a bearer token cannot have")
        if self.user is not None and (not self.user or "\x01" in self.user):
            raise MechanismError("OAUTHBEARER: invalid user")
        authzid = f"a={_encode_saslname(self.user)}" if self.user is not None else ""
        return f"n,{authzid},\x01auth=Bearer {self.token}\x01\x01".encode()

    def respond(self, challenge: bytes) -> bytes:
        if challenge == b"":
            initial = self.initial()
            assert initial is not None
            return initial
        try:
            error = json.loads(challenge)
        except ValueError:
            error = None
        if isinstance(error, dict) and "status" in error:
            # RFC 7628 3.2.3: acknowledge the error; the server then fails the exchange.
            return b"\x01"
        raise MechanismError("OAUTHBEARER: unexpected server challenge")

    def verify_success(self, data: bytes | None) -> None:
        if data:
            raise MechanismError("OAUTHBEARER expects no data with success")
