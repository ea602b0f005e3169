"""
Bearer tokens: JWTs (RFC 7519) signed with a configured key, checked by
L{TokenChecker} and reachable over the wire as SASL C{OAUTHBEARER}
(RFC 7628).

What a token must be to be accepted, and why:

  - Signed with one of the configured keys (L{TokenSettings.keys}), by that
    key's one algorithm.  The algorithm allow-list is exactly the configured
    keys' algorithms: C{none} can never be configured, HS256 only with a secret
    of at least 256 bits, and because each key is bound to one algorithm a
    token signed HS256 "with the public key as the secret" is refused before
    any signature is computed (the classic algorithm-confusion attack).
  - C{kid}, if present, is only a name looked up in the configured key set;
    an unknown C{kid} is refused.  It never names a file or a URL, and the
    C{jku}/C{jwk}/C{x5u}/C{x5c} headers are ignored: keys come only from the
    configuration.
  - Claims C{sub}, C{jti}, C{iat}, C{exp} and C{aud} are required (C{iss}
    too when an issuer is configured, which it is by default).  PyJWT would
    accept a token without C{exp}; we do not.
  - Times are judged against the injected clock (an C{IReactorTime} or a
    callable), not C{time.time}: PyJWT's own time checks are switched off and
    L{TokenChecker} checks C{exp}, C{iat} and C{nbf} itself, with a bounded
    leeway (default 30 s, at most 300 s).
  - A token whose lifetime (C{exp - iat}) is longer than
    L{TokenSettings.max_lifetime} (default a day) is refused, however validly
    signed.
  - Keys may rotate (L{TokenSettings.rotated}: a reload of a key file,
    L{securenet.cred.TokenKeyFile}): the new key signs and verifies tokens
    without a C{kid}; a replaced key only verifies tokens that name it by
    C{kid}, and only until its overlap ends (read from the clock, as C{exp}
    is), verify-only all the while.
  - With a credential store, a token whose C{jti} was revoked is refused, and
    so is a token whose subject is a disabled user or no user at all
    (deleting a user revokes their tokens).  Without a store (tokens of an
    external issuer) neither is checked.

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
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union, cast

import attrs
import jwt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from securenet.interfaces import ICredentialStore, ITokenCredentials
from securenet.pki._tokenkeys import MAX_NAME_LENGTH, Algorithm, InvalidTokenSettings, TokenKey
from securenet.store._records import User

#: Where "now" comes from: a reactor (C{seconds()}) or a callable returning POSIX time.
Clock = Union[IReactorTime, Callable[[], float]]  # noqa: UP007 - zope.interface 6.0 has no | for interfaces

DEFAULT_AUDIENCE = "securenet"
DEFAULT_ISSUER = "securenet"
DEFAULT_LEEWAY = 30.0

#: The longest token lifetime (C{exp - iat}) accepted by default: a day.
DEFAULT_MAX_LIFETIME = 24 * 3600.0

#: The largest C{max_lifetime} that may be configured: a year.
MAX_MAX_LIFETIME = 366 * 24 * 3600.0
MAX_LEEWAY = 300.0

#: Longer tokens are refused unparsed (a bounded amount of work per attempt).
MAX_TOKEN_LENGTH = 8192


#: The claims L{TokenIssuer} sets itself; C{extra_claims} may not override them.
RESERVED_CLAIMS = frozenset({"sub", "jti", "iat", "exp", "nbf", "aud", "iss", "scope"})


def now(clock: Clock) -> float:
    """The time according to C{clock} (shared by the token, API key and TOTP checkers)."""
    if IReactorTime.providedBy(clock):
        return float(clock.seconds())
    return float(clock())


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
            raise ValueError(f"invalid scope {scope!r}: a scope is printable ASCII without spaces, quotes or backslashes")
        if scope not in result:
            result.append(scope)
    return tuple(result)


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


def _tuple_of_keys(keys: Iterable[TokenKey]) -> tuple[TokenKey, ...]:
    return tuple(keys)


def _retiring(value: Mapping[str, float]) -> Mapping[str, float]:
    return dict(value)


def _check_seconds(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise InvalidTokenSettings(f"{name} must be between {low:g} and {high:g} seconds, not {value!r}")
    return float(value)


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
    @ivar max_lifetime: the longest lifetime (C{exp - iat}, seconds) a
        token may have: a validly signed token meant to live longer is
        refused, and L{TokenIssuer} never issues one (default a day;
        long-lived credentials are API keys, which can be listed and
        revoked).
    @ivar default_kid: the kid of the key that verifies tokens without a
        C{kid} (every key then has a kid), or None: such tokens are
        verified by the key without a kid, if any.  Keys that rotate
        (L{rotated}) are named, and the current one is the default, so a
        token minted without a kid keeps verifying with it.
    @ivar retiring: kid -> POSIX time: keys that a rotation replaced and
        that still verify, until that time (with the leeway, as for
        C{exp}); verify-only.  L{key_for} no longer finds them after it:
        the clock decides, no timer runs.
    """

    keys: tuple[TokenKey, ...] = attrs.field(converter=_tuple_of_keys)
    audience: str = DEFAULT_AUDIENCE
    issuer: str | None = DEFAULT_ISSUER
    leeway: float = DEFAULT_LEEWAY
    max_lifetime: float = DEFAULT_MAX_LIFETIME
    default_kid: str | None = attrs.field(default=None, kw_only=True)
    retiring: Mapping[str, float] = attrs.field(factory=dict, converter=_retiring, kw_only=True, hash=False)

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
        if isinstance(self.leeway, bool) or not isinstance(self.leeway, (int, float)) or not (0 <= self.leeway <= MAX_LEEWAY):
            raise InvalidTokenSettings(f"leeway must be between 0 and {MAX_LEEWAY:g} seconds, not {self.leeway!r}")
        lifetime = self.max_lifetime
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or not (1 <= lifetime <= MAX_MAX_LIFETIME):
            raise InvalidTokenSettings(
                f"max_lifetime must be between 1 and {MAX_MAX_LIFETIME:g} seconds, not {self.max_lifetime!r}"
            )
        by_kid = {k.kid: k for k in self.keys}
        if self.default_kid is not None:
            if self.default_kid not in by_kid:
                raise InvalidTokenSettings(f"the default kid {self.default_kid!r} names no key")
            if None in by_kid:
                raise InvalidTokenSettings("with a default kid every token key needs a kid")
            if self.default_kid in self.retiring:
                raise InvalidTokenSettings("the default key cannot be retiring")
        for kid, until in self.retiring.items():
            key = by_kid.get(kid)
            if key is None:
                raise InvalidTokenSettings(f"retiring kid {kid!r} names no key")
            if key.signing_key is not None:
                raise InvalidTokenSettings(f"retiring key {kid!r} must be verify-only")
            if isinstance(until, bool) or not isinstance(until, (int, float)) or not math.isfinite(until):
                raise InvalidTokenSettings(f"retiring key {kid!r}: not a time: {until!r}")

    @property
    def algorithms(self) -> tuple[Algorithm, ...]:
        """The allow-list: the algorithms of the configured keys."""
        return tuple(sorted({k.algorithm for k in self.keys}))

    def key_for(self, kid: str | None, *, at: float | None = None) -> TokenKey | None:
        """
        The key named C{kid} (None: the L{default_kid}'s, else the key
        without a kid), or None; with C{at} (now, POSIX seconds), not a
        retiring key whose time has passed.
        """
        if kid is None and self.default_kid is not None:
            kid = self.default_kid
        for key in self.keys:
            if key.kid == kid:
                until = self.retiring.get(kid) if kid is not None else None
                if at is not None and until is not None and at >= until + self.leeway:
                    return None
                return key
        return None

    def rotated(self, key: TokenKey, *, at: float, overlap: float) -> TokenSettings:
        """
        These settings once C{key} (which needs a kid) is the current key:
        it alone signs, and it verifies tokens without a kid.  The key it
        replaces keeps verifying the tokens that name it for C{overlap}
        seconds from C{at} (0: it is dropped at once, e.g. when it leaked);
        keys retiring from earlier rotations keep their own time, and
        those whose time has passed are dropped.  The same key again (an
        unchanged file) changes nothing but that.

        @raise InvalidTokenSettings: C{key} has no kid, C{overlap} is out
            of range, or these settings have no default kid (only named keys
            rotate).
        """
        if key.kid is None:
            raise InvalidTokenSettings("a key that replaces another needs a kid")
        if self.default_kid is None:
            raise InvalidTokenSettings("only settings with a default kid rotate their keys")
        overlap = _check_seconds(overlap, "the key overlap", 0, MAX_MAX_LIFETIME)
        keys = [key]
        retiring: dict[str, float] = {}
        for old in self.keys:
            if old.kid is None or old.kid == key.kid:
                continue
            if old.kid == self.default_kid:
                if overlap == 0:
                    continue
                until = at + overlap
            elif old.kid in self.retiring:
                until = self.retiring[old.kid]
            else:
                keys.append(old)  # a key configured besides the rotating ones stays as it is
                continue
            if at >= until + self.leeway:
                continue
            keys.append(attrs.evolve(old, signing_key=None))
            retiring[old.kid] = until
        return attrs.evolve(self, keys=keys, default_kid=key.kid, retiring=retiring)


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
        if ttl > self.settings.max_lifetime:
            raise ValueError(f"token ttl {ttl} s is longer than the maximum lifetime {self.settings.max_lifetime:g} s")
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


@implementer(ICredentialsChecker)
class TokenChecker:
    """
    Accepts bearer tokens (see the module docstring for the rules); the
    avatar id is the token's C{sub}.

    @param store: where revoked token ids and users are looked up: a
        token whose jti was revoked, whose subject is disabled or has no
        record is refused.  None to check neither (a C{--auth jwt} without
        C{db=}, for tokens of an external issuer whose subjects are not
        securenet users).
    @param clock: the time source for C{exp}, C{iat} and C{nbf}.
    """

    credentialInterfaces = (ITokenCredentials,)

    def __init__(self, settings: TokenSettings, store: ICredentialStore | None, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings

    @property
    def settings(self) -> TokenSettings:
        """What this checker accepts; assigning new settings (a key rotation) applies to the next token checked."""
        return self._settings

    @settings.setter
    def settings(self, settings: TokenSettings) -> None:
        jws = jwt.PyJWS(algorithms=list(settings.algorithms), options={"enforce_minimum_key_length": True})
        self._settings, self._jws = settings, jws

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
            # With a credential database the token's subject must be one of
            # its users: deleting a user revokes their tokens.  (Tokens from
            # an external issuer are verified without a database.)
            if user is None:
                raise TokenRefused(f"no user {verified.subject!r} in the credential database")
            if user.disabled:
                raise TokenRefused("user disabled")
            return verified

        return store.is_token_revoked(verified.jti).addCallback(revoked).addCallback(account)

    def _verify_signed(self, token: str) -> VerifiedToken:
        """Everything that needs no store: header, key, signature, claims, times."""
        # One token is checked under one key set, even if a rotation assigns new settings meanwhile.
        settings, jws = self._settings, self._jws
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise TokenRefused("malformed token")
        try:
            header = jws.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("malformed token") from None
        alg = header.get("alg")
        if alg not in settings.algorithms:
            raise TokenRefused(f"algorithm {_short(alg)} not allowed")
        if "crit" in header or "b64" in header:
            raise TokenRefused("unsupported critical header")
        kid = header.get("kid")
        key = settings.key_for(kid, at=now(self.clock))
        if key is None:
            raise TokenRefused("token has no kid" if kid is None else f"unknown kid {_short(kid)}")
        if key.algorithm != alg:
            raise TokenRefused(f"algorithm {alg} does not match the {key.algorithm} key")
        try:
            decoded = jws.decode_complete(token, cast(Any, key.verification_key), algorithms=[key.algorithm])
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
        return self._check_claims(claims, settings)

    def _check_claims(self, claims: dict[str, Any], settings: TokenSettings) -> VerifiedToken:
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
        if expires - issued_at > settings.max_lifetime:
            raise TokenRefused(
                f"token lifetime {int(expires - issued_at)} s is longer than the maximum {int(settings.max_lifetime)} s"
            )
        current = now(self.clock)
        if current >= expires + settings.leeway:
            raise TokenRefused("token expired")
        if issued_at > current + settings.leeway:
            raise TokenRefused("token issued in the future")
        if not_before is not None and not_before > current + settings.leeway:
            raise TokenRefused("token not yet valid")
        return VerifiedToken(subject, jti, scopes, issued_at, expires, claims)
