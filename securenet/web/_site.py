"""
L{SecureSite}: a C{twisted.web.server.Site} for APIs that face hostile
clients.

  - **Body size limit.**  Twisted buffers a whole request body (into memory
    or a temporary file) before any resource sees it.  A L{SecureRequest}
    counts the body as it arrives and keeps at most C{max_body} bytes: a
    larger body is answered C{413} with a JSON error.  A client that
    announced a larger C{Content-Length} and waits for C{100 Continue}, or
    that keeps sending far beyond the limit (more than C{discard_limit}
    bytes), is answered at once and the connection closed; otherwise the
    excess is read and dropped, and the 413 sent once the body ended, so the
    client reads the answer instead of a reset connection.
  - **Headers.**  Every response carries the security headers of
    L{securenet.web.apply_security_headers} (HSTS on TLS), whoever wrote it.
  - **Errors.**  An exception in a resource is logged with its traceback and
    answered with a JSON 500, never a traceback page.
  - **Timeouts.**  Idle connections close after C{timeout} seconds (Twisted's
    default is 12 hours).
  - Form bodies are not parsed into C{request.args} (an API reads JSON).
"""

from __future__ import annotations

import io
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource

from securenet._logs import SecurenetLogger
from securenet.web._errors import InternalError, PayloadTooLarge
from securenet.web._jsonbody import MAX_BODY, dump_json
from securenet.web._responses import HSTS, SECURITY_HEADERS, SERVER, apply_security_headers, is_secure, render_error

log = SecurenetLogger(namespace="securenet.web")

#: Idle seconds before a connection is closed.
DEFAULT_TIMEOUT = 60

#: Bytes of an oversized body read and dropped (so the client can read the
#: 413) before giving up on the connection.
DEFAULT_DISCARD_LIMIT = 1024 * 1024


class SecureRequest(server.Request):
    """A request of a L{SecureSite}: see the module docstring."""

    content: Any
    _too_large = False
    _answered_early = False
    _received = 0

    def _limits(self) -> tuple[int, int]:
        site = getattr(self.channel, "site", None)
        max_body = getattr(site, "max_body", MAX_BODY)
        discard = getattr(site, "discard_limit", DEFAULT_DISCARD_LIMIT)
        return max_body, max(discard, max_body)

    def gotLength(self, length: int | None) -> None:
        max_body, discard = self._limits()
        # Never a temporary file: what is kept is at most max_body bytes.
        self.content = io.BytesIO()
        if length is not None and length > max_body:
            self._too_large = True
            expects = self.requestHeaders.getRawHeaders(b"expect") or []
            if length > discard or any(e.lower() == b"100-continue" for e in expects):
                # The client waits for 100 Continue (or would send far too
                # much): answer now, never ask for the body.
                self.requestHeaders.removeHeader(b"expect")
                self._answerEarly(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._answered_early:
            return
        max_body, discard = self._limits()
        if self._received > max_body:
            self._too_large = True
            self.content = io.BytesIO()
            if self._received > discard:
                self._answerEarly(self._received)
            return
        self.content.write(data)

    def _answerEarly(self, size: int) -> None:
        """Write the 413 straight to the connection and close it (HTTP/1.1 channels only)."""
        channel = self.channel
        if not isinstance(channel, http.HTTPChannel) or channel.transport is None:
            return  # e.g. HTTP/2: the excess is dropped and the 413 sent at the end.
        self._answered_early = True
        max_body, _ = self._limits()
        body = dump_json(PayloadTooLarge(f"the request body is larger than {max_body} bytes").body())
        headers = [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", b"%d" % len(body)),
            (b"Connection", b"close"),
            (b"Cache-Control", b"no-store"),
            (b"Server", SERVER),
            *SECURITY_HEADERS,
        ]
        if is_secure(self):
            headers.append((b"Strict-Transport-Security", HSTS))
        head = b"HTTP/1.1 413 Content Too Large\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
        channel.transport.write(head + b"\r\n" + body)
        log.warn(
            "refused a request body of {size} bytes or more from {peer} (limit {limit}); closing the connection",
            size=size,
            limit=max_body,
            peer=_peer(self),
            securenet_event="web.limit",
        )
        channel.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._answered_early:
            return
        super().requestReceived(command, path, version)

    def process(self) -> None:
        if self._too_large:
            self.site = getattr(self.channel, "site", None)
            max_body, _ = self._limits()
            log.warn(
                "refused a request body of {size} bytes from {peer} (limit {limit})",
                size=self._received,
                limit=max_body,
                peer=_peer(self),
                securenet_event="web.limit",
            )
            body = render_error(self, PayloadTooLarge(f"the request body is larger than {max_body} bytes"))
            self.write(body)
            self.finish()
            return
        super().process()

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            apply_security_headers(self)
        super().write(data)

    def processingFailed(self, reason: Failure) -> Any:
        log.failure("error while rendering {uri}", reason, uri=_uri(self))
        if not self.startedWriting and not self.finished and not self._disconnected:
            body = render_error(self, InternalError("internal error"))
            self.write(body)
            self.finish()
        elif not self.finished and not self._disconnected:
            self.finish()
        return reason


def _peer(request: server.Request) -> str:
    try:
        address = request.getClientAddress()
    except Exception:
        return "?"
    host = getattr(address, "host", None)
    return f"{host}:{getattr(address, 'port', '?')}" if host is not None else str(address)


def _uri(request: server.Request) -> str:
    uri = getattr(request, "uri", b"") or b""
    return uri.decode("utf-8", "replace")[:200]


class SecureSite(server.Site):
    """
    A Site with a body size limit, security headers, JSON errors and a
    short idle timeout (see the module docstring).

    @param max_body: the largest request body accepted, in bytes.
    @param discard_limit: how much of an oversized body is read and dropped
        before the connection is closed instead.
    @param timeout: idle seconds before a connection is closed.
    @param reactor: the clock for timeouts and access-log dates.
    """

    requestFactory = SecureRequest
    displayTracebacks = False

    def __init__(
        self,
        resource: IResource,
        *,
        reactor: IReactorTime | None = None,
        max_body: int = MAX_BODY,
        discard_limit: int = DEFAULT_DISCARD_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        logPath: str | None = None,
    ) -> None:
        if max_body < 1 or discard_limit < 1 or timeout <= 0:
            raise ValueError("max_body, discard_limit and timeout must be positive")
        try:
            super().__init__(resource, reactor=reactor, timeout=timeout, logPath=logPath, parsePOSTFormSubmission=False)
        except TypeError:  # a Twisted without parsePOSTFormSubmission
            super().__init__(resource, reactor=reactor, timeout=timeout, logPath=logPath)
        self.max_body = max_body
        self.discard_limit = discard_limit


__all__ = ["DEFAULT_DISCARD_LIMIT", "DEFAULT_TIMEOUT", "SecureRequest", "SecureSite"]
