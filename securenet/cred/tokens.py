"""
Bearer tokens: JWTs (RFC 7519) signed with a configured key, checked by
L{TokenChecker} and reachable over the wire as SASL C{OAUTHBEARER}
(RFC 7628).

What a token must be to be accepted, and why:

* Signed with one of the configured keys (L{TokenSettings.keys}), by that
  key's one algorithm.  The algorithm allow-list is exactly the configured
  keys' algorithms: C{none} can never be configured, HS256 only with a secret
  of at least 256 bits, and because each key is bound to one algorithm a
  token signed HS256 "with the public key as the secret" is refused before
  any signature is computed (the classic algorithm-confusion attack).
* C{kid}, if present, is only a name looked up in the configured key set;
  an unknown C{kid} is refused.  It never names a file or a URL, and the
  C{jku}/C{jwk}/C{x5u}/C{x5c} headers are ignored: keys come only from the
  configuration.
* Claims C{sub}, C{jti}, C{iat}, C{exp} and C{aud} are required (C{iss}
  too when an issuer is configured, which it is by default).  PyJWT would
  accept a token without C{exp}; we do not.
* Times are judged against the injected clock (an C{IReactorTime} or a
  callable), not C{time.time}: PyJWT's own time checks are switched off and
  L{TokenChecker} checks C{exp}, C{iat} and C{nbf} itself, with a bounded
  leeway (default 30 s, at most 300 s).
* A token whose C{jti} was revoked in the store is refused, and so is a
  token whose subject is a disabled user of the store.

A refusal is a L{TokenRefused}: a C{twisted.cred} C{UnauthorizedLogin}
whose message says nothing useful to the client and whose C{reason} says
what failed, for the audit log.

The claims of an accepted token (its scopes, for authorization) reach the
caller in one of two ways: L{TokenChecker.verify} returns a
L{VerifiedToken}; and when the credentials are a L{PresentedToken} (what the
OAUTHBEARER mechanism produces, and what a web layer should build),
L{TokenChecker.requestAvatarId} sets C{credentials.verified} before it
returns the subject as the avatar id.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union, cast

import attrs
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from securenet.cred.credentials import ITokenCredentials
from securenet.cred.sasl import (
    ChannelBindings,
    IClientMechanism,
    IMechanismFactory,
    IMechanismProvider,
    IServerMechanism,
    MechanismError,
    SingleMessageMechanism,
)
from securenet.cred.store import ICredentialStore, User
from securenet.errors import SecurenetError
from securenet.pki.errors import FileCorrupt, PKIError
from securenet.pki.files import check_key_permissions, load_private_key, read_file

#: Where "now" comes from: a reactor (C{seconds()}) or a callable returning POSIX time.
Clock = Union[IReactorTime, Callable[[], float]]

Algorithm = Literal["EdDSA", "ES256", "HS256"]

#: Every algorithm a key may be configured for.  Never C{none}; no RSA.
ALGORITHMS: tuple[Algorithm, ...] = ("EdDSA", "ES256", "HS256")

#: RFC 7518 section 3.2: an HS256 key must be at least as long as the hash.
MIN_HMAC_KEY_BYTES = 32

DEFAULT_AUDIENCE = "securenet"
DEFAULT_ISSUER = "securenet"
DEFAULT_LEEWAY = 30.0
MAX_LEEWAY = 300.0

#: Longer tokens are refused unparsed (a bounded amount of work per attempt).
MAX_TOKEN_LENGTH = 8192

#: The longest C{sub}, C{jti} or C{kid} accepted.
MAX_NAME_LENGTH = 256

#: The claims L{TokenIssuer} sets itself; C{extra_claims} may not override them.
RESERVED_CLAIMS = frozenset({"sub", "jti", "iat", "exp", "nbf", "aud", "iss", "scope"})

PublicKey = Union[ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey]
SigningKey = Union[ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey]


def now(clock: Clock) -> float:
    """The time according to C{clock} (shared by the token, API key and TOTP checkers)."""
    if IReactorTime.providedBy(clock):
        return float(cast(IReactorTime, clock).seconds())
    return float(cast(Callable[[], float], clock)())


# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """
    Validate scope names (OAuth's scope-token: printable ASCII, no space,
    quote or backslash) and return them as a tuple without duplicates.
    Shared by tokens and API keys, so a scope means the same in both.
    """
    result: list[str] = []
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
            raise ValueError(
                f"invalid scope {scope!r}: a scope is printable ASCII without spaces, quotes or backslashes"
            )
        if scope not in result:
            result.append(scope)
    return tuple(result)


# -- errors ------------------------------------------------------------------


class InvalidTokenSettings(SecurenetError, ValueError):
    """A token key or setting was refused at construction (the message says why)."""


class InvalidTokenKey(PKIError):
    """A token key file cannot be used as asked (wrong type, too short, ...)."""


class TokenRefused(UnauthorizedLogin):
    """
    A token was refused.  C{str()} is deliberately generic (it may reach the
    client); C{reason} says what failed, for the audit log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__("authentication failed")
        self.reason = reason

    def __repr__(self) -> str:
        return f"TokenRefused(reason={self.reason!r})"


# -- keys and settings ---------------------------------------------------------


def _algorithm_of(key: object) -> Algorithm:
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return "EdDSA"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidTokenSettings(f"ES256 needs a P-256 key, not {key.curve.name}")
        return "ES256"
    raise InvalidTokenSettings(
        f"unsupported token key type {type(key).__name__}; use Ed25519 (EdDSA), P-256 (ES256) or an HS256 secret"
    )


def _public_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_kid(kid: str | None) -> str | None:
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_NAME_LENGTH or not kid.isprintable()):
        raise InvalidTokenSettings(f"invalid kid {kid!r}: a kid is 1-{MAX_NAME_LENGTH} printable characters")
    return kid


@attrs.frozen
class TokenKey:
    """
    One key of the configured key set, bound to exactly one algorithm.

    @ivar algorithm: C{EdDSA} (Ed25519), C{ES256} (P-256) or C{HS256}.
    @ivar verification_key: the public key, or for HS256 the secret.
    @ivar signing_key: the private key (for HS256 the secret again), or None
        for a verify-only key.
    @ivar kid: the name tokens use to select this key, or None for the key
        used by tokens without a C{kid}.

    Use the constructors L{hmac}, L{public} and L{private}; inconsistent
    combinations are refused at construction.
    """

    algorithm: Algorithm
    verification_key: PublicKey | bytes = attrs.field(repr=False)
    signing_key: SigningKey | bytes | None = attrs.field(default=None, repr=False)
    kid: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_kid(self.kid)
        if self.algorithm not in ALGORITHMS:
            raise InvalidTokenSettings(
                f"token algorithm {self.algorithm!r} is not allowed; choose one of {', '.join(ALGORITHMS)}"
            )
        if self.algorithm == "HS256":
            secret = self.verification_key
            if not isinstance(secret, bytes):
                raise InvalidTokenSettings("an HS256 key is a secret (bytes), not a public key")
            if len(secret) < MIN_HMAC_KEY_BYTES:
                raise InvalidTokenSettings(
                    f"HS256 secret is {len(secret)} bytes; it must be at least {MIN_HMAC_KEY_BYTES} (256 bits)"
                )
            if secret.lstrip().startswith(b"-----BEGIN"):
                raise InvalidTokenSettings("HS256 secret is a PEM key; an HS256 secret must not be a public or private key")
            if self.signing_key is not None and self.signing_key != secret:
                raise InvalidTokenSettings("an HS256 key signs and verifies with the same secret")
            return
        public = self.verification_key
        if isinstance(public, bytes) or _algorithm_of(public) != self.algorithm:
            raise InvalidTokenSettings(f"the verification key is not an {self.algorithm} public key")
        if self.signing_key is not None:
            private = self.signing_key
            if isinstance(private, bytes) or _algorithm_of(private) != self.algorithm:
                raise InvalidTokenSettings(f"the signing key is not an {self.algorithm} private key")
            if _public_der(private.public_key()) != _public_der(public):
                raise InvalidTokenSettings("the signing key does not match the verification key")

    @classmethod
    def hmac(cls, secret: bytes, *, kid: str | None = None) -> TokenKey:
        """An HS256 key: C{secret} must be at least 32 bytes."""
        return cls("HS256", secret, secret, kid)

    @classmethod
    def public(cls, key: PublicKey, *, kid: str | None = None) -> TokenKey:
        """A verify-only key; the algorithm follows from the key type."""
        return cls(_algorithm_of(key), key, None, kid)

    @classmethod
    def private(cls, key: SigningKey, *, kid: str | None = None) -> TokenKey:
        """A key that can issue and verify; the algorithm follows from the key type."""
        return cls(_algorithm_of(key), key.public_key(), key, kid)


def _tuple_of_keys(keys: Iterable[TokenKey]) -> tuple[TokenKey, ...]:
    return tuple(keys)


@attrs.frozen
class TokenSettings:
    """
    What L{TokenChecker} accepts and L{TokenIssuer} issues.

    @ivar keys: the key set; kids unique, at most one key without a kid
        (used for tokens that carry no C{kid}).
    @ivar audience: the C{aud} a token must name (RFC 7519 4.1.3).
    @ivar issuer: the C{iss} a token must carry, or None to not check it.
    @ivar leeway: seconds of clock skew tolerated on C{exp}, C{iat} and
        C{nbf}; 0 to 300.
    """

    keys: tuple[TokenKey, ...] = attrs.field(converter=_tuple_of_keys)
    audience: str = DEFAULT_AUDIENCE
    issuer: str | None = DEFAULT_ISSUER
    leeway: float = DEFAULT_LEEWAY

    def __attrs_post_init__(self) -> None:
        if not self.keys:
            raise InvalidTokenSettings("token settings need at least one key")
        kids = [k.kid for k in self.keys]
        if kids.count(None) > 1:
            raise InvalidTokenSettings("at most one token key may have no kid")
        named = [k for k in kids if k is not None]
        if len(set(named)) != len(named):
            raise InvalidTokenSettings("token key ids (kid) must be unique")
        if not isinstance(self.audience, str) or not self.audience:
            raise InvalidTokenSettings("the token audience must be a non-empty string")
        if self.issuer is not None and (not isinstance(self.issuer, str) or not self.issuer):
            raise InvalidTokenSettings("the token issuer must be a non-empty string (or None to not check it)")
        if isinstance(self.leeway, bool) or not isinstance(self.leeway, (int, float)) or not (
            0 <= self.leeway <= MAX_LEEWAY
        ):
            raise InvalidTokenSettings(f"leeway must be between 0 and {MAX_LEEWAY:g} seconds, not {self.leeway!r}")

    @property
    def algorithms(self) -> tuple[Algorithm, ...]:
        """The allow-list: the algorithms of the configured keys."""
        return tuple(sorted({k.algorithm for k in self.keys}))

    def key_for(self, kid: str | None) -> TokenKey | None:
        """The key named C{kid} (None: the key without a kid), or None."""
        for key in self.keys:
            if key.kid == kid:
                return key
        return None


# -- issuing -----------------------------------------------------------------


class TokenIssuer:
    """
    Issues tokens that a L{TokenChecker} with the same settings accepts:
    used by C{securenet tokens issue} and by a login API.
    """

    def __init__(self, settings: TokenSettings, clock: Clock, *, kid: str | None = None) -> None:
        if kid is None:
            signing = [k for k in settings.keys if k.signing_key is not None]
            if len(signing) != 1:
                raise InvalidTokenSettings(
                    "token settings have no signing key" if not signing else "several signing keys: choose one by kid"
                )
            key = signing[0]
        else:
            found = settings.key_for(kid)
            if found is None or found.signing_key is None:
                raise InvalidTokenSettings(f"no signing key with kid {kid!r}")
            key = found
        self.settings = settings
        self.clock = clock
        self.key = key

    def issue(
        self,
        subject: str,
        *,
        ttl: int,
        scopes: Iterable[str] = (),
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """
        A signed token for C{subject}, valid for C{ttl} seconds from the
        clock's now, with a fresh random C{jti} (128 bits in hex, so it
        never looks like a command-line option to C{securenet tokens revoke}).
        """
        if not isinstance(subject, str) or not subject or len(subject) > MAX_NAME_LENGTH:
            raise ValueError(f"token subject must be 1-{MAX_NAME_LENGTH} characters")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise ValueError(f"token ttl must be a whole number of seconds, at least 1, not {ttl!r}")
        checked = check_scopes(scopes)
        extra = dict(extra_claims or {})
        clash = sorted(RESERVED_CLAIMS & set(extra))
        if clash:
            raise ValueError(f"extra_claims may not set {', '.join(clash)}")
        issued = int(now(self.clock))
        claims: dict[str, Any] = {
            **extra,
            "sub": subject,
            "jti": secrets.token_hex(16),
            "iat": issued,
            "exp": issued + ttl,
            "aud": self.settings.audience,
        }
        if self.settings.issuer is not None:
            claims["iss"] = self.settings.issuer
        if checked:
            claims["scope"] = " ".join(checked)
        headers = {"kid": self.key.kid} if self.key.kid is not None else None
        signing_key = cast(Any, self.key.signing_key)
        return jwt.encode(claims, signing_key, algorithm=self.key.algorithm, headers=headers)


# -- verifying -----------------------------------------------------------------


@attrs.frozen
class VerifiedToken:
    """
    The facts of an accepted token.

    @ivar subject: C{sub}, the avatar id.
    @ivar scopes: the C{scope} claim split on spaces.
    @ivar claims: every claim of the token, as signed.
    """

    subject: str
    jti: str
    scopes: tuple[str, ...]
    issued_at: float
    expires: float
    claims: Mapping[str, Any] = attrs.field(repr=False)


@implementer(ITokenCredentials)
@attrs.define
class PresentedToken:
    """
    A bearer token as presented, with the outcome of its check.

    @ivar authzid: the authorization id the client asked for (OAUTHBEARER's
        C{a=}); if given it must equal the token's subject.
    @ivar verified: set by L{TokenChecker.requestAvatarId} when the token is
        accepted: its subject, scopes and claims.
    """

    token: str = attrs.field(repr=False)
    authzid: str | None = None
    verified: VerifiedToken | None = attrs.field(default=None, init=False)


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    if name not in claims:
        if required:
            raise TokenRefused(f"missing {name} claim")
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenRefused(f"malformed {name} claim")
    try:
        number = float(value)
    except OverflowError:
        raise TokenRefused(f"malformed {name} claim") from None
    if not math.isfinite(number):
        raise TokenRefused(f"malformed {name} claim")
    return number


def _name(claims: Mapping[str, Any], name: str) -> str:
    if name not in claims:
        raise TokenRefused(f"missing {name} claim")
    value = claims[name]
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise TokenRefused(f"malformed {name} claim")
    return value


def _scopes(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("scope", "")
    if not isinstance(value, str):
        raise TokenRefused("malformed scope claim")
    try:
        return check_scopes(s for s in value.split(" ") if s)
    except ValueError:
        raise TokenRefused("malformed scope claim") from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@implementer(ICredentialsChecker, IMechanismProvider)
class TokenChecker:
    """
    Accepts bearer tokens (see the module docstring for the rules); the
    avatar id is the token's C{sub}.

    @param store: where revoked token ids and users are looked up; None
        to not check revocation or disabled users (a C{--auth jwt} without
        C{db=}).
    @param clock: the time source for C{exp}, C{iat} and C{nbf}.
    """

    credentialInterfaces = (ITokenCredentials,)

    def __init__(self, settings: TokenSettings, store: ICredentialStore | None, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._jws = jwt.PyJWS(algorithms=list(settings.algorithms), options={"enforce_minimum_key_length": True})

    def mechanisms(self) -> list[IMechanismFactory]:
        return [OAuthBearerMechanismFactory()]

    def requestAvatarId(self, credentials: ITokenCredentials) -> defer.Deferred[Any]:
        authzid = credentials.authzid if isinstance(credentials, PresentedToken) else None

        def accepted(verified: VerifiedToken) -> str:
            if isinstance(credentials, PresentedToken):
                credentials.verified = verified
            return verified.subject

        return self.verify(credentials.token, authzid=authzid).addCallback(accepted)

    def verify(self, token: str, *, authzid: str | None = None) -> defer.Deferred[VerifiedToken]:
        """
        Check C{token} completely: signature, claims, times, and (with a
        store) revocation and the subject's account.  Fails with
        L{TokenRefused}.
        """
        try:
            verified = self._verify_signed(token)
            if authzid is not None and authzid != verified.subject:
                raise TokenRefused("authorization id does not match the token subject")
        except TokenRefused:
            return defer.fail()
        if self.store is None:
            return defer.succeed(verified)
        store = self.store

        def revoked(is_revoked: bool) -> defer.Deferred[User | None]:
            if is_revoked:
                raise TokenRefused("token revoked")
            return store.get_user(verified.subject)

        def account(user: User | None) -> VerifiedToken:
            if user is not None and user.disabled:
                raise TokenRefused("user disabled")
            return verified

        return store.is_token_revoked(verified.jti).addCallback(revoked).addCallback(account)

    def _verify_signed(self, token: str) -> VerifiedToken:
        """Everything that needs no store: header, key, signature, claims, times."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise TokenRefused("malformed token")
        try:
            header = self._jws.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("malformed token") from None
        alg = header.get("alg")
        if alg not in self.settings.algorithms:
            raise TokenRefused(f"algorithm {_short(alg)} not allowed")
        if "crit" in header or "b64" in header:
            raise TokenRefused("unsupported critical header")
        kid = header.get("kid")
        key = self.settings.key_for(kid)
        if key is None:
            raise TokenRefused("token has no kid" if kid is None else f"unknown kid {_short(kid)}")
        if key.algorithm != alg:
            raise TokenRefused(f"algorithm {alg} does not match the {key.algorithm} key")
        try:
            decoded = self._jws.decode_complete(token, cast(Any, key.verification_key), algorithms=[key.algorithm])
        except jwt.InvalidSignatureError:
            raise TokenRefused("bad signature") from None
        except jwt.PyJWTError:
            raise TokenRefused("malformed token") from None
        try:
            claims = json.loads(decoded["payload"])
        except (ValueError, RecursionError):
            raise TokenRefused("malformed token") from None
        if not isinstance(claims, dict):
            raise TokenRefused("malformed token")
        return self._check_claims(claims)

    def _check_claims(self, claims: dict[str, Any]) -> VerifiedToken:
        settings = self.settings
        subject = _name(claims, "sub")
        jti = _name(claims, "jti")
        expires = _number(claims, "exp", required=True)
        issued_at = _number(claims, "iat", required=True)
        not_before = _number(claims, "nbf", required=False)
        assert expires is not None and issued_at is not None
        if "aud" not in claims:
            raise TokenRefused("missing aud claim")
        audience = claims["aud"]
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise TokenRefused("malformed aud claim")
        if settings.audience not in audiences:
            raise TokenRefused("wrong audience")
        if settings.issuer is not None:
            if "iss" not in claims:
                raise TokenRefused("missing iss claim")
            if claims["iss"] != settings.issuer:
                raise TokenRefused("wrong issuer")
        scopes = _scopes(claims)
        current = now(self.clock)
        if current >= expires + settings.leeway:
            raise TokenRefused("token expired")
        if issued_at > current + settings.leeway:
            raise TokenRefused("token issued in the future")
        if not_before is not None and not_before > current + settings.leeway:
            raise TokenRefused("token not yet valid")
        return VerifiedToken(subject, jti, scopes, issued_at, expires, claims)


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


# -- key files -----------------------------------------------------------------


def _choose(algorithm: str | None) -> Algorithm | None:
    if algorithm is None:
        return None
    if algorithm not in ALGORITHMS:
        raise InvalidTokenSettings(f"token algorithm {algorithm!r} is not allowed; choose one of {', '.join(ALGORITHMS)}")
    return cast(Algorithm, algorithm)


def _hmac_from_file(path: Path, data: bytes, kid: str | None) -> TokenKey:
    """
    An HS256 secret file: its bytes, surrounding whitespace stripped, are
    the secret.  Checked like a private key: mode 0600.
    """
    check_key_permissions(path)
    try:
        return TokenKey.hmac(data.strip(), kid=kid)
    except InvalidTokenSettings as e:
        raise InvalidTokenKey(path, str(e)) from None


def _kind(algorithm: Algorithm) -> str:
    return {"EdDSA": "an Ed25519 (EdDSA)", "ES256": "a P-256 (ES256)", "HS256": "an HS256"}[algorithm]


def load_verification_key(
    path: str | os.PathLike[str], algorithm: str | None = None, *, kid: str | None = None
) -> TokenKey:
    """
    The key a verifier needs (what C{--auth jwt:key=PATH} names): a PEM
    public key (the algorithm follows from it; C{algorithm}, if given, must
    agree), or with C{algorithm="HS256"} a secret file of mode 0600.  An
    HS256 secret is never guessed from a file that is not a PEM key: HS256
    must be asked for.
    """
    path = Path(path)
    alg = _choose(algorithm)
    data = read_file(path, "token key")
    if alg == "HS256":
        return _hmac_from_file(path, data, kid)
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        if b"PRIVATE KEY-----" in data:
            raise InvalidTokenKey(
                path, "is a private key; a verifier needs only the public key (the .pub file of 'securenet tokens keygen')"
            ) from None
        raise FileCorrupt(path, "not a PEM public key (for an HMAC secret file, say alg=HS256)") from None
    try:
        key = TokenKey.public(cast(PublicKey, public), kid=kid)
    except InvalidTokenSettings as e:
        raise InvalidTokenKey(path, str(e)) from None
    if alg is not None and key.algorithm != alg:
        raise InvalidTokenKey(path, f"holds {_kind(key.algorithm)} key, not {_kind(alg)} key")
    return key


def load_signing_key(
    path: str | os.PathLike[str], algorithm: str | None = None, *, kid: str | None = None
) -> TokenKey:
    """
    The key an issuer needs: a PEM private key (mode 0600, algorithm from
    its type) or an HS256 secret file (mode 0600).
    """
    path = Path(path)
    alg = _choose(algorithm)
    data = read_file(path, "token key")
    if b"-----BEGIN" not in data:
        if alg not in (None, "HS256"):
            raise FileCorrupt(path, f"not a PEM private key ({alg} needs one)")
        return _hmac_from_file(path, data, kid)
    if alg == "HS256":
        raise InvalidTokenKey(path, "is a PEM key, not an HS256 secret")
    if b"-----BEGIN PUBLIC KEY-----" in data:
        raise InvalidTokenKey(path, "is a public key; issuing tokens needs the private key")
    private = load_private_key(path)
    try:
        key = TokenKey.private(cast(SigningKey, private), kid=kid)
    except InvalidTokenSettings as e:
        raise InvalidTokenKey(path, str(e)) from None
    if alg is not None and key.algorithm != alg:
        raise InvalidTokenKey(path, f"holds {_kind(key.algorithm)} key, not {_kind(alg)} key")
    return key


def generate_secret() -> bytes:
    """A fresh HS256 secret as stored in a key file: 384 random bits, URL-safe text."""
    return secrets.token_urlsafe(48).encode("ascii")


def generate_signing_key(algorithm: str) -> SigningKey | bytes:
    """A fresh key for C{algorithm}: an Ed25519 or P-256 private key, or an HS256 secret."""
    alg = _choose(algorithm)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return generate_secret()


__all__ = [
    "ALGORITHMS",
    "InvalidTokenKey",
    "InvalidTokenSettings",
    "OAuthBearerClientMechanism",
    "OAuthBearerMechanismFactory",
    "PresentedToken",
    "TokenChecker",
    "TokenIssuer",
    "TokenKey",
    "TokenRefused",
    "TokenSettings",
    "VerifiedToken",
    "check_scopes",
    "generate_signing_key",
    "load_signing_key",
    "load_verification_key",
    "now",
    "parse_oauthbearer",
]
