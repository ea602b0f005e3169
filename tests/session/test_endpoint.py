"""
Tests for L{securenet.session._endpoint} and the client parser of
L{securenet._plugins}: C{clientFromString(reactor, "securenet:...")} keeps
the endpoint contract.  Its C{connect(factory)} fires with the factory's
protocol once the server is verified and the exchange succeeded (the
protocol's C{connectionMade} has run, and it never sees an exchange byte),
and fails with the typed errors of L{securenet.connect}.

Both ends are built from endpoint strings (C{serverFromString} too) on a
L{MemoryReactorClock} and joined in memory.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, cast

from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IAddress, IProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from securenet._plugins import CREDENTIAL_KEYS
from securenet.cli._connect import CredentialError
from securenet.cred._identity import IdentityRealm
from securenet.pki._pins import spki_pin
from securenet.session._endpoint import SessionClientEndpoint
from securenet.session._errors import AuthenticationFailed
from securenet.session._server import SessionFactory
from securenet.testing import CLIENT_ADDRESS, SERVER_ADDRESS, EphemeralPKI, EventCapture, memory_portal
from securenet.tls._endpoints import CLIENT_KEYS, EndpointConfigurationError, SecureClientEndpoint
from securenet.tls._errors import PinMismatch
from securenet.tls._guard import TLSGuardFactory
from tests.support import REPO

CLIENT_DATA = b"client application bytes"
SERVER_DATA = b"server application bytes"
WRONG_PIN = "sha256/" + "A" * 43 + "="


@functools.cache
def pki() -> EphemeralPKI:
    made = EphemeralPKI.create()
    made.client("alice")
    return made


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class App(Protocol):
    """Writes its factory's greeting when connected; records what it saw."""

    factory: AppFactory

    def __init__(self) -> None:
        self.made = False
        self.received = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.made = True
        self.transport.write(self.factory.greeting)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008 - the protocol's signature
        self.lost = reason


class AppFactory(Factory[App]):
    protocol = App

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.built: list[App] = []

    def buildProtocol(self, addr: IAddress | None) -> App:
        app = super().buildProtocol(addr)
        assert isinstance(app, App)
        self.built.append(app)
        return app


class ClientEndpointTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = pki().save(Path(self.mktemp()).absolute())
        self.reactor = MemoryReactorClock()
        self.server_apps = AppFactory(SERVER_DATA)
        self.client_apps = AppFactory(CLIENT_DATA)
        self.events = EventCapture(self)

    def path(self, name: str) -> str:
        return escape(str(self.dir / name))

    def secret(self, name: str, text: str) -> str:
        """A file holding C{text} (mode 0600), for a *File= key."""
        path = self.dir / name
        path.write_text(text + "\n")
        path.chmod(0o600)
        return escape(str(path))

    def listen(self, portal: Portal, extra: str = "") -> None:
        description = f"securenet:8443:certKey={self.path('server.pem')}:privateKey={self.path('server.key')}{extra}"
        serverFromString(self.reactor, description).listen(SessionFactory(self.server_apps, portal, self.reactor))

    def endpoint(self, extra: str = "") -> Any:
        return clientFromString(self.reactor, f"securenet:host=localhost:port=8443:trustRoots={self.path('ca.pem')}{extra}")

    def join(self) -> iosim.IOPump:
        """Connect the last client attempt to the server, TCP only: nothing moves until the pump is flushed."""
        [(_, server_factory, _, _)] = self.reactor.tcpServers
        _, _, client_factory, _, _ = self.reactor.tcpClients[-1]
        server = server_factory.buildProtocol(CLIENT_ADDRESS)
        client = client_factory.buildProtocol(SERVER_ADDRESS)
        pump: iosim.IOPump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True, hostAddress=SERVER_ADDRESS, peerAddress=CLIENT_ADDRESS),
            client,
            iosim.FakeTransport(client, isServer=False, hostAddress=CLIENT_ADDRESS, peerAddress=SERVER_ADDRESS),
            greet=False,
            clock=self.reactor,
        )
        return pump

    def connected(self, d: Deferred[IProtocol]) -> App:
        """
        The protocol C{d} fired with: the client application, fired with
        after its connectionMade ran and before any byte reached it.
        """
        seen: list[tuple[object, bool, bytes]] = []

        def record(p: IProtocol) -> IProtocol:
            app = cast(App, p)
            seen.append((p, app.made, app.received))
            return p

        d.addCallback(record)
        self.join().flush()
        [app] = self.client_apps.built
        self.assertEqual(seen, [(app, True, b"")])
        self.assertIs(self.successResultOf(d), app)
        return app

    def assertExchanged(self, app: App, identity: str) -> None:
        """Each application got exactly the other's bytes: the exchange's lines went to neither."""
        self.assertEqual(app.received, SERVER_DATA)
        [server_app] = self.server_apps.built
        self.assertEqual(server_app.received, CLIENT_DATA)
        self.assertEqual(app.transport.authenticated_as, identity)  # type: ignore[union-attr]

    def assertNoApplication(self) -> None:
        self.assertEqual((self.client_apps.built, self.server_apps.built), ([], []))


class ContractTests(ClientEndpointTestCase):
    """What connect's Deferred fires with, and when."""

    def test_endpointOfClientFromString(self) -> None:
        """clientFromString gives the session endpoint over the TLS endpoint of the same string."""
        endpoint = self.endpoint(f":pin={spki_pin(pki().server.certificate)}")
        self.assertIsInstance(endpoint, SessionClientEndpoint)
        self.assertIsInstance(endpoint.tls, SecureClientEndpoint)
        self.assertEqual(len(endpoint.tls.policy.pins), 1)
        self.assertIsNone(endpoint.mechanism)

    def test_certificateExternal(self) -> None:
        """
        With a client certificate: nothing fires when TCP is up; once the
        server is verified and EXTERNAL succeeded, the user's protocol, whose
        connectionMade ran, which receives only the server application's bytes.
        """
        self.listen(memory_portal({"alice": ["reader"]}, clock=self.reactor), f":trustRoots={self.path('ca.pem')}")
        d = self.endpoint(f":certificate={self.path('alice.pem')}:privateKey={self.path('alice.key')}").connect(self.client_apps)
        pump = self.join()
        self.assertNoResult(d)
        pump.pump()
        self.assertNoResult(d)
        self.assertEqual(self.client_apps.built, [])
        pump.flush()
        [app] = self.client_apps.built
        self.assertIs(self.successResultOf(d), app)
        self.assertTrue(app.made)
        self.assertExchanged(app, "alice")
        self.assertEqual(len(self.events.of("auth.decision", result="ok", mechanism="EXTERNAL")), 1)

    def test_firedAfterConnectionMade(self) -> None:
        """The Deferred fires after the protocol's connectionMade, before its first byte."""
        self.listen(memory_portal({"alice": []}, clock=self.reactor), f":trustRoots={self.path('ca.pem')}")
        d = self.endpoint(f":certificate={self.path('alice.pem')}:privateKey={self.path('alice.key')}").connect(self.client_apps)
        self.assertExchanged(self.connected(d), "alice")

    def test_anonymous(self) -> None:
        """Without credentials, ANONYMOUS when the server offers it."""
        self.listen(Portal(IdentityRealm(), [AllowAnonymousAccess()]))
        app = self.connected(self.endpoint().connect(self.client_apps))
        self.assertEqual(app.received, SERVER_DATA)
        self.assertEqual(len(self.events.of("auth.decision", result="ok", mechanism="ANONYMOUS")), 1)

    def test_passwordFile(self) -> None:
        """user= and passwordFile=: SCRAM-SHA-256-PLUS (the server offers it), the password read from the file."""
        self.listen(memory_portal(passwords={"bob": "builder"}, clock=self.reactor))
        endpoint = self.endpoint(f":user=bob:passwordFile={self.secret('bob.pw', 'builder')}")
        app = self.connected(endpoint.connect(self.client_apps))
        self.assertExchanged(app, "bob")
        self.assertEqual(len(self.events.of("auth.decision", result="ok", mechanism="SCRAM-SHA-256-PLUS")), 1)

    def test_mechanismPlain(self) -> None:
        """mechanism=PLAIN insists on PLAIN."""
        self.listen(memory_portal(passwords={"bob": "builder"}, clock=self.reactor))
        endpoint = self.endpoint(f":mechanism=PLAIN:user=bob:passwordFile={self.secret('bob.pw', 'builder')}")
        self.assertExchanged(self.connected(endpoint.connect(self.client_apps)), "bob")
        self.assertEqual(len(self.events.of("auth.decision", result="ok", mechanism="PLAIN")), 1)

    def test_eachConnectionItsOwn(self) -> None:
        """One endpoint and one factory connect twice (as ClientService reconnects): two protocols."""
        self.listen(memory_portal(passwords={"bob": "builder"}, clock=self.reactor))
        endpoint = self.endpoint(f":user=bob:passwordFile={self.secret('bob.pw', 'builder')}")
        first = endpoint.connect(self.client_apps)
        self.join().flush()
        second = endpoint.connect(self.client_apps)
        self.join().flush()
        self.assertEqual([self.successResultOf(first), self.successResultOf(second)], self.client_apps.built)
        self.assertEqual(len(self.client_apps.built), 2)


class FailureTests(ClientEndpointTestCase):
    """The typed failures of securenet.connect, and no application on either side."""

    def test_wrongPin(self) -> None:
        """A pin mismatch fails the Deferred with PinMismatch naming both pins."""
        self.listen(memory_portal({"alice": []}, clock=self.reactor), f":trustRoots={self.path('ca.pem')}")
        d = self.endpoint(f":pin={WRONG_PIN}:certificate={self.path('alice.pem')}:privateKey={self.path('alice.key')}").connect(
            self.client_apps
        )
        self.join().flush()
        error = self.failureResultOf(d, PinMismatch).value
        self.assertEqual(error.expected, (WRONG_PIN,))
        self.assertIn(spki_pin(pki().server.certificate), error.presented)
        self.assertNoApplication()

    def test_refusedPassword(self) -> None:
        """A refused password: AuthenticationFailed with the server's code, AUTH-FAILED."""
        self.listen(memory_portal(passwords={"bob": "builder"}, clock=self.reactor))
        d = self.endpoint(f":user=bob:passwordFile={self.secret('bob.pw', 'wrong')}").connect(self.client_apps)
        self.join().flush()
        error = self.failureResultOf(d, AuthenticationFailed).value
        self.assertEqual(error.code, "AUTH-FAILED")
        self.assertNoApplication()

    def test_refusedCertificate(self) -> None:
        """A certificate the server accepts at TLS but whose user is disabled: AUTH-FAILED."""
        self.listen(memory_portal({"alice": []}, disabled=["alice"], clock=self.reactor), f":trustRoots={self.path('ca.pem')}")
        d = self.endpoint(f":certificate={self.path('alice.pem')}:privateKey={self.path('alice.key')}").connect(self.client_apps)
        self.join().flush()
        self.assertEqual(self.failureResultOf(d, AuthenticationFailed).value.code, "AUTH-FAILED")
        self.assertNoApplication()

    def test_noCredentials(self) -> None:
        """A server that wants credentials and none given: AuthenticationFailed NO-MECHANISM, on our side."""
        self.listen(memory_portal(passwords={"bob": "builder"}, clock=self.reactor))
        d = self.endpoint().connect(self.client_apps)
        self.join().flush()
        self.assertEqual(self.failureResultOf(d, AuthenticationFailed).value.code, "NO-MECHANISM")
        self.assertNoApplication()

    def test_cancelWhileConnecting(self) -> None:
        """Cancelling before TCP is up stops connecting."""
        d = self.endpoint().connect(self.client_apps)
        d.cancel()
        self.failureResultOf(d, CancelledError, ConnectingCancelledError)
        [connector] = self.reactor.connectors
        self.assertTrue(connector.stoppedConnecting)

    def test_cancelDuringExchange(self) -> None:
        """Cancelling once TCP is up closes the connection; no application is built, the Deferred fails once."""
        self.listen(memory_portal(passwords={"bob": "builder"}, clock=self.reactor))
        d = self.endpoint(f":user=bob:passwordFile={self.secret('bob.pw', 'builder')}").connect(self.client_apps)
        pump = self.join()
        pump.pump()
        d.cancel()
        pump.flush()
        self.failureResultOf(d, CancelledError)
        self.assertNoApplication()
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class KeyTests(ClientEndpointTestCase):
    """The credential keys: documented, checked, and secrets only from files."""

    def test_documented(self) -> None:
        """Every credential key is in the README's endpoint-string section, beside the TLS keys."""
        readme = (REPO / "README.md").read_text()
        section = readme.partition("### Endpoint strings")[2].partition("\n### ")[0]
        for key in [*CLIENT_KEYS, *CREDENTIAL_KEYS]:
            self.assertIn(f"`{key}`", section, key)
        self.assertEqual(set(CLIENT_KEYS) & set(CREDENTIAL_KEYS), set())

    def test_noSecretInTheString(self) -> None:
        """password= is not a key: refused naming it, pointing to passwordFile."""
        with self.assertRaises(EndpointConfigurationError) as caught:
            self.endpoint(":user=bob:password=builder")
        self.assertIn("'password'", str(caught.exception))
        self.assertIn("passwordFile", str(caught.exception))

    def test_secretFileNeeded(self) -> None:
        """A mechanism whose secret file is missing is refused naming the key (nothing is ever prompted for)."""
        for extra, needle in {
            ":user=bob": "passwordFile=FILE",
            ":mechanism=PLAIN:user=bob": "passwordFile=FILE",
            ":mechanism=SCRAM-SHA-256-PLUS:user=bob": "passwordFile=FILE",
            ":mechanism=OAUTHBEARER": "tokenFile=FILE",
            ":mechanism=APIKEY": "apiKeyFile=FILE",
            f":passwordFile={self.secret('pw', 'x')}": "user=NAME",
            f":mechanism=PLAIN:passwordFile={self.secret('pw', 'x')}": "user=NAME",
        }.items():
            with self.assertRaises(EndpointConfigurationError, msg=extra) as caught:
                self.endpoint(extra)
            self.assertIn(needle, str(caught.exception), extra)

    def test_unusedKeys(self) -> None:
        """A credential key the mechanism would not use is refused, not ignored."""
        for extra, needle in {
            ":mechanism=EXTERNAL:user=bob": "user: not used by EXTERNAL",
            f":mechanism=APIKEY:apiKeyFile={self.secret('k', 'sn_x.y')}:user=bob": "user: not used by APIKEY",
            f":tokenFile={self.secret('t', 'jwt')}:passwordFile={self.secret('pw', 'x')}": "passwordFile: not used by OAUTHBEARER",  # noqa: E501
        }.items():
            with self.assertRaises(EndpointConfigurationError, msg=extra) as caught:
                self.endpoint(extra)
            self.assertIn(needle, str(caught.exception), extra)

    def test_unknownMechanism(self) -> None:
        with self.assertRaises(EndpointConfigurationError) as caught:
            self.endpoint(":mechanism=CRAM-MD5")
        self.assertIn("mechanism='CRAM-MD5'", str(caught.exception))

    def test_unreadableSecretFile(self) -> None:
        """The secret is read when the string is parsed: a missing or empty file is refused naming it."""
        missing = self.dir / "nope.pw"
        with self.assertRaises(CredentialError) as caught:
            self.endpoint(f":user=bob:passwordFile={escape(str(missing))}")
        self.assertIn(str(missing), str(caught.exception))
        with self.assertRaises(CredentialError) as caught:
            self.endpoint(f":user=bob:passwordFile={self.secret('empty', '')}")
        self.assertIn("empty", str(caught.exception))

    def test_guardFactoryRefused(self) -> None:
        """Given a session or guard factory (securenet.connect with this endpoint), it refuses: one exchange only."""
        endpoint = self.endpoint()
        with self.assertRaises(TypeError):
            endpoint.connect(TLSGuardFactory(Factory(), self.reactor))
        self.assertEqual(self.reactor.tcpClients, [])


class ClientServiceTests(ClientEndpointTestCase):
    """Twisted's ClientService, the usual user of a client endpoint string."""

    def test_whenConnected(self) -> None:
        """whenConnected fires with the user's protocol, authenticated (not with a guard that is still handshaking)."""
        from twisted.application.internet import ClientService

        self.listen(memory_portal(passwords={"bob": "builder"}, clock=self.reactor))
        endpoint = self.endpoint(f":user=bob:passwordFile={self.secret('bob.pw', 'builder')}")
        self.assertTrue(verifyObject(IStreamClientEndpoint, endpoint))
        service = ClientService(endpoint, self.client_apps, clock=self.reactor)
        service.startService()
        self.addCleanup(service.stopService)
        connected = service.whenConnected()
        self.join().flush()
        [app] = self.client_apps.built
        self.assertIs(self.successResultOf(connected), app)
        self.assertExchanged(app, "bob")
