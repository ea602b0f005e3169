"""
Authenticating HTTP requests through the same C{twisted.cred} portal, with
the same checkers, realm, throttle and audit events as securenet's stream
sessions.

A request authenticates with the first of these that it carries:

 1. C{Authorization: Bearer <JWT>} -- a token (as SASL C{OAUTHBEARER}),
    checked by the portal's L{securenet.cred.TokenChecker};
 2. C{Authorization: Basic ...} -- a user name and password (as SASL
    C{PLAIN}); only over TLS, throttled per account and per address, and
    refused for accounts with a second factor (Basic cannot carry it: such
    users log in with L{password_login} and use tokens);
 3. C{Authorization: ApiKey sn_...} or C{X-API-Key: sn_...} -- an API key
    (as SASL C{APIKEY});
 4. the verified TLS client certificate of the connection (as SASL
    C{EXTERNAL}), when the portal has a certificate checker;
 5. nothing: the anonymous identity if the portal has an anonymous
    checker, else C{401}.

Credentials that are present but refused are a C{401}, never a fall-through
to the next kind.  Every refusal gets the same answer whatever the cause
(unknown user, wrong password, disabled account, bad signature...), with a
C{WWW-Authenticate} challenge; the cause goes to the audit log, as an
C{auth.decision} event like a stream session's.

The result is an L{Authentication}: the L{Identity} (what
L{securenet.authz} policies decide on; its C{mechanism} is the SASL name, so
one policy serves streams and HTTP) and how the request proved it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable
from typing import Any, TypeVar

import attrs
from twisted.cred.credentials import Anonymous, IAnonymous, IUsernamePassword, UsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from securenet import audit
from securenet._logs import SecurenetLogger
from securenet.cred._apikeys import MAX_KEY_LENGTH, PresentedAPIKey, VerifiedAPIKey
from securenet.cred._credentials import CertificateCredentials
from securenet.cred._identity import AuthenticationContext, Identity
from securenet.cred._jwt import MAX_TOKEN_LENGTH, PresentedToken, VerifiedToken
from securenet.cred._login import Attempt, LoginFailure, LoginFlow
from securenet.cred._names import canonical_user_name
from securenet.cred._throttle import Throttle
from securenet.interfaces import IAPIKeyCredentials, ICertificateCredentials, ITokenCredentials
from securenet.pki._facts import CertificateFacts
from securenet.tls._facts import HandshakeFacts
from securenet.tls._guard import describe_address
from securenet.web._errors import ServiceUnavailable, TooManyRequests, Unauthorized, database_unavailable
from securenet.web._responses import is_secure

T = TypeVar("T")

log = SecurenetLogger(namespace="securenet.auth")

#: How a request authenticated (its HTTP scheme) -> the SASL mechanism name
#: its identity carries.
MECHANISMS: dict[str, str] = {
    "Bearer": "OAUTHBEARER",
    "Basic": "PLAIN",
    "ApiKey": "APIKEY",
    "certificate": "EXTERNAL",
    "anonymous": "ANONYMOUS",
    "login": "PLAIN",
}

#: The longest user name or password accepted from an HTTP request.
MAX_USERNAME = 256
MAX_PASSWORD = 4096

_TOKEN68 = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_REALM = re.compile(r'[^"\\\x00-\x1f\x7f]+')


@attrs.frozen
class Authentication:
    """
    How a request authenticated.

    @ivar identity: who: the realm's L{Identity}, with the credential's
        scopes (a token's or an API key's).
    @ivar scheme: C{Bearer}, C{Basic}, C{ApiKey}, C{certificate},
        C{anonymous}, or C{login} (a password login that issued tokens).
    @ivar token: the accepted bearer token's facts (C{jti}, claims), for
        C{Bearer}.
    @ivar api_key: the accepted API key's facts, for C{ApiKey}.
    """

    identity: Identity
    scheme: str
    token: VerifiedToken | None = None
    api_key: VerifiedAPIKey | None = None

    @property
    def mechanism(self) -> str:
        return self.identity.mechanism


_ATTRIBUTE = "securenet_authentication"


def request_authentication(request: IRequest) -> Authentication | None:
    """The request's L{Authentication}, once a guard authenticated it; else None."""
    found = getattr(request, _ATTRIBUTE, None)
    return found if isinstance(found, Authentication) else None


def request_identity(request: IRequest) -> Identity:
    """
    The authenticated identity of C{request} (set by a L{WebAuthenticator}
    behind a guard).

    @raise Unauthorized: the request was not authenticated: a handler
        reached without a guard fails closed.
    """
    found = request_authentication(request)
    if found is None:
        raise Unauthorized(
            "authentication required", error="authentication_required", reason="no guard authenticated this request"
        )
    return found.identity


def tls_facts(request: IRequest) -> HandshakeFacts | None:
    """
    The TLS handshake facts of the request's connection, when it came
    through a securenet endpoint (whose TLS policy verified any client
    certificate); None otherwise.
    """
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    facts = getattr(transport, "handshake", None)
    return facts if isinstance(facts, HandshakeFacts) else None


def client_host(request: IRequest) -> str:
    """The client's IP address (the throttle's C{addr:} key)."""
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


def client_peer(request: IRequest) -> str:
    """The client as C{host:port} (C{[v6]:port}), as identities and events name peers."""
    return describe_address(request.getClientAddress())


def _text(value: bytes, limit: int = 200) -> str:
    return value.decode("utf-8", "replace")[:limit]


def _unavailable(failure: LoginFailure) -> ServiceUnavailable:
    """
    The answer while the audit trail cannot be written (securenet.audit.watch_sink),
    or the credential database cannot be reached.
    """
    if failure.cause == "db":
        return database_unavailable()
    return ServiceUnavailable(
        "the service cannot record authentications now; try again later",
        error="audit_unavailable",
        headers=[(b"Retry-After", b"30")],
    )


class WebAuthenticator:
    """
    Authenticates requests through C{portal} (see the module docstring).

    @param portal: the service's portal: its realm must give L{IIdentity}
        (an L{securenet.cred.IdentityRealm}).
    @param clock: the reactor (for the throttle).
    @param throttle: counts password failures per account and per address
        (Basic and password logins); None for no throttling.
    @param realm: the C{realm} of C{WWW-Authenticate} challenges.
    """

    def __init__(
        self, portal: Portal, clock: IReactorTime, *, throttle: Throttle | None = None, realm: str = "securenet"
    ) -> None:
        if not _REALM.fullmatch(realm):
            raise ValueError(f"invalid realm {realm!r}: no quotes, backslashes or control characters")
        self.portal = portal
        self.clock = clock
        self.throttle = throttle
        self.flow = LoginFlow(portal, throttle)
        self.realm = realm

    # -- challenges ---------------------------------------------------------------

    def challenges(self, request: IRequest, *, token_error: bool = False) -> list[tuple[bytes, bytes]]:
        """
        The C{WWW-Authenticate} headers of a 401: one per kind of credential
        the portal accepts (Basic only over TLS).
        """
        realm = self.realm.encode("utf-8")
        checkers = self.portal.checkers
        values: list[bytes] = []
        if ITokenCredentials in checkers or not checkers:
            bearer = b'Bearer realm="' + realm + b'"'
            if token_error:
                bearer += b', error="invalid_token"'
            values.append(bearer)
        if IUsernamePassword in checkers and is_secure(request):
            values.append(b'Basic realm="' + realm + b'", charset="UTF-8"')
        if IAPIKeyCredentials in checkers:
            values.append(b'ApiKey realm="' + realm + b'"')
        if not values:
            values.append(b'Bearer realm="' + realm + b'"')
        return [(b"WWW-Authenticate", v) for v in values]

    def unauthorized(
        self, request: IRequest, message: str, *, error: str, reason: str | None = None, token_error: bool = False
    ) -> Unauthorized:
        """A 401 for C{request}, with its challenges."""
        return Unauthorized(message, error=error, reason=reason, headers=self.challenges(request, token_error=token_error))

    def _refused(self, request: IRequest, scheme: str) -> Unauthorized:
        if scheme == "Bearer":
            return self.unauthorized(request, "the access token is invalid or expired", error="invalid_token", token_error=True)
        return self.unauthorized(request, "authentication failed", error="invalid_credentials")

    # -- the entry point ------------------------------------------------------------

    def authenticate(self, request: IRequest) -> defer.Deferred[Authentication]:
        """
        Authenticate C{request} (once: a second call gives the same result).
        Fires with the L{Authentication}, which is also kept on the request
        (L{request_authentication}); fails with a L{WebError} (401, 429).
        """
        known = request_authentication(request)
        if known is not None:
            return defer.succeed(known)

        def keep(authentication: Authentication) -> Authentication:
            setattr(request, _ATTRIBUTE, authentication)
            return authentication

        return defer.Deferred.fromCoroutine(self._authenticate(request)).addCallback(keep)

    async def _authenticate(self, request: IRequest) -> Authentication:
        headers = request.requestHeaders
        authorization = headers.getRawHeaders(b"authorization") or []
        if len(authorization) > 1:
            self._audit(request, "denied", None, reason="several Authorization headers", refusal="malformed")
            raise self.unauthorized(request, "send one Authorization header", error="invalid_request")
        if authorization:
            scheme, _, param = authorization[0].strip().partition(b" ")
            param = param.strip(b" ")
            kind = scheme.lower()
            if kind == b"bearer":
                return await self._bearer(request, param)
            if kind == b"basic":
                return await self._basic(request, param)
            if kind == b"apikey":
                return await self._api_key(request, param)
            self._audit(
                request, "denied", None, reason=f"unsupported Authorization scheme {_text(scheme, 40)!r}", refusal="unsupported"
            )
            raise self.unauthorized(request, "unsupported authorization scheme", error="unsupported_scheme")
        keys = headers.getRawHeaders(b"x-api-key") or []
        if len(keys) > 1:
            self._audit(request, "denied", "APIKEY", reason="several X-API-Key headers", refusal="malformed")
            raise self.unauthorized(request, "send one X-API-Key header", error="invalid_request")
        if keys:
            return await self._api_key(request, keys[0].strip())
        facts = tls_facts(request)
        if facts is not None and facts.peer_chain and ICertificateCredentials in self.portal.checkers:
            return await self._certificate(request, facts)
        if IAnonymous in self.portal.checkers:
            identity = await self._login(request, Anonymous(), "anonymous")
            return Authentication(identity, "anonymous")
        self._audit(request, "denied", None, reason="no credentials", level="debug", refusal="missing")
        raise self.unauthorized(request, "authentication required", error="authentication_required")

    # -- each kind of credential --------------------------------------------------------

    async def _bearer(self, request: IRequest, param: bytes) -> Authentication:
        if not param or len(param) > MAX_TOKEN_LENGTH or not _TOKEN68.fullmatch(param):
            self._audit(request, "denied", "OAUTHBEARER", reason="malformed bearer token", refusal="malformed")
            raise self._refused(request, "Bearer")
        credentials = PresentedToken(param.decode("ascii"))
        identity = await self._login(request, credentials, "Bearer")
        verified = credentials.verified
        self._audit(request, "ok", identity.mechanism, identity.avatar_id, level="debug")
        return Authentication(identity, "Bearer", token=verified)

    async def _basic(self, request: IRequest, param: bytes) -> Authentication:
        if not is_secure(request):
            # The password crossed the network in the clear: never check it,
            # so the answer says nothing about it.
            self._audit(request, "denied", "PLAIN", reason="Basic authentication over plain HTTP refused", refusal="refused")
            raise self.unauthorized(request, "Basic authentication is only accepted over TLS", error="insecure_transport")
        try:
            decoded = base64.b64decode(param, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            self._audit(request, "denied", "PLAIN", reason="malformed Basic credentials", refusal="malformed")
            raise self.unauthorized(request, "malformed Basic credentials", error="invalid_request") from None
        username, colon, password = decoded.partition(":")
        if not colon or not username or not password:
            self._audit(
                request, "denied", "PLAIN", reason="Basic credentials without a user name or password", refusal="malformed"
            )
            raise self.unauthorized(request, "malformed Basic credentials", error="invalid_request")
        return await self.password_login(request, username, password, None, scheme="Basic")

    async def _api_key(self, request: IRequest, param: bytes) -> Authentication:
        try:
            key = param.decode("ascii")
        except UnicodeDecodeError:
            key = ""
        if not key or len(key) > MAX_KEY_LENGTH:
            self._audit(request, "denied", "APIKEY", reason="malformed API key", refusal="malformed")
            raise self._refused(request, "ApiKey")
        credentials = PresentedAPIKey(key)
        identity = await self._login(request, credentials, "ApiKey")
        verified = credentials.verified
        self._audit(request, "ok", identity.mechanism, identity.avatar_id, level="debug")
        return Authentication(identity, "ApiKey", api_key=verified)

    async def _certificate(self, request: IRequest, facts: HandshakeFacts) -> Authentication:
        credentials = CertificateCredentials(facts.peer_chain, verified=True)
        identity = await self._login(request, credentials, "certificate", certificate=facts.peer_certificate)
        self._audit(request, "ok", identity.mechanism, identity.avatar_id, level="debug")
        return Authentication(identity, "certificate")

    # -- passwords ------------------------------------------------------------------

    async def password_login(
        self,
        request: IRequest,
        username: str,
        password: str,
        totp: str | None,
        *,
        scheme: str = "login",
    ) -> Authentication:
        """
        Check a user name and password (and, for users who enrolled, a TOTP
        code) as a stream session does for C{PLAIN}: throttled per account
        and per address before anything is checked, the same refusal for an
        unknown user as for a wrong password.  One request is one attempt,
        both factors together; a right password without the code counts as
        a failure (forgiving it would let a caller who knows the password
        reset the counters between guesses at the code).

        @param totp: the code, or None if the client gave none; a user who
            enrolled and gave none (or a wrong one) is refused with
            C{error="totp_required"} -- said only once the password was right.
        @param scheme: C{login} (the token endpoint) or C{Basic}.
        @raise WebError: 401 (refused), 429 (throttled).
        """
        if len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
            self._audit(request, "denied", "PLAIN", reason="user name or password too long", refusal="malformed")
            raise self._refused(request, scheme)
        name = canonical_user_name(username)
        attempt = await self._admit(request, name)
        identity = await self._login(
            request, UsernamePassword(username.encode("utf-8"), password.encode("utf-8")), scheme, attempted=name
        )
        if await self._reaching(request, name, self.flow.second_factor_required(identity.avatar_id)):
            if totp is None or scheme == "Basic":
                # Not forgiven: a right password without the code must not
                # reset the counters between guesses at the code.
                self._audit(
                    request, "denied", "PLAIN", attempted=name, reason="TOTP code required and not given", refusal="refused"
                )
                if scheme == "Basic":
                    message = "this account has a second factor, which Basic authentication cannot carry: log in for a token"
                else:
                    message = "a TOTP code is required"
                raise self.unauthorized(request, message, error="totp_required")
            context = self._context(request, MECHANISMS[scheme])
            try:
                identity = await self.flow.check_second_factor(identity, totp, context)
            except LoginFailure as e:
                self._audit(request, "denied", "PLAIN", attempted=name, reason=e.reason, refusal=e.kind)
                if e.kind == "unavailable":
                    raise _unavailable(e) from None
                raise self.unauthorized(request, "a valid TOTP code is required", error="totp_required") from None
        await self._reaching(request, name, self.flow.succeeded(attempt))
        self._audit(request, "ok", identity.mechanism, identity.avatar_id, second_factor=identity.second_factor, level="info")
        return Authentication(identity, scheme)

    async def _reaching(self, request: IRequest, name: str, step: Awaitable[T]) -> T:
        """C{step}'s result; an C{unavailable} refusal (the credential database out of reach) is audited and a 503."""
        try:
            return await step
        except LoginFailure as e:
            self._audit(request, "denied", "PLAIN", attempted=name, reason=e.reason)
            raise _unavailable(e) from None

    async def _admit(self, request: IRequest, name: str) -> Attempt:
        try:
            return await self.flow.admit(name, client_host(request))
        except LoginFailure as e:
            self._audit(request, "denied", "PLAIN", attempted=name, reason=e.reason, refusal=e.kind)
            if e.kind == "unavailable":
                raise _unavailable(e) from None
            raise TooManyRequests(
                f"too many recent failures; try again in {e.retry_after} s",
                headers=[(b"Retry-After", b"%d" % e.retry_after)],
            ) from None

    # -- the portal ----------------------------------------------------------------------

    def _context(self, request: IRequest, mechanism: str, certificate: CertificateFacts | None = None) -> AuthenticationContext:
        return AuthenticationContext(mechanism=mechanism, peer=client_peer(request), certificate=certificate)

    async def _login(
        self,
        request: IRequest,
        credentials: Any,
        scheme: str,
        *,
        attempted: str | None = None,
        certificate: CertificateFacts | None = None,
    ) -> Identity:
        """Log C{credentials} in through the login flow; any refusal is audited and becomes a 401."""
        mechanism = MECHANISMS[scheme]
        try:
            return await self.flow.check(credentials, self._context(request, mechanism, certificate), attempted)
        except LoginFailure as e:
            self._audit(request, "denied", mechanism, attempted=attempted, reason=e.reason, refusal=e.kind)
            if e.kind == "unavailable":
                raise _unavailable(e) from None
            raise self._refused(request, scheme) from None

    # -- audit -----------------------------------------------------------------------

    def _audit(
        self,
        request: IRequest,
        result: str,
        mechanism: str | None,
        identity: str | None = None,
        *,
        attempted: str | None = None,
        reason: str | None = None,
        second_factor: str | None = None,
        level: str | None = None,
        refusal: str | None = None,
    ) -> None:
        """One C{auth.decision} event, with the fields a stream session's has, and C{transport="http"}."""
        facts = tls_facts(request)
        fields: dict[str, object] = facts.log_fields() if facts is not None else {"peer": client_peer(request)}
        audit.auth_decision(
            result,
            mechanism,
            identity,
            fields=fields,
            attempted=attempted,
            reason=reason,
            second_factor=second_factor,
            http=(_text(getattr(request, "method", None) or b"", 16), _text(getattr(request, "path", None) or b"")),
            level=level,
            refusal=refusal,
        )


__all__ = [
    "Authentication",
    "MECHANISMS",
    "WebAuthenticator",
    "client_host",
    "client_peer",
    "request_authentication",
    "request_identity",
    "tls_facts",
]
