"""
Writing answers: security headers on every response, JSON bodies, error
answers, and care for clients that went away.

Every response securenet.web writes (and every response of a
L{securenet.web.SecureSite}) carries:

  - C{X-Content-Type-Options: nosniff}, C{X-Frame-Options: DENY},
    C{Referrer-Policy: no-referrer} and a C{Content-Security-Policy} that
    allows nothing (an API serves no active content);
  - C{Strict-Transport-Security} when the request came over TLS (RFC 6797
    forbids it on plain HTTP);
  - C{Server: securenet} instead of Twisted's version.

JSON answers are C{Content-Type: application/json} with C{Content-Length}
and, by default, C{Cache-Control: no-store}: they depend on who asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from securenet._logs import SecurenetLogger
from securenet.store._errors import StoreUnavailable
from securenet.web._errors import InternalError, WebError, database_unavailable
from securenet.web._jsonbody import dump_json

log = SecurenetLogger(namespace="securenet.web")

#: Headers on every response.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Content-Security-Policy", b"default-src 'none'; frame-ancestors 'none'"),
)

#: HSTS on TLS responses: two years (what hstspreload.org asks for).
HSTS = b"max-age=63072000"

SERVER = b"securenet"

JSON_TYPE = b"application/json"

#: Reason phrases (RFC 9110, RFC 6585) for the codes securenet answers that
#: Twisted names with an older phrase or not at all (C{429 Unknown Status}).
REASON_PHRASES: dict[int, bytes] = {
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
}


def is_secure(request: IRequest) -> bool:
    """Whether the request came over TLS."""
    try:
        return bool(request.isSecure())
    except AttributeError:
        return False


def apply_security_headers(request: IRequest, *, no_store: bool = False) -> None:
    """Set the headers every response carries (see the module docstring); idempotent."""
    for name, value in SECURITY_HEADERS:
        request.setHeader(name, value)
    request.setHeader(b"Server", SERVER)
    if is_secure(request):
        request.setHeader(b"Strict-Transport-Security", HSTS)
    if no_store:
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Pragma", b"no-cache")


@attrs.frozen
class JSONResponse:
    """What a handler returns for an answer other than C{200} with its value."""

    code: int
    body: Any
    headers: tuple[tuple[bytes, bytes], ...] = ()


def render_json(
    request: IRequest,
    code: int,
    body: Any,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    no_store: bool = True,
) -> bytes:
    """Set the status and headers of a JSON answer and return its body (for C{render} methods)."""
    data = dump_json(body)
    request.setResponseCode(code, REASON_PHRASES.get(code))
    apply_security_headers(request, no_store=no_store)
    grouped: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        grouped.setdefault(name, []).append(value)
    for name, values in grouped.items():
        # Several values of one header (WWW-Authenticate challenges) stay several headers.
        request.responseHeaders.setRawHeaders(name, values)
    request.setHeader(b"Content-Type", JSON_TYPE)
    request.setHeader(b"Content-Length", b"%d" % len(data))
    return data


def render_error(request: IRequest, error: WebError) -> bytes:
    """Set up the answer for C{error} and return its body."""
    return render_json(request, error.code, error.body(), headers=error.headers)


def disconnect_watch(request: IRequest) -> Callable[[], bool]:
    """
    A function telling whether the client went away since this call: a
    handler that waited (on a thread, a store) must not write then.
    """
    gone: list[bool] = []
    if getattr(request, "_disconnected", False):
        return lambda: True
    tracked: Any = request
    try:
        tracked.notifyFinish().addErrback(lambda _: gone.append(True))
    except Exception:  # a request object without notifyFinish (tests' stand-ins)
        pass
    return lambda: bool(gone) or bool(getattr(request, "_disconnected", False))


def send(request: IRequest, body: bytes, gone: Callable[[], bool]) -> None:
    """Write C{body} and finish, unless the client went away."""
    if gone() or getattr(request, "finished", False):
        return
    request.write(body)
    request.finish()


def send_json(
    request: IRequest,
    code: int,
    body: Any,
    gone: Callable[[], bool],
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    no_store: bool = True,
) -> None:
    """Write a JSON answer and finish, unless the client went away."""
    if gone() or getattr(request, "finished", False):
        return
    send(request, render_json(request, code, body, headers=headers, no_store=no_store), gone)


def send_failure(request: IRequest, failure: Failure, gone: Callable[[], bool]) -> None:
    """
    Answer with the L{WebError} in C{failure}; the credential database out
    of reach (L{StoreUnavailable}: the store logged it) is a 503; anything
    else is a bug: logged with its traceback, answered with a bare 500.
    """
    if isinstance(failure.value, WebError):
        error = failure.value
    elif isinstance(failure.value, StoreUnavailable):
        error = database_unavailable()
    else:
        log.failure(
            "error while handling {method} {path}",
            failure,
            method=_text(getattr(request, "method", b"")),
            path=_text(getattr(request, "path", b"")),
        )
        error = InternalError("internal error")
    if gone() or getattr(request, "finished", False):
        return
    send(request, render_error(request, error), gone)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")[:200]
    return str(value)[:200]


__all__ = [
    "HSTS",
    "JSONResponse",
    "REASON_PHRASES",
    "SECURITY_HEADERS",
    "apply_security_headers",
    "disconnect_watch",
    "is_secure",
    "render_error",
    "render_json",
    "send",
    "send_failure",
    "send_json",
]
