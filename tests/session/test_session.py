"""
Tests for the session layer (L{securenet.protocol}) and the certificate
checker (L{securenet.cred}): the application exists only after the portal
said yes, sees who the peer is, and never sees a byte from a peer that was
refused.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.cred.checkers import AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from securenet.cred._checkers import MAPPINGS, CertificateChecker, CertificateNotAccepted
from securenet.cred._credentials import CertificateCredentials
from securenet.cred._identity import IdentityRealm
from securenet.cred._strcred import CheckerArgumentError, certificateCheckerFactory
from securenet.interfaces import ICertificateCredentials, ISession
from securenet.pki._ca import IssuedCertificate, generate_private_key, parse_san
from securenet.pki._pins import spki_pin
from securenet.session._client import connect
from securenet.session._errors import AuthenticationFailed
from securenet.session._exchange import ExchangeSettings
from securenet.session._server import NotASecureSession, ServerSession, SessionFactory, identity_of
from securenet.testing import EphemeralPKI, EventCapture, MemoryConnection, connect_in_memory
from securenet.tls._client import ClientTLSPolicy
from securenet.tls._endpoints import SecureClientEndpoint
from securenet.tls._guard import TLSGuard
from tests.support.tls import CLIENT_DATA, SERVER_DATA, RecordingFactory, RecordingProtocol, fake_transport, transport_of


@functools.cache
def pki() -> EphemeralPKI:
    return EphemeralPKI.create()


@functools.cache
def client_with(name: str, *sans: str) -> IssuedCertificate:
    """A client certificate of the module CA with subject CN C{name} and the given SANs."""
    return pki().ca.issue("client", name, sans=[parse_san(s) for s in sans])


@functools.cache
def client_without_cn() -> IssuedCertificate:
    """A client certificate of the module CA whose subject is empty (identity only in a SAN)."""
    ca = pki().ca
    key = generate_private_key("ec")
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("nobody@example.org")]), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return IssuedCertificate(cert, key)


class IdentityProtocol(RecordingProtocol):
    """Records identity_of(self) and the session's handshake facts when connected."""

    def connectionMade(self) -> None:
        self.identity = identity_of(self)
        self.handshake = ISession(self.transport).handshake
        super().connectionMade()


class IdentityFactory(RecordingFactory):
    protocol = IdentityProtocol


@implementer(ICredentialsChecker)
class RecordingChecker:
    """Wraps a checker and records each of its answers (avatar id or Failure)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.credentialInterfaces = inner.credentialInterfaces
        self.answers: list[object] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        d: Deferred[Any] = self.inner.requestAvatarId(credentials)

        def record(result: object) -> object:
            self.answers.append(result)
            return result

        return d.addBoth(record)


@implementer(ICredentialsChecker)
class PendingChecker:
    """A checker whose answers the test fires by hand."""

    credentialInterfaces = (ICertificateCredentials,)

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


@implementer(ICredentialsChecker)
class BrokenChecker:
    credentialInterfaces = (ICertificateCredentials,)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        raise ZeroDivisionError("bug in a checker")


class SessionTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = EventCapture(self)
        self.clock = Clock()
        self.apps = IdentityFactory(SERVER_DATA)
        self.client_apps = RecordingFactory(CLIENT_DATA)

    def connect(
        self,
        portal: Portal,
        client: str | IssuedCertificate | None = "alice",
        client_auth: str = "required",
        raw_client: bool = False,
        settings: ExchangeSettings = ExchangeSettings(),
    ) -> MemoryConnection:
        """
        Connect a recording client (with C{client}'s certificate) to a session
        over C{portal}; not pumped.  With C{raw_client} the client app sees
        the exchange's lines and speaks them itself.
        """
        factory = SessionFactory(self.apps, portal, self.clock, settings=settings)
        conn = connect_in_memory(
            server_policy=pki().server_policy(client_auth=client_auth),
            client_policy=pki().client_policy(client=client),
            server_factory=factory,
            client_factory=self.client_apps,
            clock=self.clock,
            raw_client=raw_client,
        )
        self.ready: list[object] = []
        conn.client_ready.addBoth(self.ready.append)
        self.session = conn.server_guard
        self.assertIsInstance(self.session, ServerSession)
        return conn

    def clientError(self) -> BaseException:
        [result] = self.ready
        assert isinstance(result, Failure), result
        assert result.value is not None
        return result.value

    def clientApp(self) -> RecordingProtocol:
        [app] = self.client_apps.built
        return app

    def decisions(self) -> list[dict[str, Any]]:
        return self.log.of("auth.decision")

    def assertDenied(self, conn: MemoryConnection, reason_part: str, mechanism: str = "EXTERNAL") -> dict[str, Any]:
        """
        One denied auth.decision naming why; the client got NO AUTH-FAILED
        (generic) and closed; neither application ever existed or saw a byte.
        """
        [decision] = self.decisions()
        self.assertEqual(decision["result"], "denied")
        self.assertEqual(decision["mechanism"], mechanism)
        self.assertIsNone(decision["identity"])
        self.assertIn(reason_part, decision["reason"])
        error = self.clientError()
        self.assertIsInstance(error, AuthenticationFailed)
        assert isinstance(error, AuthenticationFailed)
        self.assertEqual((error.code, error.text), ("AUTH-FAILED", "authentication failed"))
        self.assertEqual(self.apps.built, [])
        self.assertEqual(self.apps.received, b"")
        self.assertEqual(self.client_apps.built, [])
        self.assertTrue(fake_transport(conn.server_tls).disconnected)
        self.assertIsNone(self.session.identity)
        return decision

    def assertAccepted(self, avatar_id: str, mechanism: str = "EXTERNAL") -> IdentityProtocol:
        """One ok auth.decision; the app was built once, saw the identity, and got the client's bytes."""
        [decision] = self.decisions()
        self.assertEqual((decision["result"], decision["identity"], decision["mechanism"]), ("ok", avatar_id, mechanism))
        self.assertIsNone(decision["reason"])
        [app] = self.apps.built
        assert isinstance(app, IdentityProtocol)
        self.assertEqual(app.identity.avatar_id, avatar_id)
        self.assertEqual(app.identity.mechanism, mechanism)
        self.assertEqual(self.apps.received, CLIENT_DATA)
        self.assertEqual(b"".join(self.clientApp().received), SERVER_DATA)
        return app


class CertificateSessionTests(SessionTestCase):
    """SessionFactory with the certificate portal."""

    def test_appSeesIdentity(self) -> None:
        """The app is built after authentication and finds avatar_id, EXTERNAL and the certificate facts."""
        conn = self.connect(pki().certificate_portal())
        conn.pump.flush()
        app = self.assertAccepted("alice")
        cert = pki().client("alice").certificate
        assert app.identity.certificate is not None
        self.assertEqual(app.identity.certificate.subject, "CN=alice")
        self.assertEqual(app.identity.certificate.pin, spki_pin(cert))
        self.assertEqual(app.identity.peer, "127.0.0.1:54321")
        self.assertFalse(app.identity.anonymous)
        # The verified chain, leaf first, as CA verification saw it.
        self.assertEqual(app.handshake.peer_chain, (cert, pki().ca.certificate))
        [decision] = self.decisions()
        self.assertEqual(decision["peer"], "127.0.0.1:54321")
        self.assertEqual(decision["peer_subject"], "CN=alice")

    def test_mappings(self) -> None:
        """Each mapping names the holder by its field of the certificate."""
        spiffe = client_with("svc", "URI:spiffe://example.org/ns/prod/svc", "DNS:svc.example.org", "email:svc@example.org")
        uri = client_with("web", "URI:https://example.org/people/web")
        cases: dict[str, tuple[IssuedCertificate, str]] = {
            "cn": (spiffe, "svc"),
            "dns": (spiffe, "svc.example.org"),
            "email": (spiffe, "svc@example.org"),
            "spiffe": (spiffe, "spiffe://example.org/ns/prod/svc"),
            "uri": (uri, "https://example.org/people/web"),
            "pin": (spiffe, spki_pin(spiffe.certificate)),
        }
        self.assertEqual(set(cases), set(MAPPINGS))
        for mapping, (issued, expected) in cases.items():
            self.setUp()
            conn = self.connect(pki().certificate_portal(mapping), client=issued)
            conn.pump.flush()
            app = self.assertAccepted(expected)
            assert app.identity.certificate is not None
            self.assertEqual(app.identity.certificate.pin, spki_pin(issued.certificate), mapping)

    def test_missingFields(self) -> None:
        """A certificate without the mapped field (or with two) is refused with CertificateNotAccepted saying which."""
        plain = client_with("plain")
        two_dns = client_with("twins", "DNS:a.example.org", "DNS:b.example.org")
        only_https = client_with("web", "URI:https://example.org/people/web")
        two_uris = client_with("both", "URI:https://example.org/x", "URI:spiffe://example.org/x")
        cases = [
            ("cn", client_without_cn(), "no subject common name"),
            ("dns", plain, "no DNS SAN"),
            ("dns", two_dns, "2 DNS SANs"),
            ("uri", plain, "no URI SAN"),
            ("uri", two_uris, "2 URI SANs"),
            ("spiffe", only_https, "no spiffe:// URI SAN"),
            ("email", plain, "no email SAN"),
        ]
        for mapping, issued, reason in cases:
            self.setUp()
            checker = RecordingChecker(CertificateChecker(mapping))
            conn = self.connect(Portal(IdentityRealm(), [checker]), client=issued)
            conn.pump.flush()
            [answer] = checker.answers
            assert isinstance(answer, Failure)
            self.assertIsInstance(answer.value, CertificateNotAccepted, mapping)
            self.assertIn(reason, str(answer.value))
            self.assertDenied(conn, reason)

    def test_checkerError(self) -> None:
        """A checker that raises is a denial ('internal error'), logged, never an open door."""
        conn = self.connect(Portal(IdentityRealm(), [BrokenChecker()]))
        conn.pump.flush()
        self.assertDenied(conn, "internal error in the checker")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_tlsRefusalNeverReachesPortal(self) -> None:
        """A client refused by TLS (no certificate) never reaches the checker."""
        checker = PendingChecker()
        conn = self.connect(Portal(IdentityRealm(), [checker]), client=None)
        conn.pump.flush()
        self.assertEqual(checker.pending, [])
        self.assertEqual(self.decisions(), [])
        self.assertEqual(self.apps.built, [])


class AnonymousTests(SessionTestCase):
    """clientAuth=optional and a client without a certificate."""

    def test_noAnonymousChecker(self) -> None:
        """
        Without an anonymous checker and without a certificate, nothing is
        offered that the client can use: it says so and closes; no app.
        """
        conn = self.connect(pki().certificate_portal(), client=None, client_auth="optional")
        conn.pump.flush()
        error = self.clientError()
        assert isinstance(error, AuthenticationFailed)
        self.assertEqual(error.code, "NO-MECHANISM")
        self.assertEqual(self.decisions(), [])
        self.assertEqual(self.apps.built, [])
        self.assertEqual(self.client_apps.built, [])
        self.assertTrue(fake_transport(conn.server_tls).disconnected)

    def test_anonymousChecker(self) -> None:
        """With AllowAnonymousAccess the peer is 'anonymous' by ANONYMOUS, with no certificate."""
        portal = Portal(IdentityRealm(), [CertificateChecker(), AllowAnonymousAccess()])
        conn = self.connect(portal, client=None, client_auth="optional")
        conn.pump.flush()
        app = self.assertAccepted("anonymous", mechanism="ANONYMOUS")
        self.assertTrue(app.identity.anonymous)
        self.assertIsNone(app.identity.certificate)

    def test_certificateStillPreferred(self) -> None:
        """With both checkers, a client that does present a certificate is EXTERNAL, not anonymous."""
        portal = Portal(IdentityRealm(), [CertificateChecker(), AllowAnonymousAccess()])
        conn = self.connect(portal, client="alice", client_auth="optional")
        conn.pump.flush()
        self.assertAccepted("alice")

    def test_onlyAnonymousCheckerTakesCertificateHolders(self) -> None:
        """
        With only an anonymous checker (--auth anonymous), a client that sends
        a certificate is admitted as anonymous rather than refused for want
        of a certificate checker.
        """
        portal = Portal(IdentityRealm(), [AllowAnonymousAccess()])
        conn = self.connect(portal, client="alice", client_auth="optional")
        conn.pump.flush()
        app = self.assertAccepted("anonymous", mechanism="ANONYMOUS")
        # The TLS-verified certificate stays visible to the application.
        assert app.identity.certificate is not None
        self.assertEqual(app.identity.certificate.common_name, "alice")


class PreAuthenticationTests(SessionTestCase):
    """Bytes that arrive while the portal is still deciding."""

    def rawConnect(self, checker: Any, **kwargs: Any) -> tuple[MemoryConnection, RecordingProtocol]:
        """A raw client (it speaks the exchange's lines itself) past the greeting."""
        self.client_apps = RecordingFactory()
        conn = self.connect(Portal(IdentityRealm(), [checker]), raw_client=True, **kwargs)
        conn.pump.flush()
        [client] = self.client_apps.built
        self.assertEqual(b"".join(client.received), b"SECURENET 1 AUTH EXTERNAL\r\n")
        return conn, client

    def test_pipelinedBytesGoToTheApp(self) -> None:
        """Bytes after the final line (sent early) reach the app, in order, once it is built."""
        checker = PendingChecker()
        conn, client = self.rawConnect(checker)
        transport_of(client).write(b"AUTH EXTERNAL =\r\none ")
        conn.pump.flush()
        transport_of(client).write(b"two ")
        conn.pump.flush()
        self.assertEqual(self.apps.built, [])
        checker.pending[0].callback("alice")
        conn.pump.flush()
        [app] = self.apps.built
        self.assertEqual(b"".join(app.received), b"one two ")
        transport_of(client).write(b"after")
        conn.pump.flush()
        self.assertEqual(b"".join(app.received), b"one two after")
        self.assertIn(b"OK alice\r\n", b"".join(client.received))
        [decision] = self.decisions()
        self.assertEqual(decision["identity"], "alice")

    def test_overflowAborts(self) -> None:
        """More than max_buffer bytes before authentication: closed, and a late yes builds nothing."""
        checker = PendingChecker()
        conn, client = self.rawConnect(checker, settings=ExchangeSettings(max_buffer=1000))
        transport_of(client).write(b"AUTH EXTERNAL =\r\n")
        conn.pump.flush()
        transport_of(client).write(b"x" * 1001)
        conn.pump.flush()
        self.assertIn(b"NO TOO-MUCH-DATA", b"".join(client.received))
        self.assertTrue(fake_transport(conn.server_tls).disconnected)
        [decision] = self.decisions()
        self.assertIn("more than 1000 bytes", decision["reason"])
        checker.pending[0].callback("alice")
        conn.pump.flush()
        self.assertEqual(self.apps.built, [])
        self.assertEqual(len(self.decisions()), 1)
        self.assertIsNone(self.session.identity)

    def test_peerLeavesBeforeDecision(self) -> None:
        """A peer that disconnects while the checker decides: the late yes builds no application."""
        checker = PendingChecker()
        conn, client = self.rawConnect(checker)
        transport_of(client).write(b"AUTH EXTERNAL =\r\n")
        conn.pump.flush()
        transport_of(client).loseConnection()
        conn.pump.flush()
        self.assertTrue(fake_transport(conn.server_tls).disconnected)
        [pending] = checker.pending
        pending.callback("alice")
        conn.pump.flush()
        self.assertEqual(self.apps.built, [])
        self.assertEqual(self.decisions(), [])

    def test_lateRefusal(self) -> None:
        """A checker that refuses later: denied with its reason; the client is told only AUTH-FAILED."""
        checker = PendingChecker()
        conn = self.connect(Portal(IdentityRealm(), [checker]))
        conn.pump.flush()
        checker.pending[0].errback(UnauthorizedLogin("alice is suspended"))
        conn.pump.flush()
        self.assertDenied(conn, "alice is suspended")


class CheckerTests(SynchronousTestCase):
    """CertificateChecker and its strcred factory on their own."""

    def test_unverifiedRefused(self) -> None:
        """Credentials not verified by TLS, or with no chain, are refused whatever they say."""
        cert = pki().client("alice").certificate
        checker = CertificateChecker()
        for credentials in (CertificateCredentials((cert,), verified=False), CertificateCredentials((), verified=True)):
            failure = self.failureResultOf(checker.requestAvatarId(credentials), CertificateNotAccepted)
            self.assertIn("not verified", str(failure.value))
        self.assertEqual(self.successResultOf(checker.requestAvatarId(CertificateCredentials((cert,), True))), "alice")

    def test_unknownMapping(self) -> None:
        with self.assertRaises(ValueError):
            CertificateChecker("nope")

    def test_strcred(self) -> None:
        """generateChecker parses map=; unknown maps and malformed strings raise CheckerArgumentError."""
        self.assertTrue(verifyObject(ICheckerFactory, certificateCheckerFactory))
        checker = certificateCheckerFactory.generateChecker("map=spiffe")
        self.assertIsInstance(checker, CertificateChecker)
        self.assertEqual(checker.mapping, "spiffe")
        self.assertEqual(certificateCheckerFactory.generateChecker("").mapping, "cn")
        for bad, needle in (("map=nope", "'nope'"), ("bogus", "'bogus'"), ("colour=red", "'colour'")):
            with self.assertRaises(CheckerArgumentError) as caught:
                certificateCheckerFactory.generateChecker(bad)
            self.assertIn(needle, str(caught.exception))


class IdentityOfTests(SynchronousTestCase):
    def test_plainProtocol(self) -> None:
        """identity_of on a protocol not connected through a session raises NotASecureSession."""
        with self.assertRaises(NotASecureSession):
            identity_of(Protocol())
        proto = Protocol()
        proto.makeConnection(object())
        with self.assertRaises(NotASecureSession):
            identity_of(proto)

    def test_clientSideGuard(self) -> None:
        """A client app's transport is a TLS guard, not a session: NotASecureSession."""
        proto = Protocol()
        proto.transport = cast(
            ITransport, TLSGuard(SessionFactory(Factory(), Portal(IdentityRealm()), Clock()), IPv4Address("TCP", "h", 1))
        )
        with self.assertRaises(NotASecureSession):
            identity_of(proto)


class ClientConnectTests(SynchronousTestCase):
    """securenet.protocol.client.connect"""

    def test_tcpFailure(self) -> None:
        """A TCP connection failure errbacks the returned Deferred; no app is built."""
        reactor = MemoryReactorClock()
        endpoint = SecureClientEndpoint(reactor, ClientTLSPolicy(trust_roots=(pki().ca_certificate,)), "127.0.0.1", 8443)
        apps = RecordingFactory()
        d = connect(reactor, endpoint, apps)
        self.assertNoResult(d)
        [(host, port, factory, _, _)] = reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 8443))
        factory.clientConnectionFailed(reactor.connectors[0], Failure(ConnectionRefusedError("refused")))
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(apps.built, [])
