"""
In-memory tests of L{securenet.tls}: certificate, pin and TOFU checks on both
sides, protocol policy (versions, groups, options, resumption), handshake
timeouts, non-TLS peers and the C{tls.handshake} audit events.

Every connection runs through C{twisted.test.iosim} and a L{Clock}; no
sockets.  Every refusal asserts the typed error with its facts, and that no
application byte flowed: the server application was never built and the
client's bytes never arrived.
"""

from __future__ import annotations

import datetime
import functools
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer, providedBy

from securenet.pki._ca import CertificateAuthority, IssuedCertificate, default_server_sans, generate_private_key
from securenet.pki._pins import spki_pin
from securenet.testing import (
    CLIENT_ADDRESS,
    SERVER_ADDRESS,
    EphemeralPKI,
    EventCapture,
    MemoryConnection,
    connect_in_memory,
)
from securenet.tls._binding import set_groups
from securenet.tls._certificates import as_cryptography
from securenet.tls._client import ClientTLSPolicy
from securenet.tls._errors import (
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRejected,
    CertificateRevoked,
    ClientCertificateRequired,
    CRLExpired,
    HandshakeFailed,
    HandshakeTimeout,
    HostnameMismatch,
    NoSharedCipher,
    NotTLS,
    PeerRejectedCertificate,
    PinMismatch,
    ProtocolVersionRejected,
    TLSConfigurationError,
    TLSError,
    TofuMismatch,
    UntrustedCertificate,
)
from securenet.tls._guard import TLSGuard, TLSGuardFactory
from securenet.tls._profiles import INTERMEDIATE, MODERN
from securenet.tls._server import ServerTLSCreator, ServerTLSPolicy
from securenet.tls._tofu import TofuStore
from tests.support.tls import CLIENT_DATA, SERVER_DATA, RecordingFactory, RecordingProtocol, fake_transport, transport_of

# OpenSSL X509_V_ERR_* codes the tests name.
X509_V_ERR_CERT_REVOKED = 23
X509_V_ERR_CRL_HAS_EXPIRED = 12
X509_V_ERR_INVALID_PURPOSE = 26

#: The fields every tls.handshake event carries, ok or failed.
HANDSHAKE_FIELDS = frozenset({"role", "result", "peer", "tls_version", "cipher", "peer_subject", "peer_pin", "reason"})

#: Mozilla "intermediate" TLS 1.2 suites: ECDHE key exchange, AEAD only.
ECDHE_AEAD_SUITES = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    }
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# -- PKI, built once per module ------------------------------------------------


@functools.cache
def pki() -> EphemeralPKI:
    """The CA every test trusts, with a server cert for localhost/127.0.0.1."""
    return EphemeralPKI.create()


@functools.cache
def other_pki() -> EphemeralPKI:
    """A second, untrusted CA (its server cert also names localhost)."""
    return EphemeralPKI.create()


@functools.cache
def expired_server() -> IssuedCertificate:
    """A server certificate of the trusted CA whose notAfter has passed."""
    now = _now()
    return pki().ca.issue(
        "server", "localhost", not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
    )


@functools.cache
def future_server() -> IssuedCertificate:
    """A server certificate of the trusted CA whose notBefore is tomorrow."""
    now = _now()
    return pki().ca.issue(
        "server", "localhost", not_before=now + datetime.timedelta(days=1), not_after=now + datetime.timedelta(days=30)
    )


@functools.cache
def self_signed_server() -> IssuedCertificate:
    """A self-signed (non-CA) server certificate for localhost."""
    key = generate_private_key("ec")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return IssuedCertificate(cert, key)


@functools.cache
def intermediate_hierarchy() -> tuple[x509.Certificate, IssuedCertificate]:
    """
    A root that allows an intermediate, and a server certificate for
    localhost issued by that intermediate: (root, leaf with chain=(intermediate,)).
    """
    now = _now()

    def ca_certificate(name: str, key: Any, issuer: x509.Name, signer: Any) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(signer, hashes.SHA256())
        )

    root_key, intermediate_key = generate_private_key("ec"), generate_private_key("ec")
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chain test root")])
    root = ca_certificate("chain test root", root_key, root_name, root_key)
    intermediate = ca_certificate("chain test intermediate", intermediate_key, root.subject, root_key)
    leaf = CertificateAuthority(intermediate, intermediate_key).issue("server", "localhost")
    return root, attrs.evolve(leaf, chain=(intermediate,))


def serving(issued: IssuedCertificate, **kwargs: Any) -> ServerTLSPolicy:
    """A server policy presenting C{issued}."""
    return pki().server_policy(certificate_chain=(issued.certificate, *issued.chain), private_key=issued.key, **kwargs)


class RecordingGuard(TLSGuard):
    """A guard that records the typed failure of a connection that never reached the app."""

    factory: RecordingGuardFactory

    def connectionLostBeforeApplication(self, failure: Failure) -> None:
        self.factory.failures.append(failure)


class RecordingGuardFactory(TLSGuardFactory):
    protocol = RecordingGuard

    def __init__(self, wrappedFactory: Factory, reactor: Any, **kwargs: Any) -> None:
        super().__init__(wrappedFactory, reactor, **kwargs)
        self.failures: list[Failure] = []
        self.guards: list[TLSGuard] = []

    def buildProtocol(self, addr: IAddress | None) -> TLSGuard:
        guard = super().buildProtocol(addr)
        self.guards.append(guard)
        return guard


@attrs.define
class Run:
    """One in-memory connection made by L{handshake}, and what both apps saw."""

    conn: MemoryConnection
    clock: Clock
    server_guards: RecordingGuardFactory
    server_apps: RecordingFactory
    client_apps: RecordingFactory
    client_guard: TLSGuard
    ready: list[object]

    def client_app(self) -> RecordingProtocol:
        [app] = self.client_apps.built
        return app

    def server_app(self) -> RecordingProtocol:
        [app] = self.server_apps.built
        return app

    def server_error(self) -> BaseException:
        """The typed error the server guard reported (exactly one)."""
        [failure] = self.server_guards.failures
        assert failure.value is not None
        return failure.value

    def client_error(self) -> BaseException:
        """The error the client's ready Deferred failed with."""
        [result] = self.ready
        assert isinstance(result, Failure), f"client connected: {result!r}"
        assert result.value is not None
        return result.value


def handshake(
    server_policy: ServerTLSPolicy,
    client_policy: ClientTLSPolicy,
    *,
    hostname: str = "localhost",
    port: int = 8443,
    clock: Clock | None = None,
) -> Run:
    """Connect a recording client app to a recording server app over TLS and pump to quiescence."""
    clock = clock or Clock()
    server_apps = RecordingFactory(SERVER_DATA)
    client_apps = RecordingFactory(CLIENT_DATA)
    guards = RecordingGuardFactory(server_apps, clock)
    conn = connect_in_memory(
        server_policy=server_policy,
        client_policy=client_policy,
        server_factory=guards,
        client_factory=client_apps,
        clock=clock,
        hostname=hostname,
        port=port,
    )
    client_guard = conn.client_guard
    ready: list[object] = []
    conn.client_ready.addBoth(ready.append)
    conn.pump.flush()
    return Run(conn, clock, guards, server_apps, client_apps, client_guard, ready)


@implementer(IOpenSSLClientConnectionCreator)
class RawClientCreator:
    """A pyOpenSSL client with a context of the test's choosing (and optionally a session to resume)."""

    def __init__(self, context: SSL.Context, session: SSL.Session | None = None) -> None:
        self.context = context
        self.session = session
        self.connections: list[SSL.Connection] = []

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self.context, None)
        conn.set_connect_state()
        if self.session is not None:
            conn.set_session(self.session)
        self.connections.append(conn)
        return conn


@implementer(IOpenSSLClientConnectionCreator)
class ResumingCreator:
    """A securenet client creator whose connections offer C{session} for resumption."""

    def __init__(self, inner: Any, session: SSL.Session | None = None) -> None:
        self.inner = inner
        self.session = session
        self.connections: list[SSL.Connection] = []

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn: SSL.Connection = self.inner.clientConnectionForTLS(tlsProtocol)
        if self.session is not None:
            conn.set_session(self.session)
        self.connections.append(conn)
        return conn


@attrs.define
class Pair:
    server_tls: TLSMemoryBIOProtocol
    client_tls: TLSMemoryBIOProtocol
    pump: iosim.IOPump
    server_guards: RecordingGuardFactory
    server_apps: RecordingFactory

    def server_error(self) -> BaseException:
        [failure] = self.server_guards.failures
        assert failure.value is not None
        return failure.value

    def server_handshake(self) -> Any:
        [guard] = self.server_guards.guards
        return guard.handshake


def join(
    server_creator: ServerTLSCreator,
    client_creator: Any,
    client_factory: IProtocolFactory,
    clock: Clock,
) -> Pair:
    """Join a securenet server (shared C{server_creator}) to any client creator, in memory."""
    server_apps = RecordingFactory(SERVER_DATA)
    guards = RecordingGuardFactory(server_apps, clock)
    server_tls = TLSMemoryBIOFactory(server_creator, False, guards, clock=clock).buildProtocol(CLIENT_ADDRESS)
    client_tls = TLSMemoryBIOFactory(client_creator, True, client_factory, clock=clock).buildProtocol(SERVER_ADDRESS)
    pump = _connect(server_tls, client_tls, clock)
    return Pair(server_tls, client_tls, pump, guards, server_apps)


def _connect(server: IProtocol, client: IProtocol, clock: Clock) -> iosim.IOPump:
    st = iosim.FakeTransport(server, isServer=True, hostAddress=SERVER_ADDRESS, peerAddress=CLIENT_ADDRESS)
    ct = iosim.FakeTransport(client, isServer=False, hostAddress=CLIENT_ADDRESS, peerAddress=SERVER_ADDRESS)
    pump: iosim.IOPump = iosim.connect(server, st, client, ct, greet=False, clock=clock)
    pump.flush()
    return pump


def raw_context(
    *,
    min_version: int | None = None,
    max_version: int | None = None,
    ciphers: bytes | None = None,
    groups: tuple[str, ...] | None = None,
) -> SSL.Context:
    """A bare pyOpenSSL client context (it does not verify the server)."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    if min_version is not None:
        ctx.set_min_proto_version(min_version)
    if max_version is not None:
        ctx.set_max_proto_version(max_version)
    if ciphers is not None:
        ctx.set_cipher_list(ciphers)
    if groups is not None:
        set_groups(ctx, groups)
    ctx.set_verify(SSL.VERIFY_NONE)
    return ctx


class TLSTestCase(SynchronousTestCase):
    """Shared assertions."""

    def setUp(self) -> None:
        self.log = EventCapture(self)

    def assertNoApplicationBytes(self, run: Run | Pair) -> None:
        """The server application was never built, so the client's bytes reached nothing."""
        self.assertEqual(run.server_apps.built, [])
        self.assertEqual(run.server_apps.received, b"")

    def assertRefusedBeforeClientApp(self, run: Run) -> None:
        """The client application was never built (nothing of it was sent), and TCP is closed."""
        self.assertEqual(run.client_apps.built, [])
        self.assertNoApplicationBytes(run)
        self.assertTrue(fake_transport(run.conn.client_tls).disconnected)
        self.assertTrue(fake_transport(run.conn.server_tls).disconnected)

    def assertClientLostWith(self, run: Run, kind: type[BaseException]) -> BaseException:
        """
        TLS 1.3: the client's handshake completed, its app was connected and
        wrote, and the server's refusal arrived as its connectionLost reason.
        """
        app = run.client_app()
        self.assertIsNotNone(app.lost)
        assert app.lost is not None
        self.assertIsInstance(app.lost.value, kind)
        self.assertEqual(app.received, [])
        self.assertNoApplicationBytes(run)
        assert app.lost.value is not None
        return app.lost.value

    def handshakeEvent(self, role: str) -> dict[str, Any]:
        """The one tls.handshake event of C{role}, with all its fields."""
        events = self.log.of("tls.handshake", role=role)
        self.assertEqual(len(events), 1, events)
        self.assertLessEqual(HANDSHAKE_FIELDS, set(events[0]))
        return events[0]

    def assertServerEvent(self, kind: type[BaseException]) -> dict[str, Any]:
        event = self.handshakeEvent("server")
        self.assertEqual(event["result"], "failed")
        self.assertEqual(event["error_type"], kind.__name__)
        return event

    def assertConnected(self, run: Run) -> None:
        """Positive control: both apps connected and the bytes went both ways."""
        self.assertEqual(run.server_apps.received, CLIENT_DATA)
        self.assertEqual(b"".join(run.client_app().received), SERVER_DATA)
        self.assertEqual(run.server_guards.failures, [])


# -- server certificate checks on the client -------------------------------------


class ServerCertificateTests(TLSTestCase):
    """The client refuses a bad server certificate before any app byte flows."""

    def test_trustedServerConnects(self) -> None:
        """Positive control: a valid server certificate of the trusted CA connects and carries bytes."""
        run = handshake(pki().server_policy(), pki().client_policy())
        self.assertConnected(run)
        self.assertIs(run.ready[0], run.client_app())

    def test_expired(self) -> None:
        """An expired server certificate: CertificateExpired naming it, at depth 0."""
        run = handshake(serving(expired_server()), pki().client_policy())
        error = run.client_error()
        self.assertIsInstance(error, CertificateExpired)
        assert isinstance(error, CertificateExpired)
        self.assertEqual(error.subject, "CN=localhost")
        self.assertEqual(error.depth, 0)
        self.assertIn(expired_server().certificate.not_valid_after_utc.isoformat(), str(error))
        self.assertRefusedBeforeClientApp(run)
        self.assertIsInstance(run.server_error(), PeerRejectedCertificate)

    def test_notYetValid(self) -> None:
        """A server certificate valid only from tomorrow: CertificateNotYetValid."""
        run = handshake(serving(future_server()), pki().client_policy())
        error = run.client_error()
        self.assertIsInstance(error, CertificateNotYetValid)
        assert isinstance(error, CertificateNotYetValid)
        self.assertEqual((error.subject, error.depth), ("CN=localhost", 0))
        self.assertRefusedBeforeClientApp(run)

    def test_wrongHost(self) -> None:
        """Connecting to other.example with a localhost certificate: HostnameMismatch with both sides' names."""
        run = handshake(pki().server_policy(), pki().client_policy(), hostname="other.example")
        error = run.client_error()
        self.assertIsInstance(error, HostnameMismatch)
        assert isinstance(error, HostnameMismatch)
        self.assertEqual(error.expected, "other.example")
        self.assertEqual(error.presented, ("DNS:localhost", "IP:127.0.0.1"))
        self.assertRefusedBeforeClientApp(run)
        # The client aborts with an internal-error alert; the server says so.
        self.assertIsInstance(run.server_error(), HandshakeFailed)

    def test_ipAddressHost(self) -> None:
        """Connecting by IP checks the IP SAN: 127.0.0.1 matches, 127.0.0.2 does not."""
        self.assertConnected(handshake(pki().server_policy(), pki().client_policy(), hostname="127.0.0.1"))
        run = handshake(pki().server_policy(), pki().client_policy(), hostname="127.0.0.2")
        error = run.client_error()
        self.assertIsInstance(error, HostnameMismatch)
        assert isinstance(error, HostnameMismatch)
        self.assertEqual(error.expected, "127.0.0.2")
        self.assertNoApplicationBytes(run)

    def test_selfSigned(self) -> None:
        """A self-signed server certificate is not a trusted root: UntrustedCertificate."""
        run = handshake(serving(self_signed_server()), pki().client_policy())
        error = run.client_error()
        self.assertIsInstance(error, UntrustedCertificate)
        assert isinstance(error, UntrustedCertificate)
        self.assertEqual((error.subject, error.depth), ("CN=localhost", 0))
        self.assertIn("self-signed", str(error))
        self.assertRefusedBeforeClientApp(run)

    def test_untrustedCA(self) -> None:
        """A server certificate from another CA: UntrustedCertificate naming that issuer."""
        run = handshake(other_pki().server_policy(), pki().client_policy())
        error = run.client_error()
        self.assertIsInstance(error, UntrustedCertificate)
        assert isinstance(error, UntrustedCertificate)
        self.assertEqual(error.subject, "CN=localhost")
        self.assertIn(other_pki().ca.certificate.subject.rfc4514_string(), str(error))
        self.assertRefusedBeforeClientApp(run)
        self.assertIsInstance(run.server_error(), PeerRejectedCertificate)


class PinTests(TLSTestCase):
    """SPKI pins, with and without a CA."""

    def test_wrongPin(self) -> None:
        """CA mode, pin of another key: PinMismatch lists the expected pin and every presented one."""
        wanted = spki_pin(other_pki().server.certificate)
        run = handshake(
            pki().server_policy(),
            pki().client_policy(trust_roots=(pki().ca_certificate,), pins=[wanted]),
        )
        error = run.client_error()
        self.assertIsInstance(error, PinMismatch)
        assert isinstance(error, PinMismatch)
        self.assertEqual(error.expected, (wanted,))
        self.assertEqual(set(error.presented), {spki_pin(pki().server.certificate), spki_pin(pki().ca_certificate)})
        self.assertIn(wanted, str(error))
        self.assertRefusedBeforeClientApp(run)

    def test_caPinInCAMode(self) -> None:
        """CA mode: a pin of the CA (not the leaf) matches, because any cert of the validated chain may match."""
        run = handshake(
            pki().server_policy(),
            pki().client_policy(trust_roots=(pki().ca_certificate,), pins=[spki_pin(pki().ca_certificate)]),
        )
        self.assertConnected(run)

    def test_caPinDoesNotRescueUntrustedChain(self) -> None:
        """CA mode: the right leaf pin does not make a server from an untrusted CA acceptable."""
        run = handshake(
            other_pki().server_policy(),
            pki().client_policy(trust_roots=(pki().ca_certificate,), pins=[spki_pin(other_pki().server.certificate)]),
        )
        self.assertIsInstance(run.client_error(), UntrustedCertificate)
        self.assertRefusedBeforeClientApp(run)

    def test_pinOnlySelfSignedRightPin(self) -> None:
        """Pin-only mode: a self-signed server with the pinned key connects."""
        issued = self_signed_server()
        run = handshake(serving(issued), pki().client_policy(pins=[spki_pin(issued.certificate)]))
        self.assertConnected(run)
        assert run.client_guard.handshake is not None and run.client_guard.handshake.peer_certificate is not None
        self.assertEqual(run.client_guard.handshake.peer_certificate.pin, spki_pin(issued.certificate))

    def test_pinOnlySelfSignedWrongPin(self) -> None:
        """Pin-only mode: a self-signed server with another key is refused with PinMismatch naming its pin."""
        issued = self_signed_server()
        wanted = spki_pin(pki().server.certificate)
        run = handshake(serving(issued), pki().client_policy(pins=[wanted]))
        error = run.client_error()
        self.assertIsInstance(error, PinMismatch)
        assert isinstance(error, PinMismatch)
        self.assertEqual(error.expected, (wanted,))
        self.assertEqual(error.presented, (spki_pin(issued.certificate),))
        self.assertRefusedBeforeClientApp(run)

    def test_pinOnlyStillRefusesExpired(self) -> None:
        """Pin-only mode ignores chain building, not validity: an expired cert with the right pin is refused."""
        issued = expired_server()
        run = handshake(serving(issued), pki().client_policy(pins=[spki_pin(issued.certificate)]))
        self.assertIsInstance(run.client_error(), CertificateExpired)
        self.assertRefusedBeforeClientApp(run)

    def test_binaryPinMustBe32Bytes(self) -> None:
        """A binary pin that is not a SHA-256 digest is refused at construction."""
        with self.assertRaises(TLSConfigurationError):
            ClientTLSPolicy(pins=[b"short"])


class TofuTests(TLSTestCase):
    """Trust on first use."""

    def test_firstUseRecordsThenMismatchRefused(self) -> None:
        """
        First use records C{host:port pin} in the file; a different server key
        on the same host:port is then refused with TofuMismatch naming both
        pins and the store, and the file is left as it was.
        """
        path = Path(self.mktemp()) / "known_servers"
        first = pki().server.certificate
        run = handshake(pki().server_policy(), pki().client_policy(tofu=TofuStore.load(path)), port=8443)
        self.assertConnected(run)
        recorded_line = f"localhost:8443 {spki_pin(first)}\n"
        self.assertEqual(path.read_text("utf-8"), recorded_line)
        self.assertEqual(len(self.log.of("tls.tofu_recorded", host="localhost", port=8443)), 1)

        # Same key again (a fresh client reading the file): accepted, nothing appended.
        self.assertConnected(handshake(pki().server_policy(), pki().client_policy(tofu=TofuStore.load(path))))
        self.assertEqual(path.read_text("utf-8"), recorded_line)

        # Another key on the same host:port.
        run = handshake(other_pki().server_policy(), pki().client_policy(tofu=TofuStore.load(path)))
        error = run.client_error()
        self.assertIsInstance(error, TofuMismatch)
        assert isinstance(error, TofuMismatch)
        self.assertEqual((error.host, error.port), ("localhost", 8443))
        self.assertEqual(error.recorded, spki_pin(first))
        self.assertEqual(error.presented, spki_pin(other_pki().server.certificate))
        self.assertEqual(error.store, str(path))
        self.assertIn(str(path), str(error))
        self.assertRefusedBeforeClientApp(run)
        self.assertEqual(path.read_text("utf-8"), recorded_line)

    def test_notRecordedWhenHandshakeFails(self) -> None:
        """
        The pin is recorded only once the handshake completes (the server has
        proven it holds the key): a TLS 1.2 handshake that the server aborts
        after the client checked its certificate records nothing.
        """
        path = Path(self.mktemp()) / "known_servers"
        tls12 = attrs.evolve(INTERMEDIATE, max_version=SSL.TLS1_2_VERSION)
        run = handshake(
            pki().server_policy(client_auth="required"),
            pki().client_policy(tofu=TofuStore.load(path), profile=tls12),
        )
        self.assertFalse(run.client_guard.handshake)
        self.assertFalse(path.exists())
        self.assertEqual(self.log.of("tls.tofu_recorded"), [])
        self.assertRefusedBeforeClientApp(run)

    def test_unreadableStoreRefused(self) -> None:
        """A TOFU path that is a directory is refused with TLSConfigurationError naming it."""
        path = Path(self.mktemp())
        path.mkdir()
        with self.assertRaises(TLSConfigurationError) as caught:
            TofuStore.load(path)
        self.assertIn(str(path), str(caught.exception))

    def test_otherPortIsAnotherServer(self) -> None:
        """The store is keyed by host:port: a new port is a first use, recorded on its own line."""
        path = Path(self.mktemp()) / "known_servers"
        self.assertConnected(handshake(pki().server_policy(), pki().client_policy(tofu=TofuStore.load(path)), port=1))
        self.assertConnected(handshake(other_pki().server_policy(), pki().client_policy(tofu=TofuStore.load(path)), port=2))
        self.assertEqual(
            path.read_text("utf-8").splitlines(),
            [f"localhost:1 {spki_pin(pki().server.certificate)}", f"localhost:2 {spki_pin(other_pki().server.certificate)}"],
        )

    def test_malformedLineRefused(self) -> None:
        """A malformed line in the TOFU file is refused naming file:line."""
        path = Path(self.mktemp())
        path.write_text(f"# known servers\nlocalhost:8443 {spki_pin(pki().server.certificate)}\nthis line is wrong\n")
        with self.assertRaises(TLSConfigurationError) as caught:
            TofuStore.load(path)
        self.assertIn(f"{path}:3", str(caught.exception))

    def test_badPinLineRefused(self) -> None:
        """A line whose pin is not sha256/<32 bytes> is refused naming file:line."""
        path = Path(self.mktemp())
        path.write_text("localhost:8443 sha256/AAAA\n")
        with self.assertRaises(TLSConfigurationError) as caught:
            TofuStore.load(path)
        self.assertIn(f"{path}:1", str(caught.exception))


# -- client certificate checks on the server -------------------------------------


class ClientCertificateTests(TLSTestCase):
    """The server refuses a bad or missing client certificate; the app is never built."""

    def test_requiredAndPresented(self) -> None:
        """Positive control: a client certificate of the trusted CA is accepted and its facts recorded."""
        run = handshake(pki().server_policy(client_auth="required"), pki().client_policy(client="alice"))
        self.assertConnected(run)
        [guard] = run.server_guards.guards
        assert guard.handshake is not None and guard.handshake.peer_certificate is not None
        self.assertEqual(guard.handshake.peer_certificate.subject, "CN=alice")
        self.assertEqual(guard.handshake.peer_chain[0], pki().client("alice").certificate)

    def test_guardProvidesWhatTheTransportProvides(self) -> None:
        """
        Like a ProtocolWrapper, the guard provides its TLS transport's
        interfaces (ISSLTransport, ITCPTransport, ...); connections over the
        same kind of transport share one declaration.
        """
        guards = []
        for _ in range(2):
            run = handshake(pki().server_policy(client_auth="required"), pki().client_policy(client="alice"))
            self.assertConnected(run)
            [guard] = run.server_guards.guards
            guards.append(guard)
            self.assertTrue(set(providedBy(guard.transport)) <= set(providedBy(guard)))
            self.assertTrue(ISSLTransport.providedBy(guard))
            self.assertTrue(ITCPTransport.providedBy(run.server_app().transport))
        self.assertIs(getattr(guards[0], "__provides__"), getattr(guards[1], "__provides__"))  # noqa: B009 - a dunder mypy cannot type

    def test_certificatesConvertedOnce(self) -> None:
        """
        A certificate pyOpenSSL hands us is parsed once and then shared:
        two connections from one client hold the very same leaf object
        (not one copy per connection), equal to the certificate issued;
        another certificate is another object.
        """
        leaves = []
        for _ in range(2):
            run = handshake(pki().server_policy(client_auth="required"), pki().client_policy(client="alice"))
            self.assertConnected(run)
            [guard] = run.server_guards.guards
            assert guard.handshake is not None
            leaves.append(guard.handshake.peer_chain[0])
        self.assertIs(leaves[0], leaves[1])
        self.assertEqual(leaves[0], pki().client("alice").certificate)
        converted = as_cryptography(X509.from_cryptography(pki().client("alice").certificate))
        self.assertIs(converted, leaves[0])
        self.assertIsNot(as_cryptography(X509.from_cryptography(pki().ca.certificate)), converted)

    def test_requiredButMissing(self) -> None:
        """
        clientAuth=required, no client cert: the server's error is
        ClientCertificateRequired; with TLS 1.3 the client's handshake
        completes and the refusal arrives on its first read.
        """
        run = handshake(pki().server_policy(client_auth="required"), pki().client_policy())
        self.assertIsInstance(run.server_error(), ClientCertificateRequired)
        assert run.client_guard.handshake is not None
        self.assertEqual(run.client_guard.handshake.tls_version, "TLSv1.3")
        self.assertClientLostWith(run, ClientCertificateRequired)
        self.assertServerEvent(ClientCertificateRequired)

    def test_fromAnotherCA(self) -> None:
        """A client certificate from an untrusted CA: server UntrustedCertificate, client PeerRejectedCertificate."""
        run = handshake(pki().server_policy(client_auth="required"), pki().client_policy(client=other_pki().client("mallory")))
        error = run.server_error()
        self.assertIsInstance(error, UntrustedCertificate)
        assert isinstance(error, UntrustedCertificate)
        self.assertEqual(error.subject, "CN=mallory")
        self.assertClientLostWith(run, PeerRejectedCertificate)

    def test_revoked(self) -> None:
        """A client certificate listed in the CRL: CertificateRevoked; the client hears it is refused."""
        revoked = pki().ca.issue("client", "revoked-bob")
        crl = pki().ca.crl([(revoked.certificate.serial_number, _now() - datetime.timedelta(hours=1))])
        run = handshake(pki().server_policy(client_auth="required", crl=crl), pki().client_policy(client=revoked))
        error = run.server_error()
        self.assertIsInstance(error, CertificateRevoked)
        assert isinstance(error, CertificateRevoked)
        self.assertEqual((error.subject, error.depth, error.code), ("CN=revoked-bob", 0, X509_V_ERR_CERT_REVOKED))
        self.assertClientLostWith(run, PeerRejectedCertificate)

    def test_notRevokedWithSameCRL(self) -> None:
        """Positive control for the CRL: a certificate not in it is accepted."""
        revoked = pki().ca.issue("client", "revoked-bob")
        crl = pki().ca.crl([(revoked.certificate.serial_number, _now() - datetime.timedelta(hours=1))])
        run = handshake(pki().server_policy(client_auth="required", crl=crl), pki().client_policy(client="alice"))
        self.assertConnected(run)

    def test_staleCRLRefusesEveryone(self) -> None:
        """A CRL past its next-update refuses every client certificate with CRLExpired, and the event says so."""
        now = _now()
        stale = pki().ca.crl([], last_update=now - datetime.timedelta(days=10), next_update=now - datetime.timedelta(days=1))
        policy = pki().server_policy(client_auth="required", crl=stale, crl_source="/etc/securenet/crl.pem")
        for name in ("alice", "carol"):
            self.log.events.clear()
            run = handshake(policy, pki().client_policy(client=name))
            error = run.server_error()
            self.assertIsInstance(error, CRLExpired)
            assert isinstance(error, CRLExpired)
            self.assertEqual((error.subject, error.code), (f"CN={name}", X509_V_ERR_CRL_HAS_EXPIRED))
            self.assertClientLostWith(run, PeerRejectedCertificate)
            event = self.assertServerEvent(CRLExpired)
            self.assertIn("/etc/securenet/crl.pem is past its next-update", event["reason"])
            self.assertEqual(event["peer_subject"], f"CN={name}")

    def test_optionalWithoutCertificate(self) -> None:
        """clientAuth=optional and no client cert: the handshake succeeds with no peer certificate."""
        run = handshake(pki().server_policy(client_auth="optional"), pki().client_policy())
        self.assertConnected(run)
        [guard] = run.server_guards.guards
        assert guard.handshake is not None
        self.assertIsNone(guard.handshake.peer_certificate)
        self.assertEqual(guard.handshake.peer_chain, ())

    def test_optionalStillVerifiesAPresentedCertificate(self) -> None:
        """clientAuth=optional does not accept a bad certificate: one from another CA is refused."""
        run = handshake(pki().server_policy(client_auth="optional"), pki().client_policy(client=other_pki().client("mallory")))
        self.assertIsInstance(run.server_error(), UntrustedCertificate)
        self.assertClientLostWith(run, PeerRejectedCertificate)

    def test_serverCertificateAsClientCertificate(self) -> None:
        """A certificate whose EKU is serverAuth only is refused as a client certificate."""
        run = handshake(pki().server_policy(client_auth="required"), pki().client_policy(client=pki().server))
        error = run.server_error()
        self.assertIsInstance(error, CertificateRejected)
        assert isinstance(error, CertificateRejected)
        self.assertEqual((error.code, error.depth), (X509_V_ERR_INVALID_PURPOSE, 0))
        self.assertIn("extended key usage", str(error))
        self.assertClientLostWith(run, PeerRejectedCertificate)

    def test_policyConflicts(self) -> None:
        """Conflicting server settings are refused at construction."""
        with self.assertRaises(TLSConfigurationError) as caught:
            ServerTLSPolicy(certificate_chain=(pki().server.certificate,), private_key=pki().server.key, client_auth="required")
        self.assertIn("trustRoots", str(caught.exception))
        with self.assertRaises(TLSConfigurationError):
            pki().server_policy(crl=pki().ca.crl([]))
        with self.assertRaises(TLSConfigurationError):
            pki().server_policy(client_auth="maybe")
        for bad in (0.0, -1.0, float("inf"), float("nan")):
            with self.assertRaises(TLSConfigurationError):
                pki().server_policy(handshake_timeout=bad)
            with self.assertRaises(TLSConfigurationError):
                pki().client_policy(handshake_timeout=bad)


class ServerChainTests(TLSTestCase):
    """The server sends the chain of certKey: never the trust roots it verifies clients with."""

    def sent_chain(self, run: Run) -> list[x509.Certificate]:
        """The certificates the server sent, as the client received them (leaf first)."""
        self.assertConnected(run)
        chain = run.conn.client_tls.getHandle().get_peer_cert_chain(as_cryptography=True)
        assert chain is not None
        return list(chain)

    def test_trustRootsNotSent(self) -> None:
        """
        With trustRoots (the CA that issued the server certificate too), the
        server sends its certificate alone: OpenSSL would otherwise complete
        the chain from the verification store and send the anchor (sslyze:
        "Received chain contains anchor").
        """
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            run = handshake(
                pki().server_policy(client_auth="required"),
                pki().client_policy(client="alice", profile=attrs.evolve(INTERMEDIATE, max_version=version)),
            )
            self.assertEqual(self.sent_chain(run), [pki().server.certificate], version)

    def test_intermediatesOfCertKeySent(self) -> None:
        """The intermediates certKey holds are sent, the root is not (even when it is among trustRoots)."""
        root, issued = intermediate_hierarchy()
        run = handshake(
            serving(issued, client_auth="required", trust_roots=(pki().ca.certificate, root)),
            pki().client_policy(client="alice", trust_roots=(root,)),
        )
        self.assertEqual(self.sent_chain(run), [issued.certificate, *issued.chain])

    def test_clientSendsItsCertificateOnly(self) -> None:
        """The client's certificate, likewise, goes without the CA that is among its trust roots."""
        run = handshake(pki().server_policy(client_auth="required"), pki().client_policy(client="alice"))
        self.assertConnected(run)
        handle = run.conn.server_tls.getHandle()
        # A server's peer chain is what the client sent besides its certificate.
        self.assertEqual(list(handle.get_peer_cert_chain(as_cryptography=True) or ()), [])
        self.assertEqual(handle.get_peer_certificate(as_cryptography=True), pki().client("alice").certificate)


# -- protocol policy -----------------------------------------------------------


class ProtocolTests(TLSTestCase):
    """Versions, suites, groups, options and resumption."""

    def rawClient(self, server_policy: ServerTLSPolicy, context: SSL.Context) -> tuple[Pair, RecordingFactory]:
        clock = Clock()
        client_apps = RecordingFactory(CLIENT_DATA)
        pair = join(ServerTLSCreator(server_policy, clock), RawClientCreator(context), client_apps, clock)
        return pair, client_apps

    def test_tls11Refused(self) -> None:
        """A TLS 1.1-only client is refused: ProtocolVersionRejected; its buffered bytes go nowhere."""
        pair, client = self.rawClient(
            pki().server_policy(),
            raw_context(min_version=SSL.TLS1_1_VERSION, max_version=SSL.TLS1_1_VERSION, ciphers=b"DEFAULT@SECLEVEL=0"),
        )
        self.assertIsInstance(pair.server_error(), ProtocolVersionRejected)
        self.assertNoApplicationBytes(pair)
        self.assertServerEvent(ProtocolVersionRejected)
        self.assertTrue(fake_transport(pair.server_tls).disconnected)

    def test_tls12RefusedByModern(self) -> None:
        """The modern profile refuses a TLS 1.2-only client the same way."""
        pair, _ = self.rawClient(
            pki().server_policy(profile=MODERN),
            raw_context(min_version=SSL.TLS1_2_VERSION, max_version=SSL.TLS1_2_VERSION),
        )
        self.assertIsInstance(pair.server_error(), ProtocolVersionRejected)
        self.assertNoApplicationBytes(pair)

    def test_intermediateNegotiatesTLS13(self) -> None:
        """An intermediate server and a default securenet client agree on TLS 1.3."""
        run = handshake(pki().server_policy(profile=INTERMEDIATE), pki().client_policy())
        self.assertConnected(run)
        [guard] = run.server_guards.guards
        assert guard.handshake is not None and run.client_guard.handshake is not None
        self.assertEqual(guard.handshake.tls_version, "TLSv1.3")
        self.assertEqual(run.client_guard.handshake.tls_version, "TLSv1.3")

    def test_tls12ClientGetsECDHEAEAD(self) -> None:
        """A client capped at TLS 1.2 gets an ECDHE AEAD suite from the intermediate profile."""
        pair, client = self.rawClient(pki().server_policy(), raw_context(max_version=SSL.TLS1_2_VERSION))
        facts = pair.server_handshake()
        self.assertEqual(facts.tls_version, "TLSv1.2")
        self.assertIn(facts.cipher, ECDHE_AEAD_SUITES)
        self.assertEqual(pair.server_apps.received, CLIENT_DATA)

    def test_tls12ClientWithOnlyCBCRefused(self) -> None:
        """A TLS 1.2 client offering only CBC suites finds no shared cipher."""
        pair, _ = self.rawClient(
            pki().server_policy(),
            raw_context(max_version=SSL.TLS1_2_VERSION, ciphers=b"ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"),
        )
        self.assertIsInstance(pair.server_error(), NoSharedCipher)
        self.assertNoApplicationBytes(pair)

    def test_groupsRestricted(self) -> None:
        """
        The server's key-exchange groups are restricted (through the private
        binding): a client offering only X448 or only P-521 is refused, an
        X25519-only client is served.  This guards L{set_groups}.
        """
        for groups in (("X448",), ("P-521",)):
            for max_version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
                self.log.events.clear()
                pair, _ = self.rawClient(pki().server_policy(), raw_context(max_version=max_version, groups=groups))
                self.assertIsInstance(pair.server_error(), (NoSharedCipher, HandshakeFailed), groups)
                self.assertNoApplicationBytes(pair)
        pair, _ = self.rawClient(pki().server_policy(), raw_context(groups=("X25519",)))
        self.assertEqual(pair.server_handshake().group, "x25519")
        self.assertEqual(pair.server_apps.received, CLIENT_DATA)

    def test_setGroupsRefusesUnknownGroup(self) -> None:
        """set_groups reports OpenSSL's refusal as a typed configuration error."""
        with self.assertRaises(TLSConfigurationError):
            set_groups(SSL.Context(SSL.TLS_METHOD), ("no-such-group",))

    def test_contextOptions(self) -> None:
        """
        Compression and renegotiation are off on server and client contexts,
        idle connections release their buffers; no session cache when disabled.
        """
        contexts = {
            "server": pki().server_policy().make_context(),
            "client": pki().client_policy().context,
        }
        for side, ctx in contexts.items():
            options = ctx.set_options(0)  # returns the current options
            self.assertTrue(options & SSL.OP_NO_COMPRESSION, side)
            self.assertTrue(options & SSL.OP_NO_RENEGOTIATION, side)
            self.assertTrue(ctx.set_mode(0) & SSL.MODE_RELEASE_BUFFERS, side)  # returns the current mode
        # Resumption comes from the session cache, never from stateless tickets.
        self.assertTrue(pki().server_policy().make_context().set_options(0) & SSL.OP_NO_TICKET)
        self.assertNotEqual(pki().server_policy().make_context().get_session_cache_mode(), SSL.SESS_CACHE_OFF)
        self.assertEqual(pki().server_policy(session_tickets=False).make_context().get_session_cache_mode(), SSL.SESS_CACHE_OFF)

    def resumingConnect(
        self, creator: ServerTLSCreator, client_policy: ClientTLSPolicy, session: SSL.Session | None, clock: Clock
    ) -> tuple[Pair, ResumingCreator]:
        client_creator = ResumingCreator(client_policy.creator("localhost", 8443), session)
        client_apps = RecordingFactory(CLIENT_DATA)
        client_guards = RecordingGuardFactory(client_apps, clock)
        pair = join(creator, client_creator, client_guards, clock)
        self.assertEqual(pair.server_apps.received, CLIENT_DATA)
        return pair, client_creator

    def test_sessionResumesAcrossCertificateReplace(self) -> None:
        """
        A second connection offering the first one's session is resumed;
        after the creator's policy is replaced by one with a new server
        certificate and key (the same trust roots and CRL), the session
        still resumes, and a new full handshake presents the new certificate.
        """
        clock = Clock()
        policy = pki().server_policy(client_auth="optional")
        creator = ServerTLSCreator(policy, clock)
        client_policy = pki().client_policy(client="alice")
        first, client1 = self.resumingConnect(creator, client_policy, None, clock)
        self.assertFalse(first.server_handshake().resumed)
        session = client1.connections[0].get_session()
        self.assertIsNotNone(session)

        second, _ = self.resumingConnect(creator, client_policy, session, clock)
        facts = second.server_handshake()
        self.assertTrue(facts.resumed)
        # The resumed session still names the client certificate.
        self.assertEqual(facts.peer_certificate.subject, "CN=alice")

        renewed = pki().ca.issue("server", "localhost", sans=default_server_sans("localhost"))
        creator.replace(attrs.evolve(policy, certificate_chain=(renewed.certificate,), private_key=renewed.key))
        third, _ = self.resumingConnect(creator, client_policy, session, clock)
        self.assertTrue(third.server_handshake().resumed)
        fourth, client4 = self.resumingConnect(creator, client_policy, None, clock)
        self.assertFalse(fourth.server_handshake().resumed)
        self.assertEqual(client4.connections[0].get_peer_certificate(as_cryptography=True), renewed.certificate)

    def test_newCRLEndsResumption(self) -> None:
        """
        A resumed session skips verification, so a replaced CRL (or trust
        roots) changes the session id context: a session made before it is
        not resumed, the client verifies again, and one revoked since is
        refused; its application receives nothing.
        """
        clock = Clock()
        alice = pki().client("alice")
        policy = pki().server_policy(client_auth="required", crl=pki().ca.crl([]))
        creator = ServerTLSCreator(policy, clock)
        client_policy = pki().client_policy(client="alice")
        first, client1 = self.resumingConnect(creator, client_policy, None, clock)
        session = client1.connections[0].get_session()
        second, _ = self.resumingConnect(creator, client_policy, session, clock)
        self.assertTrue(second.server_handshake().resumed)

        fresh = pki().ca.crl([])
        self.assertNotEqual(policy.session_context_id(), attrs.evolve(policy, crl=fresh).session_context_id())
        creator.replace(attrs.evolve(policy, crl=fresh))
        third, _ = self.resumingConnect(creator, client_policy, session, clock)
        self.assertFalse(third.server_handshake().resumed)

        revoked = pki().ca.crl([(alice.certificate.serial_number, datetime.datetime.now(datetime.UTC))])
        creator.replace(attrs.evolve(policy, crl=revoked))
        client_apps = RecordingFactory(CLIENT_DATA)
        pair = join(
            creator,
            ResumingCreator(client_policy.creator("localhost", 8443), session),
            RecordingGuardFactory(client_apps, clock),
            clock,
        )
        self.assertIsInstance(pair.server_error(), CertificateRevoked)
        self.assertNoApplicationBytes(pair)

    def test_replaceRefusesSettings(self) -> None:
        """A reload swaps material, not settings: another profile is refused and nothing changes."""
        policy = pki().server_policy()
        creator = ServerTLSCreator(policy, Clock())
        context = creator.context()
        with self.assertRaises(TLSConfigurationError):
            creator.replace(attrs.evolve(policy, profile=MODERN))
        self.assertIs(creator.policy, policy)
        self.assertIs(creator.context(), context)

    def test_clientSessionCache(self) -> None:
        """
        A client policy remembers the session of a verified connection that
        closed cleanly and resumes it on the next connection to the same
        host:port; a connection that failed makes it forget.
        """
        clock = Clock()
        creator = ServerTLSCreator(pki().server_policy(client_auth="optional"), clock)
        client_policy = pki().client_policy(client="alice")

        def connect() -> Pair:
            client_apps = RecordingFactory(CLIENT_DATA)
            pair = join(creator, client_policy.creator("localhost", 8443), RecordingGuardFactory(client_apps, clock), clock)
            self.assertEqual(pair.server_apps.received, CLIENT_DATA)
            return pair

        first = connect()
        self.assertFalse(first.server_handshake().resumed)
        self.assertIsNone(client_policy.sessions.get("localhost", 8443))
        first.client_tls.loseConnection()
        first.pump.flush()
        self.assertIsNotNone(client_policy.sessions.get("localhost", 8443))
        self.assertIsNone(client_policy.sessions.get("localhost", 8444))

        second = connect()
        self.assertTrue(second.server_handshake().resumed)
        self.assertEqual(second.server_handshake().peer_certificate.subject, "CN=alice")

        # An abrupt end (not a clean close) forgets the session.
        fake_transport(second.client_tls).abortConnection()
        second.pump.flush()
        self.assertIsNone(client_policy.sessions.get("localhost", 8443))

    def test_noResumptionWithoutTickets(self) -> None:
        """session_tickets=False (sessionTickets=no) turns resumption off entirely."""
        clock = Clock()
        creator = ServerTLSCreator(pki().server_policy(client_auth="optional", session_tickets=False), clock)
        client_policy = pki().client_policy(client="alice")
        first, client1 = self.resumingConnect(creator, client_policy, None, clock)
        session = client1.connections[0].get_session()
        self.assertIsNotNone(session)
        second, _ = self.resumingConnect(creator, client_policy, session, clock)
        self.assertFalse(second.server_handshake().resumed)


# -- timeouts and non-TLS peers ------------------------------------------------------


class PlainPeer(Protocol):
    """A TCP peer that is not TLS: it sends C{greeting} (or nothing) and records what it gets."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.received: list[bytes] = []
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        if self.greeting:
            transport_of(self).write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class TimeoutAndGarbageTests(TLSTestCase):
    """Stalled and non-TLS peers are closed with a typed reason and never reach the app."""

    def serverFacing(self, peer: Protocol, **policy: Any) -> tuple[Pair, Clock]:
        clock = Clock()
        server_apps = RecordingFactory(SERVER_DATA)
        guards = RecordingGuardFactory(server_apps, clock)
        creator = ServerTLSCreator(pki().server_policy(**policy), clock)
        server_tls = TLSMemoryBIOFactory(creator, False, guards, clock=clock).buildProtocol(CLIENT_ADDRESS)
        pump = _connect(server_tls, peer, clock)
        return Pair(server_tls, peer, pump, guards, server_apps), clock  # type: ignore[arg-type]

    def test_silentPeerTimesOut(self) -> None:
        """A peer that sends nothing is closed at handshake_timeout (not before) with HandshakeTimeout."""
        peer = PlainPeer()
        pair, clock = self.serverFacing(peer, handshake_timeout=5.0)
        clock.advance(4.9)
        pair.pump.flush()
        self.assertIsNone(peer.lost)
        self.assertEqual(pair.server_guards.failures, [])
        clock.advance(0.1)
        pair.pump.flush()
        self.assertIsNotNone(peer.lost)
        error = pair.server_error()
        self.assertIsInstance(error, HandshakeTimeout)
        self.assertIn("5 s", str(error))
        self.assertNoApplicationBytes(pair)
        self.assertServerEvent(HandshakeTimeout)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_slowClientHelloTimesOut(self) -> None:
        """Half a ClientHello and then silence still times out (the deadline covers the whole handshake)."""
        peer = PlainPeer(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        pair, clock = self.serverFacing(peer, handshake_timeout=2.0)
        self.assertIsNone(peer.lost)
        clock.advance(2.0)
        pair.pump.flush()
        self.assertIsInstance(pair.server_error(), HandshakeTimeout)
        self.assertNoApplicationBytes(pair)

    def test_clientTimesOutOnSilentServer(self) -> None:
        """The client guard has the same deadline: a server that never answers fails ready with HandshakeTimeout."""
        clock = Clock()
        ready: Deferred[IProtocol] = Deferred()
        results: list[object] = []
        ready.addBoth(results.append)
        client_apps = RecordingFactory(CLIENT_DATA)
        guards = TLSGuardFactory(client_apps, clock, ready=ready)
        policy = pki().client_policy(handshake_timeout=3.0)
        client_tls = TLSMemoryBIOFactory(policy.creator("localhost", 8443), True, guards, clock=clock).buildProtocol(
            SERVER_ADDRESS
        )
        server = PlainPeer()
        pump = _connect(server, client_tls, clock)
        self.assertEqual(results, [])
        clock.advance(3.0)
        pump.flush()
        [failure] = results
        assert isinstance(failure, Failure)
        self.assertIsInstance(failure.value, HandshakeTimeout)
        self.assertEqual(client_apps.built, [])
        # The server saw a ClientHello, never application data.
        self.assertNotIn(CLIENT_DATA, b"".join(server.received))

    def test_plaintextHTTP(self) -> None:
        """An HTTP request instead of a ClientHello: NotTLS at once, connection closed, app never built."""
        peer = PlainPeer(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        pair, clock = self.serverFacing(peer)
        self.assertIsNotNone(peer.lost)
        self.assertIsInstance(pair.server_error(), NotTLS)
        self.assertNoApplicationBytes(pair)
        self.assertServerEvent(NotTLS)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_garbage(self) -> None:
        """Binary garbage instead of a ClientHello is NotTLS too."""
        peer = PlainPeer(b"\x00\x01\x02garbage garbage garbage garbage\r\n")
        pair, _ = self.serverFacing(peer)
        self.assertIsNotNone(peer.lost)
        self.assertIsInstance(pair.server_error(), NotTLS)
        self.assertNoApplicationBytes(pair)

    def test_handshakeCancelsTimer(self) -> None:
        """After a successful handshake the deadline no longer applies."""
        clock = Clock()
        run = handshake(pki().server_policy(handshake_timeout=1.0), pki().client_policy(handshake_timeout=1.0), clock=clock)
        self.assertConnected(run)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(60)
        run.conn.pump.flush()
        self.assertIsNone(run.client_app().lost)


# -- structured events --------------------------------------------------------------


class HandshakeEventTests(TLSTestCase):
    """Exactly one tls.handshake event per side per handshake, with the same fields ok or failed."""

    def test_okEvents(self) -> None:
        """A mutual-TLS handshake logs one ok event per side naming the peer's certificate (and none at close)."""
        run = handshake(pki().server_policy(client_auth="required"), pki().client_policy(client="alice"))
        transport_of(run.client_app()).loseConnection()
        run.conn.pump.flush()
        self.assertIsNotNone(run.server_app().lost)
        client = self.handshakeEvent("client")
        server = self.handshakeEvent("server")
        for event in (client, server):
            self.assertEqual(event["result"], "ok")
            self.assertIsNone(event["reason"])
            self.assertEqual(event["tls_version"], "TLSv1.3")
            self.assertTrue(event["cipher"].startswith("TLS_"))
        self.assertEqual(client["peer"], "127.0.0.1:8443")
        self.assertEqual(client["peer_subject"], "CN=localhost")
        self.assertEqual(client["peer_pin"], spki_pin(pki().server.certificate))
        self.assertEqual(server["peer"], "127.0.0.1:54321")
        self.assertEqual(server["peer_subject"], "CN=alice")
        self.assertEqual(server["peer_pin"], spki_pin(pki().client("alice").certificate))

    def test_failedEvents(self) -> None:
        """A pin refusal logs one failed event per side; the client's names the refused certificate and reason."""
        wanted = spki_pin(other_pki().server.certificate)
        run = handshake(pki().server_policy(), pki().client_policy(trust_roots=(pki().ca_certificate,), pins=[wanted]))
        client = self.handshakeEvent("client")
        server = self.handshakeEvent("server")
        self.assertEqual((client["result"], server["result"]), ("failed", "failed"))
        self.assertEqual(client["error_type"], "PinMismatch")
        self.assertEqual(client["reason"], str(run.client_error()))
        self.assertEqual(client["peer_subject"], "CN=localhost")
        self.assertEqual(client["peer_pin"], spki_pin(pki().server.certificate))
        self.assertEqual(client["peer"], "127.0.0.1:8443")
        self.assertEqual(server["error_type"], "HandshakeFailed")
        self.assertEqual(server["peer"], "127.0.0.1:54321")

    def test_refusedExpiredCertificateNamed(self) -> None:
        """A certificate refused by OpenSSL (expired) is still named by subject and pin in the failed event."""
        handshake(serving(expired_server()), pki().client_policy())
        client = self.handshakeEvent("client")
        self.assertEqual(client["error_type"], "CertificateExpired")
        self.assertEqual(client["peer_pin"], spki_pin(expired_server().certificate))

    def test_nothingNegotiatedIsNone(self) -> None:
        """When no TLS was spoken, the version and cipher fields are None rather than a guess."""
        clock = Clock()
        guards = RecordingGuardFactory(RecordingFactory(), clock)
        server_tls = TLSMemoryBIOFactory(ServerTLSCreator(pki().server_policy(), clock), False, guards, clock=clock)
        _connect(server_tls.buildProtocol(CLIENT_ADDRESS), PlainPeer(b"GET / HTTP/1.1\r\n\r\n"), clock)
        event = self.handshakeEvent("server")
        self.assertEqual(event["result"], "failed")
        self.assertIsNone(event["tls_version"])
        self.assertIsNone(event["cipher"])
        self.assertIsNone(event["peer_subject"])
        self.assertIsNone(event["peer_pin"])


class ErrorTypeTests(SynchronousTestCase):
    """The typed errors print one clear line carrying their facts."""

    def test_messages(self) -> None:
        """str() of the structured errors names what a user needs."""
        self.assertEqual(
            str(HostnameMismatch("x", expected="a.example", presented=("DNS:b.example",))),
            "server certificate is not valid for 'a.example' (it names DNS:b.example)",
        )
        self.assertIn("sha256/A", str(PinMismatch("x", expected=("sha256/A",), presented=("sha256/B",))))
        error = TofuMismatch("x", host="h", port=1, recorded="sha256/R", presented="sha256/P", store="/s")
        for part in ("h:1", "sha256/R", "sha256/P", "/s"):
            self.assertIn(part, str(error))
        self.assertTrue(issubclass(TofuMismatch, TLSError))
