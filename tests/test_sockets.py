"""
On real loopback sockets: what only a kernel can show.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from securenet.protocol.client import connect
from securenet.protocol.session import SessionFactory
from securenet.testing import EphemeralPKI
from securenet.tls.endpoints import SecureClientEndpoint, SecureServerEndpoint

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
        client = SecureClientEndpoint(reactor, PKI.client_policy("alice"), "localhost", port.getHost().port)
        client_protocol = await connect(reactor, client, Factory.forProtocol(Protocol))
        self.addCleanup(client_protocol.transport.loseConnection)  # type: ignore[union-attr]
        [server_protocol] = Recorder.instances
        self.addCleanup(server_protocol.transport.loseConnection)  # type: ignore[union-attr]
        self.assertEqual(tcp_nodelay(server_protocol), 1)
        self.assertEqual(tcp_nodelay(client_protocol), 1)
