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

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from securenet.web import SecureSite, TooManyRequests, render_error
from securenet.web._responses import REASON_PHRASES
from tests.web.test_api import Service, exchange_plain, parse_response, raw_request

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
