"""
securenet.web's HTTPS client policy (L{HTTPSPolicy}) with treq and
C{twisted.web.client.Agent}, against a real TLS server on 127.0.0.1 in this
process: the server is checked by a L{ClientTLSPolicy}, and a refusal is the
TLS layer's typed error (L{PinMismatch}, L{HostnameMismatch}, ...), never a
bare C{OpenSSL.SSL.Error}.
"""

from __future__ import annotations

from typing import Any, cast

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.resource import Resource

from securenet.pki._pins import spki_pin
from securenet.testing import EphemeralPKI
from securenet.tls import HostnameMismatch, PinMismatch, SecureServerEndpoint, ServerTLSPolicy, TLSError, UntrustedCertificate
from securenet.web import HTTPSPolicy, SecureSite

PKI = EphemeralPKI.create()
OTHER = EphemeralPKI.create()
WRONG_PIN = spki_pin(OTHER.server.certificate)


class Counted(Resource):
    """Answers C{hello}; counts the requests that reached it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def render_GET(self, request: Any) -> bytes:
        self.requests += 1
        return b"hello"


class HTTPSPolicyTests(TestCase):
    timeout = 20

    async def setUp(self) -> None:  # type: ignore[override]
        self.resource = Counted()
        self.port = await self.listen(PKI.server_policy())

    async def listen(self, policy: ServerTLSPolicy) -> int:
        endpoint = SecureServerEndpoint(reactor, policy, 0, interface="127.0.0.1")
        port = await endpoint.listen(SecureSite(self.resource, reactor=reactor))
        self.addCleanup(port.stopListening)
        return int(cast(IPv4Address, port.getHost()).port)

    def get(self, host: str = "localhost", **policy: Any) -> Deferred[Any]:
        import treq.client

        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, contextFactory=HTTPSPolicy(PKI.client_policy(**policy)), pool=pool)
        return Deferred.fromCoroutine(self._get(treq.client.HTTPClient(agent), f"https://{host}:{self.port}/"))

    async def _get(self, client: Any, url: str) -> Any:
        import treq

        response = await client.get(url)
        return response.code, await treq.content(response)

    async def assertRefused(self, kind: type[TLSError], **kwargs: Any) -> Any:
        """The request fails, its one reason the typed TLS error; nothing reached the server."""
        failure = await self.assertFailure(self.get(**kwargs), ResponseNeverReceived)
        self.assertEqual(len(failure.reasons), 1, failure.reasons)
        error = failure.reasons[0].value
        self.assertIsInstance(error, kind)
        self.assertEqual(self.resource.requests, 0)
        return error

    async def test_rightPin(self) -> None:
        pin = spki_pin(PKI.server.certificate)
        self.assertEqual(await self.get(pins=[pin]), (200, b"hello"))
        self.assertEqual(self.resource.requests, 1)

    async def test_wrongPin(self) -> None:
        """A wrong pin is a PinMismatch naming the expected and the presented pins (pin-only mode)."""
        error = await self.assertRefused(PinMismatch, pins=[WRONG_PIN])
        self.assertEqual(error.expected, (WRONG_PIN,))
        self.assertEqual(error.presented, (spki_pin(PKI.server.certificate),))
        self.assertEqual(error.subject, "CN=localhost")

    async def test_wrongPinWithTrustRoots(self) -> None:
        """With a CA as well, the pins are checked against the validated chain: still a PinMismatch."""
        error = await self.assertRefused(PinMismatch, pins=[WRONG_PIN], trust_roots=(PKI.ca_certificate,))
        self.assertEqual(error.expected, (WRONG_PIN,))
        self.assertIn(spki_pin(PKI.server.certificate), error.presented)

    async def test_untrusted(self) -> None:
        error = await self.assertRefused(UntrustedCertificate, trust_roots=(OTHER.ca_certificate,))
        self.assertIn("not trusted", str(error))

    async def test_hostnameMismatch(self) -> None:
        """A certificate for another name, from the trusted CA: a HostnameMismatch naming both."""
        elsewhere = PKI.ca.issue("server", "elsewhere.test", sans=[x509.DNSName("elsewhere.test")])
        self.port = await self.listen(PKI.server_policy(certificate_chain=(elsewhere.certificate,), private_key=elsewhere.key))
        error = await self.assertRefused(HostnameMismatch)
        self.assertEqual((error.expected, error.presented), ("localhost", ("DNS:elsewhere.test",)))
