"""
securenet for C{twisted.web}: the Twisted-native equivalent of a JWT
extension plus an ACL decorator, on the same credential store, checkers,
policies and audit events as securenet's stream protocols::

    from securenet.web import SecureSite, WebAuthenticator, WebGuard, request_identity

    guard = WebGuard(WebAuthenticator(portal, reactor, throttle=throttle), policy)
    root.putChild(b"reports", guard.protect(Reports(), action="report.run"))

    @guard.requires("kv.read")
    async def get_value(request):
        return {"hello": request_identity(request).avatar_id}

    site = SecureSite(root, reactor=reactor)          # body limits, security headers, JSON errors

  - L{WebAuthenticator}: C{Authorization: Bearer} (JWT), C{Basic} (TLS only,
    throttled), C{ApiKey}/C{X-API-Key}, or the TLS client certificate,
    through the cred portal; a refusal is a JSON 401 with
    C{WWW-Authenticate} that never says whether the user exists.
  - L{WebGuard}: resource wrapper (L{WebGuard.protect}) and handler
    decorator (L{WebGuard.requires}); a policy denial is a JSON 403 naming
    the missing permission.
  - L{TokenService}, L{TokenEndpoints}: login (with TOTP), refresh-token
    rotation with reuse detection, logout; the refresh tokens live in the
    credential store (C{store.refresh_tokens}, L{securenet.store});
    L{TokenKeyReload}: a reload of C{--token-key} rotates the signing key.
  - L{SecureSite}: request body limit (413), header limits (414, 431),
    deadlines for headers and bodies (408), security headers on every response
    (HSTS on TLS), JSON 500s; L{read_json} / L{parse_json}: strict JSON bodies.
  - L{BuiltinAPI}: what C{twistd securenet --http} serves.
"""

from securenet.web._api import BuiltinAPI
from securenet.web._auth import Authentication, WebAuthenticator, request_authentication, request_identity, tls_facts
from securenet.web._client import HTTPSPolicy
from securenet.web._errors import (
    BadRequest,
    Conflict,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    WebConfigurationError,
    WebError,
)
from securenet.web._guard import JSONEndpoint, JSONRouter, ProtectedResource, WebGuard
from securenet.web._jsonbody import JSONBodyError, JSONLimits, parse_json, read_json, read_json_object
from securenet.web._responses import JSONResponse, apply_security_headers, render_error, render_json
from securenet.web._service import TokenKeyReload
from securenet.web._site import SecureRequest, SecureSite
from securenet.web._tokens import RefreshRefused, TokenEndpoints, TokenLifetimes, TokenPair, TokenService

__all__ = [
    "Authentication",
    "BadRequest",
    "BuiltinAPI",
    "Conflict",
    "Forbidden",
    "HTTPSPolicy",
    "JSONBodyError",
    "JSONEndpoint",
    "JSONLimits",
    "JSONResponse",
    "JSONRouter",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProtectedResource",
    "RefreshRefused",
    "SecureRequest",
    "SecureSite",
    "ServiceUnavailable",
    "TokenEndpoints",
    "TokenKeyReload",
    "TokenLifetimes",
    "TokenPair",
    "TokenService",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "WebAuthenticator",
    "WebConfigurationError",
    "WebError",
    "WebGuard",
    "apply_security_headers",
    "parse_json",
    "read_json",
    "read_json_object",
    "render_error",
    "render_json",
    "request_authentication",
    "request_identity",
    "tls_facts",
]
