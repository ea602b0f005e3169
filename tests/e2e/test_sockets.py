"""
On real loopback sockets: what only a kernel can show.
"""

from __future__ import annotations

import socket
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from securenet.session._client import connect
from securenet.session._server import SessionFactory
from securenet.testing import EphemeralPKI
from securenet.tls._endpoints import SecureClientEndpoint, SecureServerEndpoint

PKI = EphemeralPKI.create()


class Recorder(Protocol):
    instances: list[Recorder] = []

    def connectionMade(self) -> None:
        Recorder.instances.append(self)


def tcp_nodelay(protocol: Protocol) -> int:
    """The TCP_NODELAY option of the socket under a securenet protocol's transport."""
    tls = protocol.transport.transport  # type: ignore[union-attr]  # session -> TLS -> TCP
    sock = tls.transport.getHandle()
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class NoDelayTests(TestCase):
    async def test_bothEndsDisableNagle(self) -> None:
        """Server and client sockets have TCP_NODELAY set (Nagle + delayed ACK cost ~40 ms per response)."""
        Recorder.instances = []
        server = SecureServerEndpoint(reactor, PKI.server_policy(client_auth="required"), 0, "127.0.0.1")
        port = await server.listen(SessionFactory(Factory.forProtocol(Recorder), PKI.certificate_portal(), reactor))
        self.addCleanup(port.stopListening)
        client = SecureClientEndpoint(reactor, PKI.client_policy("alice"), "localhost", cast(IPv4Address, port.getHost()).port)
        client_protocol = cast(Protocol, await connect(reactor, client, Factory.forProtocol(Protocol)))
        self.addCleanup(client_protocol.transport.loseConnection)  # type: ignore[union-attr]
        [server_protocol] = Recorder.instances
        self.addCleanup(server_protocol.transport.loseConnection)  # type: ignore[union-attr]
        self.assertEqual(tcp_nodelay(server_protocol), 1)
        self.assertEqual(tcp_nodelay(client_protocol), 1)


class EchoOnce(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class EarlyClient(Protocol):
    """Writes at once (early data) and reports what comes back, and how the connection ended."""

    def __init__(self) -> None:
        from twisted.internet.defer import Deferred

        self.received = b""
        self.echoed: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.reason: Any = None

    def connectionMade(self) -> None:
        self.transport.write(b"ping")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received == b"ping" and not self.echoed.called:
            self.echoed.callback(self.received)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.lost.callback(None)


class EarlyDataSocketTests(TestCase):
    """securenet.connect(early_data=True) against a real server on loopback (the README's client section)."""

    async def serve(self, portal: object) -> int:
        self.built: list[Protocol] = []

        def build() -> Protocol:
            protocol = EchoOnce()
            self.built.append(protocol)
            return protocol

        server = SecureServerEndpoint(reactor, PKI.server_policy(client_auth="required"), 0, "127.0.0.1")
        port = await server.listen(SessionFactory(Factory.forProtocol(build), portal, reactor))  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        return int(cast(IPv4Address, port.getHost()).port)

    async def test_echoedAfterOK(self) -> None:
        """The app is connected before OK; its early bytes come back once the server has authenticated it."""
        port = await self.serve(PKI.certificate_portal())
        client = SecureClientEndpoint(reactor, PKI.client_policy("alice"), "localhost", port)
        protocol = await connect(reactor, client, Factory.forProtocol(EarlyClient), early_data=True)
        assert isinstance(protocol, EarlyClient)

        def close() -> Any:
            protocol.transport.loseConnection()  # type: ignore[union-attr]
            return protocol.lost

        self.addCleanup(close)
        self.assertEqual(await protocol.echoed, b"ping")
        self.assertEqual(protocol.transport.authenticated_as, "alice")  # type: ignore[union-attr]
        self.assertEqual(len(self.built), 1)

    async def test_refusedEarlyData(self) -> None:
        """A server that does not offer EXTERNAL: the app's connection ends with AuthenticationFailed; no server app."""
        from twisted.cred.checkers import AllowAnonymousAccess
        from twisted.cred.portal import Portal

        from securenet.cred._identity import IdentityRealm
        from securenet.session._errors import AuthenticationFailed

        port = await self.serve(Portal(IdentityRealm(), [AllowAnonymousAccess()]))
        client = SecureClientEndpoint(reactor, PKI.client_policy("alice"), "localhost", port)
        protocol = await connect(reactor, client, Factory.forProtocol(EarlyClient), early_data=True)
        assert isinstance(protocol, EarlyClient)
        await protocol.lost
        self.assertIsInstance(protocol.reason.value, AuthenticationFailed)
        self.assertEqual(protocol.reason.value.code, "UNKNOWN-MECHANISM")
        self.assertEqual((protocol.received, self.built), (b"", []))
