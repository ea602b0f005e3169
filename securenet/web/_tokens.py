"""
Issuing tokens over HTTP: login, refresh with rotation and reuse
detection, logout::

    POST /auth/login    {"username": "alice", "password": "...", "totp": "123456"}
    POST /auth/refresh  {"refresh_token": "snrt_..."}
    POST /auth/logout   Authorization: Bearer <access token>   [{"refresh_token": "snrt_..."}]

Login and refresh answer (RFC 6749 section 5.1 names)::

    {"access_token": "<JWT>", "token_type": "Bearer", "expires_in": 900,
     "refresh_token": "snrt_...", "refresh_expires_in": 1209600}

The access token is the same kind of JWT C{securenet tokens issue} makes
and C{OAUTHBEARER} accepts (L{securenet.cred.TokenIssuer} with the
service's signing key), so it also opens a stream session.  It carries
C{sid} (its refresh family) and C{amr} (RFC 8176: C{["pwd"]}, or
C{["pwd", "otp"]} after a TOTP code).

Refresh tokens are single use (L{securenet.interfaces.IRefreshTokenStore}): presenting one
that was already exchanged revokes its whole family, access tokens
included, and is logged as an C{auth.token} event with C{action="reuse"}.
Logout revokes the access token's C{jti} (in the credential store, as
C{securenet tokens revoke} does) and its family.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from securenet import audit
from securenet._logs import SecurenetLogger
from securenet.cred._jwt import TokenIssuer, VerifiedToken, check_scopes, now
from securenet.interfaces import ICredentialStore, IRefreshTokenStore, IReloadable
from securenet.store._records import RefreshToken
from securenet.web._auth import Authentication, WebAuthenticator, client_peer
from securenet.web._errors import BadRequest, Unauthorized
from securenet.web._guard import JSONEndpoint, JSONRouter
from securenet.web._jsonbody import JSONLimits, read_json_object

log = SecurenetLogger(namespace="securenet.auth")

REFRESH_PREFIX = "snrt_"
_REFRESH = re.compile(r"snrt_([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})")
_TOTP = re.compile(r"[0-9]{6,8}")

#: Compared against when a refresh token id is unknown.
_DUMMY_HASH = hashlib.sha256(b"securenet: no refresh token has this id").digest()

DEFAULT_ACCESS_TTL = 900
DEFAULT_REFRESH_TTL = 14 * 24 * 3600
DEFAULT_SESSION_TTL = 30 * 24 * 3600

#: The request bodies of the token endpoints are small.
AUTH_LIMITS = JSONLimits(max_bytes=16 * 1024, max_depth=4)


@attrs.frozen
class TokenLifetimes:
    """
    @ivar access_ttl: seconds an access token is valid.
    @ivar refresh_ttl: seconds a refresh token is valid (each refresh
        issues a new one).
    @ivar session_ttl: seconds a family lives from its login, however
        often it is refreshed.
    """

    access_ttl: int = DEFAULT_ACCESS_TTL
    refresh_ttl: int = DEFAULT_REFRESH_TTL
    session_ttl: int = DEFAULT_SESSION_TTL

    def __attrs_post_init__(self) -> None:
        for name in ("access_ttl", "refresh_ttl", "session_ttl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of seconds, at least 1, not {value!r}")
        if self.session_ttl < self.refresh_ttl:
            raise ValueError("session_ttl must be at least refresh_ttl")


@attrs.frozen
class TokenPair:
    """What a login or refresh hands out."""

    access_token: str = attrs.field(repr=False)
    access_expires_in: int
    refresh_token: str = attrs.field(repr=False)
    refresh_expires_in: int
    jti: str
    family_id: str

    def response(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.access_expires_in,
            "refresh_token": self.refresh_token,
            "refresh_expires_in": self.refresh_expires_in,
        }


class RefreshRefused(Unauthorized):
    """A refresh token was refused: always the same answer; C{reason} for the audit log."""

    default_error = "invalid_grant"

    def __init__(self, reason: str) -> None:
        super().__init__("the refresh token is invalid, expired or revoked", reason=reason)


def parse_refresh_token(token: object) -> tuple[str, str] | None:
    """C{(token id, secret)} of a well-formed refresh token, else None."""
    if not isinstance(token, str):
        return None
    match = _REFRESH.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def _claims(token: str) -> dict[str, Any]:
    """The claims of a token this service just signed (no need to verify our own signature)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def _utc(when: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(when, datetime.UTC)


class TokenService:
    """
    Issues access and refresh tokens, rotates refresh tokens, revokes
    families (see the module docstring).

    @param issuer: signs access tokens (the service's token key).
    @param store: the credential store: users (a disabled user's family is
        refused) and revoked access-token ids.
    @param refreshes: where refresh-token families are kept.
    @ivar key_reload: what reloads the signing key (an C{IReloadable}:
        L{securenet.web.TokenKeyReload} when the service comes from
        C{--token-key}), or None.
    """

    key_reload: IReloadable | None = None

    def __init__(
        self,
        issuer: TokenIssuer,
        store: ICredentialStore,
        refreshes: IRefreshTokenStore,
        clock: IReactorTime,
        lifetimes: TokenLifetimes = TokenLifetimes(),
    ) -> None:
        self.issuer = issuer
        self.store = store
        self.refreshes = refreshes
        self.clock = clock
        self.lifetimes = lifetimes

    def _now(self) -> float:
        return now(self.clock)

    async def issue(self, user: str, *, scopes: Iterable[str] = (), amr: Iterable[str] = ("pwd",)) -> TokenPair:
        """Start a new family for C{user}: an access token and its first refresh token."""
        family = secrets.token_urlsafe(16)
        current = self._now()
        await self.refreshes.prune(current)
        return await self._pair(user, family, check_scopes(scopes), tuple(amr), current + self.lifetimes.session_ttl)

    async def _pair(
        self, user: str, family: str, scopes: tuple[str, ...], amr: tuple[str, ...], session_expires: float
    ) -> TokenPair:
        current = self._now()
        access = self.issuer.issue(
            user, ttl=self.lifetimes.access_ttl, scopes=scopes, extra_claims={"sid": family, "amr": list(amr)}
        )
        claims = _claims(access)
        token_id, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
        expires = min(current + self.lifetimes.refresh_ttl, session_expires)
        await self.refreshes.add(
            RefreshToken(
                token_id=token_id,
                family_id=family,
                user=user,
                secret_hash=_hash(secret),
                issued_at=current,
                expires_at=expires,
                session_expires_at=session_expires,
                access_jti=str(claims["jti"]),
                access_expires_at=float(claims["exp"]),
                scopes=scopes,
                amr=amr,
            )
        )
        return TokenPair(
            access_token=access,
            access_expires_in=self.lifetimes.access_ttl,
            refresh_token=f"{REFRESH_PREFIX}{token_id}.{secret}",
            refresh_expires_in=max(1, int(expires - current)),
            jti=str(claims["jti"]),
            family_id=family,
        )

    async def _record(self, presented: object) -> RefreshToken:
        """The record of a presented refresh token whose secret matches; else refuse."""
        parsed = parse_refresh_token(presented)
        if parsed is None:
            raise RefreshRefused("malformed refresh token")
        token_id, secret = parsed
        record = await self.refreshes.get(token_id)
        expected = record.secret_hash if record is not None else _DUMMY_HASH
        matches = hmac.compare_digest(expected, _hash(secret))
        if record is None:
            raise RefreshRefused("unknown refresh token")
        if not matches:
            raise RefreshRefused("wrong refresh token secret")
        return record

    async def refresh(self, presented: object, *, peer: str = "?") -> TokenPair:
        """
        Exchange a refresh token for a new pair.  A token used before
        revokes its family.

        @raise RefreshRefused: malformed, unknown, expired, used, revoked,
            or its user is gone or disabled.
        """
        record = await self._record(presented)
        current = self._now()
        if record.used_at is not None:
            await self._reuse(record, peer)
        if await self.refreshes.is_family_revoked(record.family_id):
            raise RefreshRefused("refresh family revoked")
        if current >= record.expires_at or current >= record.session_expires_at:
            raise RefreshRefused("refresh token expired")
        user = await self.store.get_user(record.user)
        if user is None or user.disabled:
            await self.revoke_family(record.family_id, reason="user unknown or disabled")
            raise RefreshRefused("user unknown or disabled")
        if not await self.refreshes.consume(record.token_id, current):
            # Consumed meanwhile by a parallel request: a reuse all the same.
            await self._reuse(record, peer)
        pair = await self._pair(record.user, record.family_id, record.scopes, record.amr, record.session_expires_at)
        audit.auth_token(
            "refreshed",
            f"refreshed tokens of {record.user} for {peer}",
            identity=record.user,
            family=record.family_id,
            jti=pair.jti,
            peer=peer,
        )
        return pair

    async def _reuse(self, record: RefreshToken, peer: str) -> None:
        audit.auth_token(
            "reuse",
            f"refresh token reused for {record.user} from {peer}: revoking its family",
            warn=True,
            identity=record.user,
            family=record.family_id,
            peer=peer,
        )
        await self.revoke_family(record.family_id, reason="refresh token reused")
        raise RefreshRefused("refresh token reused: family revoked")

    async def revoke_family(self, family_id: str, *, reason: str) -> None:
        """Revoke a family and every unexpired access token issued in it."""
        current = self._now()
        issued = await self.refreshes.revoke_family(family_id, current)
        leeway = self.issuer.settings.leeway
        for jti, expires in issued:
            if expires + leeway > current:
                await self.store.revoke_token(jti, _utc(expires + leeway))
        audit.auth_token("revoked", f"revoked refresh family {family_id} ({reason})", family=family_id, reason=reason)

    async def logout(self, access: VerifiedToken | None, refresh: object | None) -> None:
        """Revoke C{access} (its jti and its family) and the family of C{refresh}."""
        if access is not None:
            leeway = self.issuer.settings.leeway
            await self.store.revoke_token(access.jti, _utc(access.expires + leeway))
            family = access.claims.get("sid")
            if isinstance(family, str) and family:
                await self.revoke_family(family, reason="logout")
        if refresh is not None:
            record = await self._record(refresh)
            await self.revoke_family(record.family_id, reason="logout")


# -- the endpoints ---------------------------------------------------------------


def _string(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a non-empty string", error="invalid_request")
    return value


def _only(body: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise BadRequest(f"unknown member {shown}; expected {', '.join(allowed)}", error="invalid_request")


class TokenEndpoints:
    """
    The resources of C{/auth}: C{login}, C{refresh}, C{logout} (see the
    module docstring); L{resource} is a router with the three.
    """

    def __init__(self, authenticator: WebAuthenticator, tokens: TokenService) -> None:
        self.authenticator = authenticator
        self.tokens = tokens

    async def login(self, request: IRequest) -> dict[str, Any]:
        body = read_json_object(request, AUTH_LIMITS)
        _only(body, ("username", "password", "totp"))
        username = _string(body, "username")
        password = _string(body, "password")
        totp = _string(body, "totp", required=False)
        assert username is not None and password is not None
        if totp is not None and not _TOTP.fullmatch(totp):
            raise BadRequest("'totp' must be the 6 to 8 digits of the code", error="invalid_request")
        authentication = await self.authenticator.password_login(request, username, password, totp, scheme="login")
        identity = authentication.identity
        amr = ("pwd", "otp") if identity.second_factor == "TOTP" else ("pwd",)
        pair = await self.tokens.issue(identity.avatar_id, amr=amr)
        peer = client_peer(request)
        audit.auth_token(
            "issued",
            f"issued tokens to {identity.avatar_id} for {peer}",
            identity=identity.avatar_id,
            family=pair.family_id,
            jti=pair.jti,
            peer=peer,
        )
        return pair.response()

    async def refresh(self, request: IRequest) -> dict[str, Any]:
        body = read_json_object(request, AUTH_LIMITS)
        _only(body, ("refresh_token",))
        presented = _string(body, "refresh_token")
        try:
            pair = await self.tokens.refresh(presented, peer=client_peer(request))
        except RefreshRefused as e:
            peer = client_peer(request)
            audit.auth_token("refused", f"refresh refused for {peer}: {e.reason}", warn=True, reason=e.reason, peer=peer)
            raise
        return pair.response()

    async def logout(self, request: IRequest) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if request.getHeader(b"content-type") is not None or _has_body(request):
            body = read_json_object(request, AUTH_LIMITS)
            _only(body, ("refresh_token",))
        refresh = _string(body, "refresh_token", required=False)
        access: VerifiedToken | None = None
        if request.getHeader(b"authorization") is not None or request.getHeader(b"x-api-key") is not None:
            authentication: Authentication = await self.authenticator.authenticate(request)
            access = authentication.token
        if access is None and refresh is None:
            raise BadRequest(
                "nothing to log out: send the access token (Authorization: Bearer) and/or the refresh token",
                error="invalid_request",
            )
        await self.tokens.logout(access, refresh)
        return {"status": "logged out"}

    def resource(self) -> JSONRouter:
        router = JSONRouter()
        router.putChild(b"login", JSONEndpoint({"POST": self.login}, route="/auth/login"))
        router.putChild(b"refresh", JSONEndpoint({"POST": self.refresh}, route="/auth/refresh"))
        router.putChild(b"logout", JSONEndpoint({"POST": self.logout}, route="/auth/logout"))
        return router


def _has_body(request: IRequest) -> bool:
    content = getattr(request, "content", None)
    if content is None:
        return False
    content.seek(0, 2)
    size = content.tell()
    content.seek(0)
    return bool(size)


__all__ = [
    "DEFAULT_ACCESS_TTL",
    "DEFAULT_REFRESH_TTL",
    "DEFAULT_SESSION_TTL",
    "RefreshRefused",
    "TokenEndpoints",
    "TokenLifetimes",
    "TokenPair",
    "TokenService",
    "parse_refresh_token",
]
