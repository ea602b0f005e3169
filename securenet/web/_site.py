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
  - **Header limits.**  A request line longer than C{max_header_line} bytes
    is answered C{414}, a header line longer than that, or a header block
    (request line, header lines and their CRLFs) larger than
    C{max_header_block} bytes, C{431}; at once, and the connection closed.
    The defaults, 16 KiB a line and 32 KiB a block, leave room for the
    largest token securenet accepts (8 KiB, C{Authorization: Bearer ...}).
  - **Deadlines.**  A request's header block must arrive within
    C{header_timeout} seconds of its first byte, and its body within
    C{body_timeout} seconds of the end of its header block (the whole body,
    however it trickles in: every byte a client sends no longer buys it
    more time).  On expiry the client is answered C{408} (unless something
    of a response was already sent) and the connection closed.  Both default
    to 60 s, as nginx's C{client_header_timeout} and C{client_body_timeout}
    (which nginx counts between two reads of the body: this is stricter).
  - **Timeouts.**  Idle connections close after C{timeout} seconds (Twisted's
    default is 12 hours).
  - Every refusal is an C{http.limit} event (C{what}: C{body},
    C{request-line}, C{header-line}, C{header-block}, C{header-time},
    C{body-time}).
  - Form bodies are not parsed into C{request.args} (an API reads JSON).
  - **Graceful stop.**  Every connection is L{IDrainable}: when the server
    stops, an idle keep-alive connection closes at once, and one with a
    request in progress finishes that response (with C{Connection: close})
    and closes.
"""

from __future__ import annotations

import io
import math
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource
from zope.interface import implementer

from securenet import _metrics, audit
from securenet._logs import SecurenetLogger
from securenet.interfaces import IDrainable
from securenet.web._errors import HeaderFieldsTooLarge, InternalError, PayloadTooLarge, RequestTimeout, URITooLong, WebError
from securenet.web._jsonbody import MAX_BODY, dump_json
from securenet.web._responses import (
    HSTS,
    REASON_PHRASES,
    SECURITY_HEADERS,
    SERVER,
    apply_security_headers,
    render_error,
)

log = SecurenetLogger(namespace="securenet.web")

_CONNECTION_DONE = Failure(ConnectionDone())

#: Idle seconds before a connection is closed.
DEFAULT_TIMEOUT = 60

#: Bytes of an oversized body read and dropped (so the client can read the
#: 413) before giving up on the connection.
DEFAULT_DISCARD_LIMIT = 1024 * 1024

#: Seconds from the first byte of a request to the end of its header block.
DEFAULT_HEADER_TIMEOUT = 60.0

#: Seconds from the end of a request's header block to the end of its body.
DEFAULT_BODY_TIMEOUT = 60.0

#: The longest request line or header line, in bytes, without its CRLF:
#: room for C{Authorization: Bearer} and a token of MAX_TOKEN_LENGTH (8 KiB).
DEFAULT_MAX_HEADER_LINE = 16 * 1024

#: The largest header block, in bytes: request line, header lines, CRLFs.
DEFAULT_MAX_HEADER_BLOCK = 32 * 1024


def raw_answer(error: WebError, *, secure: bool) -> bytes:
    """
    A whole C{Connection: close} response for C{error}, with the security
    headers, for writing straight to the connection (no request to answer
    through: the request is refused before Twisted finished reading it).
    """
    body = dump_json(error.body())
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"%d" % len(body)),
        (b"Connection", b"close"),
        (b"Cache-Control", b"no-store"),
        (b"Server", SERVER),
        *SECURITY_HEADERS,
    ]
    if secure:
        headers.append((b"Strict-Transport-Security", HSTS))
    phrase = REASON_PHRASES.get(error.code) or http.RESPONSES.get(error.code, b"Error")
    head = b"HTTP/1.1 %d %s\r\n" % (error.code, phrase) + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    return head + b"\r\n" + body


def refuse(channel: http.HTTPChannel, error: WebError | None, text: str, *, what: str, size: int, limit: int, peer: str) -> None:
    """
    Answer C{error} on the connection (None: something of a response was
    already sent, say nothing more), log the C{http.limit} event, and close
    the connection -- forcibly if the client does not let it close within
    the channel's C{abortTimeout}, as Twisted's idle timeout does.
    """
    if error is not None and channel.transport is not None:
        channel.transport.write(raw_answer(error, secure=channel.isSecure()))
        _metrics.http_request(None, error.code)
    audit.http_limit(text, size=size, limit=limit, peer=peer, what=what)
    if channel.abortTimeout is not None and channel._abortingCall is None:
        # Before closing: a connection lost at once cancels it.
        channel._abortingCall = channel.callLater(channel.abortTimeout, channel.forceAbortClient)
    channel.loseConnection()


class SecureRequest(server.Request):
    """A request of a L{SecureSite}: see the module docstring."""

    content: Any
    #: The route template of the resource that answered (L{securenet.web.JSONEndpoint}'s C{route}): the metrics' label.
    route: str | None = None
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
        peer = _peer(self)
        refuse(
            channel,
            PayloadTooLarge(f"the request body is larger than {max_body} bytes"),
            f"refused a request body of {size} bytes or more from {peer} (limit {max_body}); closing the connection",
            what="body",
            size=size,
            limit=max_body,
            peer=peer,
        )

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._answered_early:
            return
        super().requestReceived(command, path, version)

    def process(self) -> None:
        if self._too_large:
            self.site = getattr(self.channel, "site", None)
            max_body, _ = self._limits()
            peer = _peer(self)
            audit.http_limit(
                f"refused a request body of {self._received} bytes from {peer} (limit {max_body})",
                size=self._received,
                limit=max_body,
                peer=peer,
            )
            body = render_error(self, PayloadTooLarge(f"the request body is larger than {max_body} bytes"))
            self.write(body)
            self.finish()
            return
        super().process()

    def render(self, resrc: IResource) -> None:
        self.route = getattr(resrc, "route", None)
        super().render(resrc)

    def finish(self) -> None:
        if not self.finished and not self._disconnected:
            _metrics.http_request(self.route, self.code)
        super().finish()

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        # Twisted knows no 429 or 431 ("Unknown Status") and says 408 "Request Time-out".
        super().setResponseCode(code, message if message is not None else REASON_PHRASES.get(code))

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
    return _address_text(address)


def _address_text(address: object) -> str:
    host = getattr(address, "host", None)
    return f"{host}:{getattr(address, 'port', '?')}" if host is not None else str(address)


def _uri(request: server.Request) -> str:
    uri = getattr(request, "uri", b"") or b""
    return uri.decode("utf-8", "replace")[:200]


def _channel_peer(channel: http.HTTPChannel) -> str:
    try:
        address = channel.getPeer()
    except Exception:
        return "?"
    return _address_text(address)


@implementer(IDrainable)
class SecureHTTPChannel(http.HTTPChannel):
    """
    The HTTP/1.1 channel of a L{SecureSite}: header size limits (414, 431)
    and the header and body deadlines (408) of the module docstring, read
    from the site.  Once it refused a request (or began to close for any
    reason) it reads nothing more from the connection.  On L{drain} it
    answers what it is answering and closes.
    """

    site: Any = None
    _head_deadline: IDelayedCall | None = None
    _body_deadline: IDelayedCall | None = None
    _head_size = 0
    _head_lines = 0
    _closing = False
    _draining = False

    def _setting(self, name: str, default: Any) -> Any:
        return getattr(self.site, name, default)

    def connectionMade(self) -> None:
        self.MAX_LENGTH = self._setting("max_header_line", DEFAULT_MAX_HEADER_LINE)
        # Twisted's own count (without CRLFs) answers 400; ours (with them) comes first.
        self.totalHeadersSize = self._setting("max_header_block", DEFAULT_MAX_HEADER_BLOCK)
        super().connectionMade()

    # -- the header block ---------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if data and self.line_mode and not self._handlingRequest and self._head_deadline is None:
            # The first byte of a request (or of the pipelined requests read
            # while the previous one was answered): its header block's clock starts.
            self._head_deadline = self.callLater(self._setting("header_timeout", DEFAULT_HEADER_TIMEOUT), self._headTimedOut)
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._closing:
            return
        self._head_size += len(line) + 2
        if line or self._head_lines:
            self._head_lines += 1
        limit = self.totalHeadersSize
        if self._head_size > limit:
            peer = _channel_peer(self)
            refuse(
                self,
                HeaderFieldsTooLarge(f"the request header block is larger than {limit} bytes"),
                f"refused a request header block of {self._head_size} bytes or more from {peer} (limit {limit});"
                " closing the connection",
                what="header-block",
                size=self._head_size,
                limit=limit,
                peer=peer,
            )
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._closing:
            return
        limit = self.MAX_LENGTH
        size = len(line.split(self.delimiter, 1)[0])
        peer = _channel_peer(self)
        error: WebError
        if self._head_lines == 0:
            what, error = "request-line", URITooLong(f"the request line is longer than {limit} bytes")
        else:
            what, error = "header-line", HeaderFieldsTooLarge(f"a request header line is longer than {limit} bytes")
        refuse(
            self,
            error,
            f"refused a {what.replace('-', ' ')} of {size} bytes or more from {peer} (limit {limit}); closing the connection",
            what=what,
            size=size,
            limit=limit,
            peer=peer,
        )

    def allHeadersReceived(self) -> None:
        self._cancel("_head_deadline")
        self._head_size = self._head_lines = 0
        super().allHeadersReceived()
        if self.length != 0 and not self._closing:
            self._body_deadline = self.callLater(self._setting("body_timeout", DEFAULT_BODY_TIMEOUT), self._bodyTimedOut)

    def allContentReceived(self) -> None:
        self._cancel("_body_deadline")
        super().allContentReceived()

    # -- deadlines ------------------------------------------------------------------------

    def _headTimedOut(self) -> None:
        self._head_deadline = None
        timeout = self._setting("header_timeout", DEFAULT_HEADER_TIMEOUT)
        received = self._head_size + len(getattr(self, "_buffer", b""))
        peer = _channel_peer(self)
        refuse(
            self,
            RequestTimeout(f"the request header block did not arrive within {timeout:g} s"),
            f"closed the connection of {peer}: its request header block did not arrive within {timeout:g} s"
            f" ({received} bytes received)",
            what="header-time",
            size=received,
            limit=math.ceil(timeout),
            peer=peer,
        )

    def _bodyTimedOut(self) -> None:
        self._body_deadline = None
        timeout = self._setting("body_timeout", DEFAULT_BODY_TIMEOUT)
        request = self.requests[-1] if self.requests else None
        received = getattr(request, "_received", 0)
        answered = request is not None and (request.startedWriting or getattr(request, "_answered_early", False))
        peer = _channel_peer(self)
        refuse(
            self,
            None if answered else RequestTimeout(f"the request body did not arrive within {timeout:g} s"),
            f"closed the connection of {peer}: its request body did not arrive within {timeout:g} s"
            f" of its headers ({received} bytes received)",
            what="body-time",
            size=received,
            limit=math.ceil(timeout),
            peer=peer,
        )

    def _cancel(self, name: str) -> None:
        call: IDelayedCall | None = getattr(self, name)
        if call is not None:
            setattr(self, name, None)
            if call.active():
                call.cancel()

    # -- closing ------------------------------------------------------------------------------

    def drain(self) -> None:
        """
        The server stops (L{IDrainable}): without a request in progress the
        connection closes at once; otherwise the request (even one whose
        headers are still arriving) is answered, with C{Connection: close}
        unless its response has begun, and then the connection closes.
        """
        self._draining = True
        if not self.requests:
            self.loseConnection()
            return
        self.persistent = False
        for request in self.requests:
            if not request.startedWriting:
                request.responseHeaders.setRawHeaders(b"Connection", [b"close"])

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        if self._draining:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))

    def loseConnection(self) -> None:
        # Whoever closes (a refusal, Twisted's own 400, a non-persistent
        # request's end): no more requests are read, no deadline fires.
        self._closing = True
        self._cancel("_head_deadline")
        self._cancel("_body_deadline")
        super().loseConnection()

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        self._closing = True
        self._cancel("_head_deadline")
        self._cancel("_body_deadline")
        super().connectionLost(reason)


@implementer(IDrainable)
class _DrainableHTTPProtocol(http._GenericHTTPChannelProtocol):
    """Twisted's wrapper that switches to HTTP/2 when TLS negotiated it, passing L{IDrainable.drain} on to its channel."""

    def drain(self) -> None:
        # An HTTP/2 channel is not drainable: it is closed at the deadline.
        drainable = IDrainable(self._channel, None)
        if drainable is not None:
            drainable.drain()


def _secure_channel(factory: http.HTTPFactory) -> Any:
    """
    The protocol of a L{SecureSite}: a L{SecureHTTPChannel}, behind Twisted's
    wrapper that switches to HTTP/2 when TLS negotiated it (C{H2Connection}
    has limits of its own).
    """
    return _DrainableHTTPProtocol(SecureHTTPChannel())


class SecureSite(server.Site):
    """
    A Site with a body size limit, security headers, JSON errors and a
    short idle timeout (see the module docstring).

    @param max_body: the largest request body accepted, in bytes.
    @param discard_limit: how much of an oversized body is read and dropped
        before the connection is closed instead.
    @param timeout: idle seconds before a connection is closed.
    @param header_timeout: seconds from the first byte of a request to the
        end of its header block (then C{408}).
    @param body_timeout: seconds from the end of a request's header block to
        the end of its body (then C{408}).
    @param max_header_line: the longest request line (else C{414}) or header
        line (else C{431}), in bytes, without the CRLF.
    @param max_header_block: the largest header block (request line, header
        lines, CRLFs), in bytes (else C{431}).
    @param reactor: the clock for timeouts and access-log dates.
    """

    protocol = _secure_channel
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
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_header_line: int = DEFAULT_MAX_HEADER_LINE,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
        logPath: str | None = None,
    ) -> None:
        if max_body < 1 or discard_limit < 1 or not _positive(timeout, header_timeout, body_timeout):
            raise ValueError("max_body, discard_limit and the timeouts must be positive")
        if max_header_line < 1 or max_header_block < max_header_line:
            raise ValueError("max_header_line must be positive and max_header_block at least max_header_line")
        try:
            super().__init__(resource, reactor=reactor, timeout=timeout, logPath=logPath, parsePOSTFormSubmission=False)
        except TypeError:  # a Twisted without parsePOSTFormSubmission
            super().__init__(resource, reactor=reactor, timeout=timeout, logPath=logPath)
        self.max_body = max_body
        self.discard_limit = discard_limit
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_header_line = max_header_line
        self.max_header_block = max_header_block


def _positive(*values: float) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)


__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_DISCARD_LIMIT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_HEADER_BLOCK",
    "DEFAULT_MAX_HEADER_LINE",
    "DEFAULT_TIMEOUT",
    "SecureHTTPChannel",
    "SecureRequest",
    "SecureSite",
    "raw_answer",
    "refuse",
]
