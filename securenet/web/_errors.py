"""
The web layer's errors: each one is an HTTP answer.

A L{WebError} carries the status code, a short machine-readable C{error}
code and a C{message} that is safe to send to the client (it never says
whether a user exists, never quotes a password, never names a policy
rule).  C{reason}, when given, is for the audit log only.  The response
body is the JSON object of L{WebError.body}::

    {"error": "forbidden", "message": "bob may not admin.users.list: ...", "permission": "admin.users.list"}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from securenet._errors import SecurenetError


class WebError(SecurenetError):
    """
    An error answer.  Subclasses fix the status C{code} and a default
    C{error} code.

    @ivar message: what the client is told.
    @ivar error: the machine-readable code (C{invalid_credentials}, ...).
    @ivar headers: extra response headers, as (name, value) pairs.
    @ivar details: extra members of the JSON body (e.g. C{permission}).
    @ivar reason: what really happened, for the audit log; never sent.
    """

    code: int = 500
    default_error: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        details: Mapping[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error = error or self.default_error
        self.headers = tuple(headers)
        self.details = dict(details or {})
        self.reason = reason

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        return {"error": self.error, "message": self.message, **self.details}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, error={self.error!r}, message={self.message!r}, reason={self.reason!r})"


class BadRequest(WebError):
    code = 400
    default_error = "bad_request"


class Unauthorized(WebError):
    """401: no credentials, or credentials refused.  The answer carries C{WWW-Authenticate}."""

    code = 401
    default_error = "invalid_credentials"


class Forbidden(WebError):
    """403: authenticated, but the policy denies the request; C{details["permission"]} is the missing permission."""

    code = 403
    default_error = "forbidden"


class NotFound(WebError):
    code = 404
    default_error = "not_found"


class MethodNotAllowed(WebError):
    code = 405
    default_error = "method_not_allowed"


class Conflict(WebError):
    code = 409
    default_error = "conflict"


class PayloadTooLarge(WebError):
    code = 413
    default_error = "body_too_large"


class RequestTimeout(WebError):
    """408: the request's header block or body did not arrive in time (L{securenet.web.SecureSite})."""

    code = 408
    default_error = "request_timeout"


class URITooLong(WebError):
    """414: the request line is longer than the site accepts."""

    code = 414
    default_error = "uri_too_long"


class HeaderFieldsTooLarge(WebError):
    """431: a header line, or the whole header block, is larger than the site accepts."""

    code = 431
    default_error = "headers_too_large"


class UnsupportedMediaType(WebError):
    code = 415
    default_error = "unsupported_media_type"


class TooManyRequests(WebError):
    """429: throttled; C{Retry-After} says for how long."""

    code = 429
    default_error = "throttled"


class ServiceUnavailable(WebError):
    code = 503
    default_error = "unavailable"


def database_unavailable() -> ServiceUnavailable:
    """The answer while the credential database cannot be reached (L{securenet.store.StoreUnavailable})."""
    return ServiceUnavailable(
        "the credential database cannot be reached now; try again later",
        error="db_unavailable",
        headers=[(b"Retry-After", b"30")],
    )


class InternalError(WebError):
    code = 500
    default_error = "internal_error"


__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "HeaderFieldsTooLarge",
    "InternalError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServiceUnavailable",
    "TooManyRequests",
    "URITooLong",
    "Unauthorized",
    "UnsupportedMediaType",
    "WebError",
    "database_unavailable",
]


class WebConfigurationError(SecurenetError):
    """The web service cannot be set up as configured (the message says why)."""


__all__ += ["WebConfigurationError"]
