"""
Helpers to test secure protocols without sockets: an ephemeral PKI and a TLS
connection between a client and a server factory joined in memory
(C{twisted.test.iosim}), driven by a fake clock.

    pki = EphemeralPKI.create()
    conn = connect_in_memory(
        server_policy=pki.server_policy(client_auth="required"),
        client_policy=pki.client_policy(client="alice"),
        server_factory=SessionFactory(MyFactory(), pki.certificate_portal(), clock),
        client_factory=Factory.forProtocol(MyClient),
        clock=clock,
    )
    conn.pump.flush()

Certificates are made at run time; nothing here is ever written to disk
unless you ask (L{EphemeralPKI.save}).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.test import iosim

from securenet.cred.checkers import CertificateChecker
from securenet.cred.sasl import IClientMechanism
from securenet.cred.identity import IdentityRealm
from securenet.pki.ca import CertificateAuthority, IssuedCertificate, default_server_sans, save_ca
from securenet.protocol.client import ClientCredentials, ClientSessionFactory, MechanismChooser
from securenet.protocol.session import SessionFactory
from securenet.tls.guard import TLSGuard, TLSGuardFactory
from securenet.tls.policy import ClientTLSPolicy, ServerTLSCreator, ServerTLSPolicy

SERVER_ADDRESS = IPv4Address("TCP", "127.0.0.1", 8443)
CLIENT_ADDRESS = IPv4Address("TCP", "127.0.0.1", 54321)


@attrs.define
class EphemeralPKI:
    """A CA made for one test run, with a server certificate for localhost."""

    ca: CertificateAuthority
    server: IssuedCertificate
    clients: dict[str, IssuedCertificate] = attrs.field(factory=dict)

    @classmethod
    def create(cls, server_name: str = "localhost") -> EphemeralPKI:
        ca = CertificateAuthority.create("securenet test CA")
        sans = [*default_server_sans(server_name), *default_server_sans("127.0.0.1")]
        return cls(ca, ca.issue("server", server_name, sans=sans))

    def client(self, name: str) -> IssuedCertificate:
        """The client certificate for C{name}, issued on first use."""
        if name not in self.clients:
            self.clients[name] = self.ca.issue("client", name)
        return self.clients[name]

    def server_policy(self, **kwargs: Any) -> ServerTLSPolicy:
        kwargs.setdefault("certificate_chain", (self.server.certificate,))
        kwargs.setdefault("private_key", self.server.key)
        if kwargs.get("client_auth", "none") != "none":
            kwargs.setdefault("trust_roots", (self.ca.certificate,))
        return ServerTLSPolicy(**kwargs)

    def client_policy(self, client: str | IssuedCertificate | None = None, **kwargs: Any) -> ClientTLSPolicy:
        if not kwargs.get("pins") and kwargs.get("tofu") is None:
            kwargs.setdefault("trust_roots", (self.ca.certificate,))
        if client is not None:
            issued = self.client(client) if isinstance(client, str) else client
            kwargs.setdefault("certificate_chain", (issued.certificate, *issued.chain))
            kwargs.setdefault("private_key", issued.key)
        return ClientTLSPolicy(**kwargs)

    def certificate_portal(self, mapping: str = "cn") -> Portal:
        """A portal that accepts verified client certificates, named by C{mapping}."""
        return Portal(IdentityRealm(), [CertificateChecker(mapping)])

    def save(self, directory: Path) -> Path:
        """Write the CA, the server and every client issued so far under C{directory}."""
        directory.mkdir(parents=True, exist_ok=True)
        save_ca(self.ca, directory)
        self.server.save(directory, "server")
        for name, issued in self.clients.items():
            issued.save(directory, name)
        return directory

    @property
    def ca_certificate(self) -> x509.Certificate:
        return self.ca.certificate


@attrs.define
class MemoryConnection:
    """Both ends of an in-memory TLS connection."""

    pump: iosim.IOPump
    server_tls: TLSMemoryBIOProtocol
    client_tls: TLSMemoryBIOProtocol
    client_ready: Deferred[IProtocol]

    @property
    def server_guard(self) -> TLSGuard:
        guard: TLSGuard = self.server_tls.wrappedProtocol  # type: ignore[assignment]
        return guard

    @property
    def client_guard(self) -> TLSGuard:
        guard: TLSGuard = self.client_tls.wrappedProtocol  # type: ignore[assignment]
        return guard


def connect_in_memory(
    *,
    server_policy: ServerTLSPolicy,
    client_policy: ClientTLSPolicy,
    server_factory: IProtocolFactory,
    client_factory: IProtocolFactory,
    clock: Clock,
    hostname: str = "localhost",
    port: int = 8443,
    mechanism: IClientMechanism | MechanismChooser | None = None,
    totp: Callable[[], str] | None = None,
    raw_client: bool = False,
) -> MemoryConnection:
    """
    Join a client and a server through TLS in memory.  Nothing moves until
    you call C{pump.flush()} (or C{pump.pump()}); C{client_ready} fires like
    L{securenet.connect}'s Deferred.

    When C{server_factory} is a L{SessionFactory} the client runs the
    authentication exchange with C{mechanism} (default: EXTERNAL with a
    client certificate, else ANONYMOUS) and C{totp}, as L{securenet.connect}
    does; with C{raw_client=True} the client application gets the exchange's
    lines itself (to drive the protocol by hand, as with C{openssl s_client}).
    """
    ready: Deferred[IProtocol] = Deferred()
    client_guard: TLSGuardFactory
    if isinstance(server_factory, SessionFactory) and not raw_client:
        client_guard = ClientSessionFactory(client_factory, clock, ClientCredentials(mechanism, totp), ready=ready)
    else:
        if not isinstance(server_factory, TLSGuardFactory):
            server_factory = TLSGuardFactory(server_factory, clock)
        client_guard = TLSGuardFactory(client_factory, clock, ready=ready)
    # The clock also drives Twisted's write aggregation (callLater(0)); without
    # it application bytes would wait on the global reactor, which never runs.
    server_tls_factory = TLSMemoryBIOFactory(ServerTLSCreator(server_policy, clock), False, server_factory, clock=clock)
    client_tls_factory = TLSMemoryBIOFactory(client_policy.creator(hostname, port), True, client_guard, clock=clock)
    server_tls = server_tls_factory.buildProtocol(CLIENT_ADDRESS)
    client_tls = client_tls_factory.buildProtocol(SERVER_ADDRESS)
    server_transport = iosim.FakeTransport(server_tls, isServer=True, hostAddress=SERVER_ADDRESS, peerAddress=CLIENT_ADDRESS)
    client_transport = iosim.FakeTransport(client_tls, isServer=False, hostAddress=CLIENT_ADDRESS, peerAddress=SERVER_ADDRESS)
    pump = iosim.connect(server_tls, server_transport, client_tls, client_transport, greet=False, clock=clock)
    return MemoryConnection(pump, server_tls, client_tls, ready)
