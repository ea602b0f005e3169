"""
L{SecureSite} against hostile clients, in memory on a fake clock: reason
phrases Twisted does not know, header size limits (431 at once), and the
deadlines for a request's header block and body (408), each refusal an
C{http.limit} event.

The channel is driven byte by byte through a C{StringTransport} (plain
HTTP) or TLS joined in memory (C{securenet.testing}), with
L{twisted.internet.task.Clock} as the site's reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from securenet.cred._jwt import MAX_TOKEN_LENGTH
from securenet.interfaces import IDrainable
from securenet.testing import EventCapture, connect_in_memory
from securenet.web import SecureSite, TooManyRequests, render_error
from securenet.web._responses import REASON_PHRASES
from tests.web.test_api import CLIENT, NOW, PKI, SERVER, Service, exchange_plain, parse_response, raw_request

# -- reason phrases ------------------------------------------------------------------


class ReasonPhraseTests(SynchronousTestCase):
    def test_throttledStatusLine(self) -> None:
        """A throttled login is C{429 Too Many Requests}, not Twisted's C{429 Unknown Status}."""
        service = Service()
        for _ in range(4):
            self.assertEqual(service.login("alice", "wrong").code, 401)
        throttled = service.login("alice", "alice-pw")
        self.assertEqual((throttled.code, throttled.reason), (429, b"Too Many Requests"))

    def test_table(self) -> None:
        self.assertEqual(
            REASON_PHRASES,
            {
                408: b"Request Timeout",
                413: b"Content Too Large",
                414: b"URI Too Long",
                429: b"Too Many Requests",
                431: b"Request Header Fields Too Large",
            },
        )

    def test_ownResourceUnderSecureSite(self) -> None:
        """A resource of yours that sets the code itself gets the phrase from SecureRequest."""

        class Busy(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                request.setResponseCode(429)
                request.setHeader(b"Retry-After", b"3")
                return b"later"

        answer, _ = exchange_plain(SecureSite(Busy(), reactor=Clock()), raw_request("GET", "/"))
        self.assertTrue(answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), answer[:80])
        self.assertEqual(parse_response(answer).body, b"later")

    def test_renderErrorUnderAnySite(self) -> None:
        """render_error names the phrase itself: a plain Site (or Klein) writes it too."""
        request: Any = DummyRequest([])
        render_error(request, TooManyRequests("slow down"))
        self.assertEqual((request.responseCode, request.responseMessage), (429, b"Too Many Requests"))


# -- driving one connection by hand ---------------------------------------------------


class Counted(Resource):
    """Answers C{ok} (and the body's length); counts the requests that reached it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[bytes] = []

    def render_GET(self, request: Any) -> bytes:
        self.requests.append(request.uri)
        return b"ok"

    def render_POST(self, request: Any) -> bytes:
        self.requests.append(request.uri)
        return b"ok %d" % len(request.content.read())


class Closed(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost = reason


class Connection:
    """
    One connection to a site on a fake clock, plain (a StringTransport) or
    over TLS joined in memory; L{send} feeds bytes, L{answer} is what the
    server wrote, L{closed} whether it closed (TLS: the client saw the end).
    """

    def __init__(self, site: SecureSite, clock: Clock, *, tls: bool = False) -> None:
        self.clock = clock
        self.tls = tls
        if tls:
            self.memory = connect_in_memory(
                server_policy=PKI.server_policy(),
                client_policy=PKI.client_policy(),
                server_factory=site,
                client_factory=Factory.forProtocol(Closed),
                clock=clock,
            )
            ready: list[Any] = []
            self.memory.client_ready.addBoth(ready.append)
            self.memory.pump.flush()
            self.client: Closed = ready[0]
            assert isinstance(self.client, Closed), ready
        else:
            protocol = site.buildProtocol(CLIENT)
            assert protocol is not None
            self.transport = StringTransport(hostAddress=SERVER, peerAddress=CLIENT)
            protocol.makeConnection(self.transport)
            self.protocol = protocol

    def send(self, data: bytes) -> None:
        if self.tls:
            transport = self.client.transport
            assert transport is not None
            transport.write(data)
            self.memory.pump.flush()
        else:
            self.protocol.dataReceived(data)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if self.tls:
            self.memory.pump.flush()

    @property
    def answer(self) -> bytes:
        return b"".join(self.client.received) if self.tls else self.transport.value()

    @property
    def closed(self) -> bool:
        return self.client.lost is not None if self.tls else self.transport.disconnecting

    def trickle(self, data: bytes, every: float) -> float:
        """Send C{data} a byte every C{every} seconds while the connection is open; the seconds it took."""
        start = self.clock.seconds()
        for i in range(len(data)):
            if self.closed:
                break
            self.send(data[i : i + 1])
            self.advance(every)
        return self.clock.seconds() - start


def make_site(**settings: Any) -> tuple[SecureSite, Counted, Clock]:
    clock = Clock()
    clock.advance(NOW)
    resource = Counted()
    return SecureSite(resource, reactor=clock, **settings), resource, clock


HEAD = b"GET /thing HTTP/1.1\r\nHost: localhost\r\n"


# -- header size limits: 414 and 431 at once ----------------------------------------------------


class HeaderLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events = EventCapture(self)

    def assertRefusedAtOnce(
        self, connection: Connection, resource: Counted, code: int, error: str, what: str, limit: int
    ) -> dict[str, Any]:
        """The answer is there at once: C{code} and its JSON, the connection closing, nothing processed."""
        response = parse_response(connection.answer)
        self.assertEqual((response.code, response.reason), (code, REASON_PHRASES[code]))
        self.assertEqual(response.json()["error"], error)
        self.assertEqual(response.header("Connection"), "close")
        self.assertEqual(response.header("X-Content-Type-Options"), "nosniff")
        self.assertEqual(response.header("Strict-Transport-Security"), "max-age=63072000" if connection.tls else None)
        # One answer and nothing after it.
        self.assertEqual(connection.answer.count(b"HTTP/1.1 "), 1)
        self.assertTrue(connection.closed)
        self.assertEqual(resource.requests, [])
        [event] = self.events.of("http.limit")
        self.assertEqual((event["what"], event["limit"], event["peer"]), (what, limit, "127.0.0.1:54321"))
        return event

    def test_hugeAuthorizationHeaderOverTLS(self) -> None:
        """
        A 20 KB header line is answered 431 at once and the connection
        closed (it was: nothing, a close only when the idle timeout fired).
        """
        site, resource, clock = make_site()
        connection = Connection(site, clock, tls=True)
        connection.send(HEAD + b"Authorization: Bearer " + b"x" * 20_000 + b"\r\n\r\n")
        event = self.assertRefusedAtOnce(connection, resource, 431, "headers_too_large", "header-line", 16 * 1024)
        self.assertGreater(event["size"], 16 * 1024)
        self.assertIn("a request header line is longer than 16384 bytes", parse_response(connection.answer).json()["message"])

    def test_hugeHeaderLinePlain(self) -> None:
        site, resource, clock = make_site()
        connection = Connection(site, clock)
        connection.send(HEAD + b"Cookie: " + b"c" * 20_000)  # not even its end: the limit is reached
        self.assertRefusedAtOnce(connection, resource, 431, "headers_too_large", "header-line", 16 * 1024)
        connection.send(b"\r\n\r\n" + HEAD + b"\r\n")  # more is ignored
        self.assertEqual(connection.answer.count(b"HTTP/1.1 "), 1)
        self.assertEqual(resource.requests, [])

    def test_largestTokenAccepted(self) -> None:
        """An 8 KiB token (MAX_TOKEN_LENGTH) in Authorization: Bearer, with other headers, passes."""
        self.assertEqual(MAX_TOKEN_LENGTH, 8192)
        site, resource, clock = make_site()
        connection = Connection(site, clock, tls=True)
        connection.send(HEAD + b"Authorization: Bearer " + b"t" * MAX_TOKEN_LENGTH + b"\r\nCookie: " + b"c" * 4000 + b"\r\n\r\n")
        self.assertEqual(parse_response(connection.answer).code, 200)
        self.assertEqual(resource.requests, [b"/thing"])
        self.assertEqual(self.events.of("http.limit"), [])

    def test_lineAtTheLimit(self) -> None:
        """A header line of exactly max_header_line bytes passes; one more byte is a 431."""
        for extra, code in ((0, 200), (1, 431)):
            site, resource, clock = make_site(max_header_line=1000)
            connection = Connection(site, clock)
            connection.send(HEAD + b"X-A: " + b"a" * (1000 - 5 + extra) + b"\r\n\r\n")
            self.assertEqual(parse_response(connection.answer).code, code, extra)

    def test_headerBlockOverTheLimit(self) -> None:
        """Lines each within the limit, but more than 32 KiB of them: 431 (what="header-block")."""
        site, resource, clock = make_site()
        connection = Connection(site, clock, tls=True)
        lines = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000) for i in range(40))
        connection.send(HEAD + lines + b"\r\n")
        event = self.assertRefusedAtOnce(connection, resource, 431, "headers_too_large", "header-block", 32 * 1024)
        self.assertGreater(event["size"], 32 * 1024)

    def test_blockAtTheLimit(self) -> None:
        head = HEAD + b"X-A: " + b"a" * 50 + b"\r\n"
        size = len(head) + 2  # and the empty line's CRLF
        for limit, code in ((size, 200), (size - 1, 431)):
            site, resource, clock = make_site(max_header_line=60, max_header_block=limit)
            connection = Connection(site, clock)
            connection.send(head + b"\r\n")
            self.assertEqual(parse_response(connection.answer).code, code, limit)

    def test_hugeRequestLine(self) -> None:
        """A request line over the line limit is 414 URI Too Long (what="request-line")."""
        site, resource, clock = make_site()
        connection = Connection(site, clock, tls=True)
        connection.send(b"GET /" + b"p" * 20_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertRefusedAtOnce(connection, resource, 414, "uri_too_long", "request-line", 16 * 1024)

    def test_secondRequestOfAConnection(self) -> None:
        """The limits are per request: the first request of a keep-alive connection is answered, the second refused."""
        site, resource, clock = make_site(max_header_line=1000)
        connection = Connection(site, clock)
        connection.send(HEAD + b"\r\n")
        self.assertEqual(parse_response(connection.answer).code, 200)
        connection.send(HEAD + b"X-A: " + b"a" * 2000 + b"\r\n\r\n")
        second = connection.answer.split(b"HTTP/1.1 ")[2]
        self.assertTrue(second.startswith(b"431 Request Header Fields Too Large\r\n"), second[:60])
        self.assertEqual(resource.requests, [b"/thing"])
        self.assertTrue(connection.closed)

    def test_settingsChecked(self) -> None:
        self.assertRaises(ValueError, SecureSite, Resource(), reactor=Clock(), max_header_line=0)
        self.assertRaises(ValueError, SecureSite, Resource(), reactor=Clock(), max_header_line=100, max_header_block=99)


# -- deadlines: 408 ------------------------------------------------------------------------------------


class DeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events = EventCapture(self)

    def assertTimedOut(self, connection: Connection, resource: Counted, what: str, limit: int) -> dict[str, Any]:
        """Answered 408 and closed; nothing processed; one http.limit event."""
        response = parse_response(connection.answer)
        self.assertEqual((response.code, response.reason), (408, b"Request Timeout"))
        self.assertEqual(response.json()["error"], "request_timeout")
        self.assertEqual(response.header("Connection"), "close")
        self.assertEqual(connection.answer.count(b"HTTP/1.1 "), 1)
        self.assertTrue(connection.closed)
        self.assertEqual(resource.requests, [])
        [event] = self.events.of("http.limit")
        self.assertEqual((event["what"], event["limit"], event["peer"]), (what, limit, "127.0.0.1:54321"))
        return event

    def test_slowlorisHeadersOverTLS(self) -> None:
        """
        A header byte every 5 s no longer keeps the connection (each byte
        restarted the 60 s idle timer: it stayed past 150 s): the header
        block has 60 s from its first byte, then 408 and the end.
        """
        site, resource, clock = make_site()
        connection = Connection(site, clock, tls=True)
        connection.send(HEAD)
        connection.advance(5)
        took = connection.trickle(b"X-Slow: " + b"s" * 100 + b"\r\n\r\n", every=5)
        self.assertEqual(took, 55)  # 60 s after the first byte
        event = self.assertTimedOut(connection, resource, "header-time", 60)
        self.assertEqual(event["size"], len(HEAD) + 11)
        self.assertIn("did not arrive within 60 s", event["log_format"])

    def test_headerDeadlineExactly(self) -> None:
        """Open until the deadline, closed at it (plain HTTP)."""
        site, resource, clock = make_site(header_timeout=10)
        connection = Connection(site, clock)
        connection.send(b"G")
        connection.advance(9.9)
        self.assertEqual((connection.answer, connection.closed), (b"", False))
        connection.advance(0.1)
        self.assertTimedOut(connection, resource, "header-time", 10)

    def test_headerDeadlineIsPerRequest(self) -> None:
        """The clock starts at a request's first byte: a keep-alive connection's later request gets its own 60 s."""
        site, resource, clock = make_site()
        connection = Connection(site, clock)
        connection.send(HEAD + b"\r\n")
        self.assertEqual(parse_response(connection.answer).code, 200)
        connection.advance(50)  # idle, within the idle timeout
        connection.trickle(HEAD, every=1)  # 40 s or so, from t=50 to t=90: fine
        connection.send(b"\r\n")
        self.assertEqual(connection.answer.count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(resource.requests, [b"/thing", b"/thing"])
        self.assertFalse(connection.closed)
        self.assertEqual(self.events.of("http.limit"), [])

    def test_slowBody(self) -> None:
        """The body has 60 s from the end of the header block, however it trickles in."""
        site, resource, clock = make_site()
        connection = Connection(site, clock, tls=True)
        connection.send(b"POST /thing HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n")
        took = connection.trickle(b"b" * 100, every=5)
        self.assertEqual(took, 60)
        event = self.assertTimedOut(connection, resource, "body-time", 60)
        self.assertEqual(event["size"], 12)

    def test_slowChunkedBody(self) -> None:
        site, resource, clock = make_site(body_timeout=20)
        connection = Connection(site, clock)
        connection.send(b"POST /thing HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):
            connection.send(b"1\r\nb\r\n")
            connection.advance(3)
        self.assertTimedOut(connection, resource, "body-time", 20)

    def test_bodyInTime(self) -> None:
        """A body that arrives within the deadline is processed; no deadline is left behind."""
        site, resource, clock = make_site(body_timeout=20)
        connection = Connection(site, clock)
        connection.send(b"POST /thing HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\n")
        connection.trickle(b"abcd", every=4)
        response = parse_response(connection.answer)
        self.assertEqual((response.code, response.body), (200, b"ok 4"))
        connection.advance(30)  # past both deadlines, within the idle timeout
        self.assertEqual(connection.answer.count(b"HTTP/1.1 "), 1)
        self.assertFalse(connection.closed)
        self.assertEqual(self.events.of("http.limit"), [])

    def test_noTimersLeftBehind(self) -> None:
        """After a plain GET the only call pending is the idle timeout."""
        site, resource, clock = make_site()
        connection = Connection(site, clock)
        connection.send(HEAD + b"\r\n")
        self.assertEqual(parse_response(connection.answer).code, 200)
        self.assertEqual([call.getTime() - clock.seconds() for call in clock.getDelayedCalls()], [60])

    def test_idleConnectionClosedQuietly(self) -> None:
        """No request begun: the idle timeout closes the connection as before, with no 408."""
        site, resource, clock = make_site(timeout=30)
        connection = Connection(site, clock)
        connection.advance(30)
        self.assertEqual((connection.answer, connection.closed), (b"", True))
        self.assertEqual(self.events.of("http.limit"), [])

    def test_clientThatNeverReadsIsAborted(self) -> None:
        """After the 408 the connection is aborted if the client does not let it close (abortTimeout)."""
        site, resource, clock = make_site(header_timeout=5)
        connection = Connection(site, clock)
        connection.send(b"GET")
        connection.advance(5)
        self.assertTimedOut(connection, resource, "header-time", 5)
        self.assertFalse(connection.transport.disconnected)
        connection.advance(15)
        self.assertTrue(connection.transport.disconnected)  # StringTransport's abortConnection

    def test_settingsChecked(self) -> None:
        for name in ("header_timeout", "body_timeout"):
            for value in (0, -1, float("inf"), float("nan")):
                self.assertRaises(ValueError, SecureSite, Resource(), reactor=Clock(), **{name: value})


# -- graceful stop: IDrainable ----------------------------------------------------------------------


class Held(Resource):
    """Answers nothing until the test finishes the request (C{held})."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.held.append(request)
        return NOT_DONE_YET


def finish(request: Any, body: bytes = b"late") -> None:
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.write(body)
    request.finish()


class DrainTests(SynchronousTestCase):
    """On drain an idle keep-alive connection closes at once; one with a request in progress answers it, then closes."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.held = Held()
        self.site = SecureSite(self.held, reactor=self.clock)

    def drain(self, connection: Connection) -> None:
        protocol = connection.memory.server_guard.application if connection.tls else connection.protocol
        self.assertTrue(IDrainable.providedBy(protocol))
        protocol.drain()
        if connection.tls:
            connection.memory.pump.flush()

    def test_idleKeepAliveClosesAtOnce(self) -> None:
        """After a keep-alive response, nothing in progress: closed at once, nothing more written."""
        site, _, clock = make_site()
        connection = Connection(site, clock)
        connection.send(HEAD + b"\r\n")
        answered = connection.answer
        self.assertEqual((parse_response(answered).body, connection.closed), (b"ok", False))
        self.drain(connection)
        self.assertEqual((connection.closed, connection.answer), (True, answered))

    def test_freshConnectionClosesAtOnce(self) -> None:
        connection = Connection(self.site, self.clock, tls=True)
        self.drain(connection)
        self.assertEqual((connection.closed, connection.answer), (True, b""))

    def test_requestInProgressFinishesThenCloses(self) -> None:
        """
        Over TLS: a request being answered when the server drains gets its
        whole response, with Connection: close, then the connection closes; a
        request pipelined behind it is not answered.
        """
        connection = Connection(self.site, self.clock, tls=True)
        connection.send(HEAD + b"\r\n" + HEAD + b"\r\n")
        [request] = self.held.held
        self.drain(connection)
        self.assertEqual((connection.closed, connection.answer), (False, b""))
        finish(request)
        connection.memory.pump.flush()
        response = parse_response(connection.answer)
        self.assertEqual((response.code, response.body, response.header("Connection")), (200, b"late", "close"))
        self.assertTrue(connection.closed)
        self.assertEqual(len(self.held.held), 1)
        self.assertEqual(connection.answer.count(b"HTTP/1.1 "), 1)

    def test_headersArrivingWhenDrained(self) -> None:
        """A request whose header block is still arriving is answered (Connection: close), then the connection closes."""
        site, resource, clock = make_site()
        connection = Connection(site, clock)
        connection.send(b"GET /thing HTTP/1.1\r\n")
        self.drain(connection)
        self.assertEqual((connection.closed, connection.answer), (False, b""))
        connection.send(b"Host: localhost\r\n\r\n")
        response = parse_response(connection.answer)
        self.assertEqual((response.body, response.header("Connection"), resource.requests), (b"ok", "close", [b"/thing"]))
        self.assertTrue(connection.closed)

    def test_responseAlreadyStarted(self) -> None:
        """A response whose headers were sent before the drain: it finishes, and the connection closes after it, not before."""
        connection = Connection(self.site, self.clock)
        connection.send(HEAD + b"\r\n")
        [request] = self.held.held
        request.setHeader(b"Content-Length", b"4")
        request.write(b"la")
        self.drain(connection)
        self.assertFalse(connection.closed)
        request.write(b"te")
        self.assertFalse(connection.closed)
        request.finish()
        response = parse_response(connection.answer)
        self.assertEqual((response.body, response.header("Connection")), (b"late", None))
        self.assertTrue(connection.closed)

    def test_notDrainedStaysOpen(self) -> None:
        """Without a drain the same exchange keeps the connection open (the tests above are not the default)."""
        connection = Connection(self.site, self.clock)
        connection.send(HEAD + b"\r\n")
        finish(self.held.held[0])
        response = parse_response(connection.answer)
        self.assertEqual((response.body, response.header("Connection"), connection.closed), (b"late", None, False))
