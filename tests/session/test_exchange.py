"""
The authentication exchange (docs/protocol.md) checked against its spec, in
memory: TLS through iosim, a fake clock, and small test-only mechanisms and
checkers defined here (so nothing depends on the password, SCRAM or TOTP
modules).

Most tests drive the server by hand, as C{openssl s_client} would
(C{connect_in_memory(raw_client=True)}): they write lines and compare the
exact lines the server answers.  Every refusal also asserts that the
C{auth.decision} event says why, whether the connection stayed open, and
that the server application was never built nor given a byte.  The client
tests run our own L{ClientSession} against the same server.
"""

from __future__ import annotations

import base64
import functools
from typing import Any, Literal, cast

from twisted.cred.checkers import AllowAnonymousAccess, ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from securenet import audit
from securenet.cred._checkers import CertificateChecker
from securenet.cred._identity import Identity, IdentityRealm
from securenet.cred._throttle import Throttle, ThrottlePolicy
from securenet.interfaces import (
    IClientMechanism,
    IMechanismFactory,
    IMechanismProvider,
    ISecondFactor,
    IServerMechanism,
    ITOTPCredentials,
)
from securenet.sasl._builtin import ExternalClientMechanism
from securenet.sasl._channel import channel_bindings
from securenet.sasl._mechanism import Challenge, ChannelBindings, Complete, MechanismError
from securenet.sasl._offer import offered_mechanisms
from securenet.session import _server as session_module
from securenet.session._client import CLIENT_DEADLINE, ClientSession
from securenet.session._errors import AuthenticationFailed, ProtocolViolation, ServerNotAuthenticated
from securenet.session._exchange import (
    MAX_LINE,
    ExchangeSettings,
    ServerExchange,
    decode_identity,
    encode_identity,
)
from securenet.session._server import ServerSession, SessionFactory, identity_of
from securenet.store._errors import StoreUnavailable
from securenet.store._memory import MemoryStore
from securenet.testing import EphemeralPKI, EventCapture, MemoryConnection, connect_in_memory
from securenet.tls._facts import HandshakeFacts
from securenet.tls._guard import TLSGuard
from tests.support.audit import failing_sink
from tests.support.tls import CLIENT_DATA, SERVER_DATA, RecordingFactory, RecordingProtocol, fake_transport, transport_of


@functools.cache
def pki() -> EphemeralPKI:
    return EphemeralPKI.create()


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode("utf-8") if isinstance(data, str) else data).decode("ascii")


# -- a test-only mechanism, its checker, a second factor and a client ----------

CHALLENGE = b"who are you?"
SUCCESS_DATA = b"server-final"
GREETING = "SECURENET 1 AUTH TEST"
CHALLENGE_LINE = f"+ {b64(CHALLENGE)}"
AUTH_FAILED = "NO AUTH-FAILED authentication failed"
BAD_STATE_READY = "NO BAD-STATE expected AUTH <mechanism> [initial-response]"
TOTP_CODE = "123456"
CLIENT_ADDRESS_KEY = "addr:127.0.0.1"

#: username -> (password, avatar id)
USERS = {
    b"alice": (b"wonderland", "alice"),
    b"bob": (b"builder", "bob"),
    b"zoe": (b"zebra", "Zo\u00eb Doe/ops@example.org"),
    #: An avatar id that would be a template if a log line were formatted from it.
    b"brace": (b"curly", "x{peer}{0}{log_format}y"),
}


def response(user: str, password: str) -> str:
    return b64(f"{user}:{password}")


def ok(identity: str) -> str:
    return f"OK {identity} {b64(SUCCESS_DATA)}"


@implementer(IServerMechanism)
class ToyMechanism:
    """
    TEST: answers the initial response (recorded) with one challenge, then
    takes C{user:password} and completes with UsernamePassword and
    SUCCESS_DATA as its additional data with success.
    """

    def __init__(self) -> None:
        self.steps: list[bytes | None] = []

    def step(self, data: bytes | None) -> Deferred[Challenge | Complete]:
        self.steps.append(data)
        if len(self.steps) == 1:
            return defer.succeed(Challenge(CHALLENGE))
        assert data is not None
        user, sep, password = data.partition(b":")
        if not sep or len(self.steps) > 2:
            return defer.fail(MechanismError("TEST expects one user:password response"))
        return defer.succeed(Complete(ToyCredentials(user, password), success_data=lambda: SUCCESS_DATA))


class IToyCredentials(IUsernamePassword):
    """What the TEST mechanism produces: no standard mechanism does, so only TEST is offered for it."""


@implementer(IToyCredentials)
class ToyCredentials(UsernamePassword):
    pass


@implementer(IMechanismFactory)
class ToyMechanismFactory:
    def __init__(self, name: str = "TEST", second_factor_allowed: bool = True) -> None:
        self.name = name
        self.second_factor_allowed = second_factor_allowed
        self.runs: list[tuple[ToyMechanism, ChannelBindings, str]] = []

    def __call__(self, bindings: ChannelBindings, peer: str) -> ToyMechanism:
        mechanism = ToyMechanism()
        self.runs.append((mechanism, bindings, peer))
        return mechanism


@implementer(ICredentialsChecker, IMechanismProvider)
class PasswordChecker:
    """
    Checks USERS; offers ToyMechanismFactory mechanisms.  Records every
    call (a spy); with C{hold} its answers wait for the test to fire them.
    """

    credentialInterfaces = (IToyCredentials,)

    def __init__(self, *factories: ToyMechanismFactory) -> None:
        self.factories = list(factories) or [ToyMechanismFactory()]
        self.calls: list[bytes] = []
        self.hold = False
        self.pending: list[Deferred[Any]] = []

    def mechanisms(self) -> list[IMechanismFactory]:
        return list(self.factories)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        self.calls.append(credentials.username)
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.pending.append(d)
            return d
        entry = USERS.get(credentials.username)
        if entry is None or entry[0] != credentials.password:
            return defer.fail(UnauthorizedLogin("wrong password"))
        return defer.succeed(entry[1])


@implementer(ICredentialsChecker, ISecondFactor)
class FixedTOTPChecker:
    """A second factor for the C{enrolled} users, whose code is always TOTP_CODE."""

    credentialInterfaces = (ITOTPCredentials,)

    def __init__(self, *enrolled: str) -> None:
        self.enrolled = set(enrolled or ("alice",))
        self.calls: list[tuple[str, str]] = []

    def required(self, avatar_id: str) -> Deferred[bool]:
        return defer.succeed(avatar_id in self.enrolled)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        self.calls.append((credentials.username, credentials.code))
        if credentials.code != TOTP_CODE:
            return defer.fail(UnauthorizedLogin("wrong code"))
        return defer.succeed(credentials.username)


@implementer(ICredentialsChecker)
class SpyChecker:
    """Wraps a checker and counts its calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.credentialInterfaces = inner.credentialInterfaces
        self.calls = 0

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        self.calls += 1
        result: Deferred[Any] = self.inner.requestAvatarId(credentials)
        return result


@implementer(IClientMechanism)
class ToyClientMechanism:
    """Our client's side of TEST; C{verify_success} insists on C{expect}."""

    name = "TEST"

    def __init__(self, user: str = "alice", password: str = "wonderland", expect: bytes = SUCCESS_DATA) -> None:
        self.user = user
        self.password = password
        self.expect = expect
        self.verified: list[bytes | None] = []

    def initial(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        if challenge != CHALLENGE:
            raise MechanismError(f"unexpected challenge {challenge!r}")
        return f"{self.user}:{self.password}".encode()

    def verify_success(self, data: bytes | None) -> None:
        self.verified.append(data)
        if data != self.expect:
            raise MechanismError("the server's final data is not what TEST expects")


class NotSecurenetFactory(SessionFactory):
    """
    A TLS server whose application speaks first and which runs no exchange
    (a plain TLSGuard): what our client meets when pointed at the wrong port.
    Being a SessionFactory, connect_in_memory runs our ClientSession against it.
    """

    protocol = TLSGuard


# -- the harness -----------------------------------------------------------------


class ExchangeTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = EventCapture(self)
        self.clock = Clock()
        self.apps = RecordingFactory(SERVER_DATA)
        self.client_apps = RecordingFactory()
        self.passwords = PasswordChecker()
        self.totp = FixedTOTPChecker()

    def portal(self, *checkers: Any) -> Portal:
        return Portal(IdentityRealm(), list(checkers) or [self.passwords])

    def connect(
        self,
        portal: Portal | None = None,
        *,
        client: str | None = None,
        client_auth: str = "optional",
        raw: bool = True,
        mechanism: Any = None,
        totp: Any = None,
        throttle: Throttle | None = None,
        settings: ExchangeSettings = ExchangeSettings(),
        server_factory: SessionFactory | None = None,
        early_data: bool = False,
    ) -> MemoryConnection:
        """
        Connect through TLS (with C{client}'s certificate) and run until
        nothing moves.  With C{raw} the client app speaks the exchange itself.
        """
        factory = server_factory or SessionFactory(
            self.apps, portal or self.portal(), self.clock, throttle=throttle, settings=settings
        )
        self.conn = connect_in_memory(
            server_policy=pki().server_policy(client_auth=client_auth),
            client_policy=pki().client_policy(client=client),
            server_factory=factory,
            client_factory=self.client_apps,
            clock=self.clock,
            mechanism=mechanism,
            totp=totp,
            raw_client=raw,
            early_data=early_data,
        )
        # Both guards exist from the start; TLS lets go of them when the connection is lost.
        self.session = self.conn.server_guard
        self.client_guard = self.conn.client_guard
        self.conn.pump.flush()
        if isinstance(self.session, ServerSession) and self.session.exchange is not None:
            self.exchange: ServerExchange = self.session.exchange
        return self.conn

    # raw client

    def rawClient(self) -> RecordingProtocol:
        [client] = self.client_apps.built
        return client

    def write(self, data: bytes) -> None:
        transport_of(self.rawClient()).write(data)
        self.conn.pump.flush()

    def send(self, *lines: str) -> None:
        """Send each line (CRLF-terminated), waiting for the server after each."""
        for line in lines:
            self.write(line.encode("utf-8") + b"\r\n")

    def transcript(self) -> tuple[list[str], bytes]:
        """The complete lines the raw client received, and the bytes after the last one."""
        *lines, rest = b"".join(self.rawClient().received).split(b"\r\n")
        return [line.decode("ascii") for line in lines], rest

    def lines(self) -> list[str]:
        lines, rest = self.transcript()
        self.assertEqual(rest, b"")
        return lines

    # outcomes

    def assertOpen(self) -> None:
        self.assertTrue(self.session.connected)
        self.assertFalse(self.conn.server_tls.disconnecting)
        self.assertFalse(fake_transport(self.conn.server_tls).disconnected)

    def assertClosed(self) -> None:
        self.assertTrue(fake_transport(self.conn.server_tls).disconnected)
        self.assertFalse(self.session.connected)

    def assertNoApp(self) -> None:
        """The server application was never built, so it never saw a byte; no identity."""
        self.assertEqual(self.apps.built, [])
        self.assertEqual(self.apps.received, b"")
        self.assertIsNone(self.session.identity)

    def decisions(self, **match: object) -> list[dict[str, Any]]:
        return self.log.of("auth.decision", **match)

    def assertDenied(
        self, decision: dict[str, Any], reason: str, mechanism: str | None = None, attempted: str | None = None
    ) -> None:
        self.assertEqual(decision["result"], "denied")
        self.assertIsNone(decision["identity"])
        self.assertEqual(decision["mechanism"], mechanism)
        self.assertEqual(decision["attempted"], attempted)
        self.assertIn(reason, decision["reason"])
        self.assertEqual(decision["peer"], "127.0.0.1:54321")

    def assertOneDenial(self, reason: str, mechanism: str | None = None, attempted: str | None = None) -> None:
        [decision] = self.decisions()
        self.assertDenied(decision, reason, mechanism, attempted)

    def serverApp(self) -> RecordingProtocol:
        [app] = self.apps.built
        return app

    def appIdentity(self) -> Identity:
        return identity_of(self.serverApp())


# -- greeting and offered mechanisms ----------------------------------------------


def facts(peer_chain: tuple[Any, ...] = ()) -> HandshakeFacts:
    return HandshakeFacts(
        role="server",
        peer="127.0.0.1:54321",
        tls_version="TLSv1.3",
        cipher=None,
        group=None,
        sni=None,
        alpn=None,
        resumed=False,
        peer_certificate=None,
        peer_chain=peer_chain,
    )


class GreetingTests(ExchangeTestCase):
    def test_testMechanismsProvideTheirInterfaces(self) -> None:
        """The test doubles honour the contracts the exchange relies on."""
        self.assertTrue(verifyObject(IMechanismProvider, self.passwords))
        self.assertTrue(verifyObject(IMechanismFactory, ToyMechanismFactory()))
        self.assertTrue(verifyObject(IServerMechanism, ToyMechanism()))
        self.assertTrue(verifyObject(ISecondFactor, self.totp))
        self.assertTrue(verifyObject(IClientMechanism, ToyClientMechanism()))

    def test_preferenceOrder(self) -> None:
        """
        The greeting is exactly C{SECURENET 1 AUTH <mechs>}, strongest first
        whatever order the checkers list them in; mechanisms the server does
        not rank come last.
        """
        names = ("TEST", "PLAIN", "APIKEY", "SCRAM-SHA-256", "OAUTHBEARER", "SCRAM-SHA-256-PLUS")
        provider = PasswordChecker(*(ToyMechanismFactory(n) for n in names))
        self.connect(self.portal(AllowAnonymousAccess(), provider, CertificateChecker()), client="alice")
        self.assertEqual(
            self.lines(),
            ["SECURENET 1 AUTH EXTERNAL SCRAM-SHA-256-PLUS SCRAM-SHA-256 OAUTHBEARER APIKEY PLAIN ANONYMOUS TEST"],
        )
        self.assertOpen()
        self.assertNoApp()
        self.assertEqual(self.decisions(), [])

    def test_externalNeedsCertificateAndChecker(self) -> None:
        """EXTERNAL is offered only when the client presented a verified certificate AND a certificate checker exists."""
        cases = [
            ("alice", (self.passwords,), GREETING),
            (None, (self.passwords, CertificateChecker()), GREETING),
            ("alice", (self.passwords, CertificateChecker()), "SECURENET 1 AUTH EXTERNAL TEST"),
        ]
        for client, checkers, greeting in cases:
            self.setUp()
            self.connect(self.portal(*checkers), client=client)
            self.assertEqual(self.lines(), [greeting], client)
            if "EXTERNAL" not in greeting:
                unknown = "NO UNKNOWN-MECHANISM mechanism not offered; use one of TEST"
                # The first line may be a pipelined guess: answered, not counted, not logged ...
                self.send("AUTH EXTERNAL =")
                self.assertEqual(self.lines()[1:], [unknown])
                self.assertEqual((self.exchange.attempts, self.decisions()), (0, []))
                # ... only the first: a second one is an attempt like any other.
                self.send("AUTH EXTERNAL =")
                self.assertEqual(self.lines()[2:], [unknown])
                self.assertEqual(self.exchange.attempts, 1)
                self.assertOneDenial("mechanism 'EXTERNAL' not offered")
                self.assertOpen()
                self.assertNoApp()

    def test_anonymousNeedsAnonymousChecker(self) -> None:
        """ANONYMOUS is offered only with an anonymous checker; then it works without a certificate."""
        self.connect(self.portal(self.passwords))
        self.assertEqual(self.lines(), [GREETING])
        self.setUp()
        self.connect(self.portal(self.passwords, AllowAnonymousAccess()))
        self.assertEqual(self.lines(), ["SECURENET 1 AUTH ANONYMOUS TEST"])
        self.send(f"AUTH ANONYMOUS {b64('trace')}")
        lines, rest = self.transcript()
        self.assertEqual(lines[1:], ["OK anonymous"])
        self.assertEqual(rest, SERVER_DATA)
        self.assertTrue(self.appIdentity().anonymous)

    def test_plusNeedsChannelBindings(self) -> None:
        """A -PLUS mechanism is left out when the connection has no channel binding of either kind."""
        plus = ToyMechanismFactory("X-PLUS")
        portal = self.portal(PasswordChecker(ToyMechanismFactory("TEST"), plus))
        self.assertEqual(list(offered_mechanisms(portal, True, ChannelBindings())), ["TEST"])
        for bindings in (ChannelBindings(tls_exporter=b"e" * 32), ChannelBindings(tls_server_end_point=b"h" * 32)):
            self.assertEqual(list(offered_mechanisms(portal, True, bindings)), ["TEST", "X-PLUS"])
        # A real TLS 1.3 connection has bindings: offered, and the mechanism gets them.
        self.connect(portal)
        self.assertEqual(self.lines(), ["SECURENET 1 AUTH TEST X-PLUS"])
        self.send("AUTH X-PLUS")
        [(_, bindings, peer)] = plus.runs
        self.assertEqual(len(bindings.tls_exporter or b""), 32)
        self.assertIsNotNone(bindings.tls_server_end_point)
        self.assertEqual(peer, "127.0.0.1:54321")

    def test_channelBindingsComputedOnlyWhenNeeded(self) -> None:
        """
        The server computes a connection's channel bindings only if some
        mechanism binds to the channel, and then once (for the offer and the
        mechanism both).
        """
        calls: list[str] = []

        def spy(connection: Any, role: Literal["server", "client"]) -> ChannelBindings:
            calls.append(role)
            return channel_bindings(connection, role)

        self.patch(session_module, "channel_bindings", spy)
        self.connect(self.portal(CertificateChecker(), self.passwords), client="alice")
        self.send("AUTH EXTERNAL =")
        self.assertEqual(self.transcript()[0][1:], ["OK alice"])
        self.assertEqual(calls, [])
        self.setUp()
        plus = ToyMechanismFactory("X-PLUS")
        self.connect(self.portal(PasswordChecker(plus)))
        self.send("AUTH X-PLUS")
        [(_, bindings, _)] = plus.runs
        self.assertEqual(len(bindings.tls_exporter or b""), 32)
        self.assertEqual(calls, ["server"])

    def test_offeredMechanismsDirectly(self) -> None:
        """EXTERNAL needs a peer chain and ICertificateCredentials; ANONYMOUS needs IAnonymous; one entry per name."""
        first, second = ToyMechanismFactory("TEST"), ToyMechanismFactory("TEST")
        both = self.portal(CertificateChecker(), PasswordChecker(first, second))
        self.assertEqual(list(offered_mechanisms(both, False, ChannelBindings())), ["TEST"])
        self.assertEqual(list(offered_mechanisms(both, True, ChannelBindings())), ["EXTERNAL", "TEST"])
        self.assertIs(offered_mechanisms(both, False, ChannelBindings())["TEST"], first)
        self.assertEqual(list(offered_mechanisms(self.portal(self.passwords), True, ChannelBindings())), ["TEST"])
        anonymous = self.portal(AllowAnonymousAccess())
        self.assertEqual(list(offered_mechanisms(anonymous, False, ChannelBindings())), ["ANONYMOUS"])

    def test_nothingOffered(self) -> None:
        """With nothing to offer the greeting is exactly C{SECURENET 1 AUTH}, no trailing space."""
        self.connect(self.portal(CertificateChecker()))
        self.assertEqual(self.lines(), ["SECURENET 1 AUTH"])


# -- each result code ----------------------------------------------------------------


class ResultCodeTests(ExchangeTestCase):
    def test_authFailedThenRetry(self) -> None:
        """
        NO AUTH-FAILED: generic text, the connection stays open, and the next
        attempt on it can succeed.
        """
        self.connect()
        self.send("AUTH TEST", response("alice", "wrong"))
        self.assertEqual(self.lines(), [GREETING, CHALLENGE_LINE, AUTH_FAILED])
        self.assertOpen()
        self.assertOneDenial("wrong password", "TEST", "alice")
        self.assertNoApp()
        # An unknown user looks exactly the same on the wire.
        self.send("AUTH TEST", response("mallory", "x"))
        self.assertEqual(self.lines()[3:], [CHALLENGE_LINE, AUTH_FAILED])
        self.send("AUTH TEST", response("alice", "wonderland"))
        lines, rest = self.transcript()
        self.assertEqual(lines[5:], [CHALLENGE_LINE, ok("alice")])
        self.assertEqual(rest, SERVER_DATA)
        self.assertEqual(self.appIdentity().avatar_id, "alice")
        self.assertEqual(self.passwords.calls, [b"alice", b"mallory", b"alice"])
        self.assertEqual([d["result"] for d in self.decisions()], ["denied", "denied", "ok"])

    def test_auditUnavailable(self) -> None:
        """
        While the audit log cannot be written: NO AUDIT-UNAVAILABLE, no
        checker is asked, no app; once a write succeeds again the next
        attempt on the same connection is checked and can succeed.
        """
        disk, _ = failing_sink(self)
        self.connect()
        audit.auth_decision("denied", None, None, fields={"peer": "p"}, reason="probe")  # the sink fails here
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.lines()[-1], "NO AUDIT-UNAVAILABLE the service cannot record authentications now; try again later")
        self.assertOpen()
        self.assertNoApp()
        self.assertEqual(self.passwords.calls, [])
        disk.fixed = True
        audit.auth_decision("denied", None, None, fields={"peer": "p"}, reason="probe")  # written: recording again
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.transcript()[0][-1], ok("alice"))
        self.assertEqual(self.passwords.calls, [b"alice"])
        self.flushLoggedErrors(OSError)

    def test_databaseUnavailable(self) -> None:
        """
        While the credential database cannot be reached (the checker's store
        fails with StoreUnavailable): NO DB-UNAVAILABLE, open, no app, one
        denial naming why; once it is back the next attempt on the same
        connection is checked and succeeds.
        """
        down = [True]
        check = self.passwords.requestAvatarId

        def requestAvatarId(credentials: Any) -> Deferred[Any]:
            if down:
                return defer.fail(StoreUnavailable("postgresql://db: the credential database cannot be reached"))
            return check(credentials)

        self.patch(self.passwords, "requestAvatarId", requestAvatarId)
        self.connect()
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.lines()[-1], "NO DB-UNAVAILABLE the credential database cannot be reached now; try again later")
        self.assertOpen()
        self.assertNoApp()
        self.assertOneDenial("postgresql://db: the credential database cannot be reached", "TEST", "alice")
        down.clear()
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.transcript()[0][-1], ok("alice"))

    def test_throttleDatabaseUnavailable(self) -> None:
        """The throttle's counters out of reach: NO DB-UNAVAILABLE before any checker is asked (fail closed)."""
        store = MemoryStore()
        unreachable = StoreUnavailable("postgresql://db: the credential database cannot be reached")
        self.patch(store, "get_failures", lambda key: defer.fail(unreachable))
        self.connect(throttle=Throttle(store, self.clock))
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.lines()[-1], "NO DB-UNAVAILABLE the credential database cannot be reached now; try again later")
        self.assertOpen()
        self.assertNoApp()
        self.assertEqual(self.passwords.calls, [])
        self.assertEqual(store.failures, {})

    def test_unknownMechanism(self) -> None:
        """NO UNKNOWN-MECHANISM names what is offered; open; the mechanism is never run."""
        self.connect()
        self.send("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=")
        self.assertEqual(self.lines(), [GREETING, "NO UNKNOWN-MECHANISM mechanism not offered; use one of TEST"])
        self.assertOpen()
        self.assertOneDenial("mechanism 'PLAIN' not offered")
        self.assertNoApp()
        self.assertEqual(self.passwords.factories[0].runs, [])

    def test_initialResponse(self) -> None:
        """The initial response is base64, C{=} is empty, and none at all is None."""
        self.connect(settings=ExchangeSettings(max_attempts=10))
        self.send("AUTH TEST aGk=", "*", "AUTH TEST =", "*", "AUTH TEST", "*")
        steps = [run[0].steps for run in self.passwords.factories[0].runs]
        self.assertEqual(steps, [[b"hi"], [b""], [None]])

    def test_malformed(self) -> None:
        """
        NO MALFORMED: base64 that is invalid (in AUTH or in a response), a
        MechanismError from the mechanism, a non-ASCII line.  Each stays open,
        is logged, and counts as an attempt.
        """
        self.connect(settings=ExchangeSettings(max_attempts=10))
        self.send("AUTH TEST !!!", "AUTH TEST YWI", "AUTH TEST", "not base64", "AUTH TEST", b64("no colon"))
        self.write("AUTH T\u00c9ST\r\n".encode("utf-8"))
        bad_base64 = "NO MALFORMED payload is not valid base64"
        self.assertEqual(
            self.lines(),
            [
                GREETING,
                bad_base64,
                bad_base64,
                CHALLENGE_LINE,
                bad_base64,
                CHALLENGE_LINE,
                "NO MALFORMED malformed mechanism data",
                "NO MALFORMED lines must be ASCII",
            ],
        )
        self.assertOpen()
        decisions = self.decisions()
        self.assertEqual(len(decisions), 5)
        self.assertDenied(decisions[0], "not valid base64")
        self.assertDenied(decisions[1], "not valid base64")
        self.assertDenied(decisions[2], "not valid base64", "TEST")
        self.assertDenied(decisions[3], "TEST expects one user:password response", "TEST")
        self.assertDenied(decisions[4], "non-ASCII line")
        self.assertEqual(self.exchange.attempts, 5)
        self.assertEqual(self.exchange.state, "READY")
        self.assertEqual(self.passwords.calls, [])
        self.assertNoApp()

    def test_badState(self) -> None:
        """NO BAD-STATE for anything but AUTH in READY (a TOTP line, another command, an empty line)."""
        self.connect()
        self.send(f"TOTP {TOTP_CODE}", "HELLO")
        self.assertEqual(self.lines(), [GREETING, BAD_STATE_READY, BAD_STATE_READY])
        self.assertOpen()
        first, second = self.decisions()
        self.assertDenied(first, "unexpected command 'TOTP'")
        self.assertDenied(second, "unexpected command 'HELLO'")
        self.assertEqual(self.totp.calls, [])
        self.assertNoApp()

    def test_aborted(self) -> None:
        """C{*} during a challenge: NO ABORTED, back to READY, open; a new AUTH works."""
        self.connect()
        self.send("AUTH TEST", "*")
        self.assertEqual(self.lines(), [GREETING, CHALLENGE_LINE, "NO ABORTED authentication cancelled"])
        self.assertOpen()
        self.assertOneDenial("client cancelled", "TEST")
        self.assertNoApp()
        self.assertEqual(self.exchange.state, "READY")
        self.send("AUTH TEST", response("bob", "builder"))
        self.assertEqual(self.transcript()[0][3:], [CHALLENGE_LINE, ok("bob")])

    def test_tooManyAttempts(self) -> None:
        """
        The third failure on a connection is answered NO TOO-MANY-ATTEMPTS
        and closes it; every failure is logged; no app even if the next line
        would have been right.
        """
        self.connect()
        for _ in range(3):
            self.send("AUTH TEST", response("alice", "wrong"))
        self.assertEqual(
            self.lines(),
            [
                GREETING,
                CHALLENGE_LINE,
                AUTH_FAILED,
                CHALLENGE_LINE,
                AUTH_FAILED,
                CHALLENGE_LINE,
                "NO TOO-MANY-ATTEMPTS 3 failed attempts; closing",
            ],
        )
        self.assertClosed()
        decisions = self.decisions()
        self.assertEqual(len(decisions), 3)
        for decision in decisions:
            self.assertDenied(decision, "wrong password", "TEST", "alice")
        self.assertNoApp()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_otherFailuresCountToo(self) -> None:
        """Failures of different kinds add up to the same limit."""
        self.connect(settings=ExchangeSettings(max_attempts=2))
        self.send("HELLO", "AUTH NOPE")
        self.assertEqual(self.lines(), [GREETING, BAD_STATE_READY, "NO TOO-MANY-ATTEMPTS 2 failed attempts; closing"])
        self.assertClosed()
        self.assertNoApp()

    def test_timeout(self) -> None:
        """
        Nothing happens before the deadline; at the deadline NO TIMEOUT and
        the connection is closed, even in the middle of a challenge.
        """
        self.connect()
        self.send("AUTH TEST")
        self.clock.advance(ExchangeSettings().deadline - 0.001)
        self.conn.pump.flush()
        self.assertEqual(self.lines(), [GREETING, CHALLENGE_LINE])
        self.assertOpen()
        self.assertEqual(self.decisions(), [])
        self.clock.advance(0.001)
        self.conn.pump.flush()
        self.assertEqual(self.lines(), [GREETING, CHALLENGE_LINE, "NO TIMEOUT authentication took too long"])
        self.assertClosed()
        self.assertOneDenial("the exchange did not finish within 30 s")
        self.assertNoApp()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutWhileChecking(self) -> None:
        """A checker that answers yes after the deadline builds no application and logs no second decision."""
        self.passwords.hold = True
        self.connect(settings=ExchangeSettings(deadline=5))
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.clock.advance(5)
        self.conn.pump.flush()
        self.assertEqual(self.lines()[-1], "NO TIMEOUT authentication took too long")
        self.assertClosed()
        self.passwords.pending[0].callback("alice")
        self.conn.pump.flush()
        self.assertOneDenial("within 5 s")
        self.assertNoApp()

    def test_lineTooLongWithNewline(self) -> None:
        """A line of max_line bytes including its LF (or CRLF) is read; one byte more: NO LINE-TOO-LONG, closed."""
        self.connect(settings=ExchangeSettings(max_attempts=10))
        longest = "AUTH " + "X" * (MAX_LINE - len("AUTH ") - 1)
        self.write(longest.encode() + b"\n")
        self.write(longest[:-1].encode() + b"\r\n")
        unknown = "NO UNKNOWN-MECHANISM mechanism not offered; use one of TEST"
        self.assertEqual(self.lines(), [GREETING, unknown, unknown])
        self.assertOpen()
        self.write(longest.encode() + b"\r\n")
        self.assertEqual(self.lines()[3:], ["NO LINE-TOO-LONG lines are limited to 8192 bytes"])
        self.assertClosed()
        self.assertDenied(self.decisions()[-1], "a line exceeded 8192 bytes")
        self.assertEqual(len(self.decisions()), 3)
        self.assertNoApp()

    def test_lineTooLongWithoutNewline(self) -> None:
        """
        An unterminated line is refused as soon as it cannot fit (max_line
        bytes with no LF), before more is buffered; what follows is dropped.
        """
        self.connect()
        self.write(b"A" * (MAX_LINE - 1))
        self.assertOpen()
        self.assertEqual(len(self.exchange.buffer), MAX_LINE - 1)
        self.write(b"A")
        self.assertEqual(self.lines(), [GREETING, "NO LINE-TOO-LONG lines are limited to 8192 bytes"])
        self.assertClosed()
        self.assertOneDenial("a line exceeded 8192 bytes")
        self.assertEqual(self.exchange.buffer, b"")
        self.exchange.dataReceived(b"more" * 1000)
        self.assertEqual(self.exchange.buffer, b"")
        self.assertNoApp()

    def test_lineTooLongInOneWrite(self) -> None:
        """A huge unterminated write is cut off at the first chunk; the buffer never holds it."""
        self.connect()
        sizes: list[int] = []
        receive = self.exchange.dataReceived

        def spy(data: bytes) -> None:
            receive(data)
            sizes.append(len(self.exchange.buffer))

        self.exchange.dataReceived = spy  # type: ignore[method-assign]
        self.write(b"A" * (200 * 1024))
        self.assertEqual(self.lines(), [GREETING, "NO LINE-TOO-LONG lines are limited to 8192 bytes"])
        self.assertClosed()
        self.assertEqual(set(sizes), {0})
        self.assertNoApp()

    def test_tooMuchData(self) -> None:
        """
        A client that keeps sending while the server checks: at most 64 KiB
        are held, then NO TOO-MUCH-DATA and close; a late yes builds nothing.
        """
        self.passwords.hold = True
        self.connect()
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(len(self.passwords.pending), 1)
        for _ in range(4):
            self.write(b"y" * (16 * 1024))
        self.assertOpen()
        self.assertEqual(len(self.exchange.buffer), 64 * 1024)
        self.write(b"y")
        self.assertEqual(self.lines(), [GREETING, CHALLENGE_LINE, "NO TOO-MUCH-DATA wait for each answer before sending more"])
        self.assertClosed()
        self.assertEqual(self.exchange.buffer, b"")
        self.passwords.pending[0].callback("alice")
        self.conn.pump.flush()
        self.assertOneDenial("more than 65536 bytes sent before authentication")
        self.assertNoApp()


# -- success ----------------------------------------------------------------------------


class SuccessTests(ExchangeTestCase):
    def test_decisionText(self) -> None:
        """
        The decision's text line, as a text log file shows it: rendered once,
        values taken literally (an identity with braces is no template);
        the fields are all there for structured observers.
        """
        self.connect()
        self.send("AUTH TEST", response("brace", "wrong"))
        self.send("AUTH TEST", response("brace", "curly"))
        denied, ok_event = self.decisions()
        cipher = ok_event["cipher"]
        self.assertEqual(
            formatEvent(ok_event),
            f"authentication ok for 127.0.0.1:54321 by TEST: x{{peer}}{{0}}{{log_format}}y over TLSv1.3 {cipher}",
        )
        self.assertEqual(ok_event["identity"], "x{peer}{0}{log_format}y")
        self.assertEqual(ok_event["peer"], "127.0.0.1:54321")
        self.assertEqual(ok_event["tls_version"], "TLSv1.3")
        self.assertEqual(ok_event["reason_text"], "")
        self.assertEqual(
            formatEvent(denied),
            f"authentication denied for 127.0.0.1:54321 by TEST: brace (wrong password) over TLSv1.3 {cipher}",
        )
        self.assertEqual((denied["attempted"], denied["reason_text"]), ("brace", " (wrong password)"))
        self.assertIsNone(denied["identity"])

    def test_decisionTextNeverSaysNone(self) -> None:
        """A refusal before any user was named shows C{-}, not Python's None, for the identity and mechanism."""
        self.connect()
        self.send("HELLO")
        [denied] = self.decisions()
        self.assertEqual((denied["identity"], denied["mechanism"]), (None, None))
        text = formatEvent(denied)
        self.assertNotIn("None", text)
        self.assertIn("by -: - (unexpected command 'HELLO')", text)

    def test_okWithPercentEncodedIdentity(self) -> None:
        """
        C{OK <identity> <base64>}: the avatar id percent-encoded (space and
        non-ASCII; the spec's safe characters kept), then the mechanism's
        success data; the app has the identity; one ok decision.
        """
        self.connect()
        self.send("AUTH TEST", response("zoe", "zebra"))
        lines, rest = self.transcript()
        self.assertEqual(lines, [GREETING, CHALLENGE_LINE, ok("Zo%C3%AB%20Doe/ops@example.org")])
        self.assertEqual(decode_identity("Zo%C3%AB%20Doe/ops@example.org"), "Zo\u00eb Doe/ops@example.org")
        self.assertEqual(rest, SERVER_DATA)
        identity = self.appIdentity()
        self.assertEqual(
            (identity.avatar_id, identity.mechanism, identity.second_factor), ("Zo\u00eb Doe/ops@example.org", "TEST", None)
        )
        self.assertFalse(identity.mfa)
        self.assertIs(self.session.identity, identity)
        [decision] = self.decisions()
        self.assertEqual(
            (decision["result"], decision["mechanism"], decision["identity"], decision["second_factor"], decision["reason"]),
            ("ok", "TEST", "Zo\u00eb Doe/ops@example.org", None, None),
        )

    def test_identityEncoding(self) -> None:
        """Nothing that could break the line survives encoding; decoding undoes it exactly."""
        for avatar_id, encoded in [
            ("alice", "alice"),
            ("a b", "a%20b"),
            ("x\r\nNO FAKE", "x%0D%0ANO%20FAKE"),
            ("100%", "100%25"),
            ("spiffe://example.org/ns/a,b=c+d:e@f.g-h_i~j", "spiffe://example.org/ns/a,b=c+d:e@f.g-h_i~j"),
            ("\u00fcber", "%C3%BCber"),
        ]:
            self.assertEqual(encode_identity(avatar_id), encoded)
            self.assertEqual(decode_identity(encoded), avatar_id)

    def test_pipelinedBytesGoToTheApp(self) -> None:
        """Bytes after the final line reach the app once it exists, in order; the deadline is cancelled."""
        self.connect()
        self.send("AUTH TEST")
        self.write(response("alice", "wonderland").encode() + b"\r\nearly ")
        self.write(b"late")
        lines, rest = self.transcript()
        self.assertEqual(lines, [GREETING, CHALLENGE_LINE, ok("alice")])
        self.assertEqual(rest, SERVER_DATA)
        app = self.serverApp()
        self.assertEqual(b"".join(app.received), b"early late")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.session.exchange)
        self.assertEqual(len(self.decisions(result="ok")), 1)
        self.assertEqual(self.decisions(result="denied"), [])

    def test_noSuccessData(self) -> None:
        """A mechanism with no success data gets a bare C{OK <identity>}."""
        self.connect(self.portal(AllowAnonymousAccess()))
        self.send("AUTH ANONYMOUS =")
        self.assertEqual(self.transcript(), (["SECURENET 1 AUTH ANONYMOUS", "OK anonymous"], SERVER_DATA))


class ExternalTests(ExchangeTestCase):
    def portalWithCertificates(self) -> Portal:
        return self.portal(CertificateChecker(), self.passwords, self.totp)

    def test_external(self) -> None:
        """C{AUTH EXTERNAL =}, with no initial response, or naming the certificate's identity: OK; never TOTP."""
        for command in ("AUTH EXTERNAL =", "AUTH EXTERNAL", f"AUTH EXTERNAL {b64('alice')}"):
            self.setUp()
            self.connect(self.portalWithCertificates(), client="alice")
            self.send(command)
            self.assertEqual(self.transcript(), (["SECURENET 1 AUTH EXTERNAL TEST", "OK alice"], SERVER_DATA), command)
            identity = self.appIdentity()
            self.assertEqual((identity.avatar_id, identity.mechanism, identity.second_factor), ("alice", "EXTERNAL", None))
            assert identity.certificate is not None
            self.assertEqual(identity.certificate.common_name, "alice")
            [decision] = self.decisions()
            self.assertEqual((decision["result"], decision["mechanism"], decision["identity"]), ("ok", "EXTERNAL", "alice"))
            self.assertEqual(self.totp.calls, [])

    def test_otherAuthorizationId(self) -> None:
        """An authorization id other than the certificate's identity: NO AUTH-FAILED (open), logged with both names."""
        self.connect(self.portalWithCertificates(), client="alice")
        self.send(f"AUTH EXTERNAL {b64('bob')}")
        self.assertEqual(self.lines(), ["SECURENET 1 AUTH EXTERNAL TEST", AUTH_FAILED])
        self.assertOpen()
        self.assertOneDenial("authorization id 'bob' is not 'alice'", "EXTERNAL")
        self.assertNoApp()
        self.send("AUTH EXTERNAL =")
        self.assertEqual(self.transcript()[0][2:], ["OK alice"])

    def test_ourClientWithOtherAuthorizationId(self) -> None:
        """Our client asking EXTERNAL for another name fails with AuthenticationFailed; no app either side."""
        conn = self.connect(self.portalWithCertificates(), client="alice", raw=False, mechanism=ExternalClientMechanism("bob"))
        error = self.failureResultOf(conn.client_ready, AuthenticationFailed).value
        self.assertEqual((type(error), error.code, error.text), (AuthenticationFailed, "AUTH-FAILED", "authentication failed"))
        self.assertEqual(self.client_apps.built, [])
        self.assertNoApp()


# -- second factor ---------------------------------------------------------------------


class SecondFactorTests(ExchangeTestCase):
    def test_totpByHand(self) -> None:
        """
        NEXT TOTP after the first factor; a wrong code is NO AUTH-FAILED and
        the client may try again; AUTH meanwhile is BAD-STATE; the right code
        gives OK with the first mechanism's success data, second_factor TOTP.
        """
        self.connect(self.portal(self.passwords, self.totp))
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.lines(), [GREETING, CHALLENGE_LINE, "NEXT TOTP"])
        self.assertEqual(self.exchange.state, "TOTP")
        self.assertEqual(self.decisions(), [])
        self.send("TOTP 654321")
        self.assertEqual(self.lines()[3:], [AUTH_FAILED])
        self.assertEqual(self.exchange.state, "TOTP")
        self.assertOpen()
        self.assertOneDenial("TOTP: wrong code", "TEST", "alice")
        self.send("AUTH TEST")
        self.assertEqual(self.lines()[4:], ["NO BAD-STATE expected TOTP <code>"])
        self.assertEqual(self.exchange.state, "TOTP")
        self.assertNoApp()
        self.send(f"TOTP {TOTP_CODE}")
        lines, rest = self.transcript()
        self.assertEqual(lines[5:], [ok("alice")])
        self.assertEqual(rest, SERVER_DATA)
        identity = self.appIdentity()
        self.assertEqual((identity.avatar_id, identity.mechanism, identity.second_factor), ("alice", "TEST", "TOTP"))
        self.assertTrue(identity.mfa)
        self.assertEqual(self.totp.calls, [("alice", "654321"), ("alice", TOTP_CODE)])
        [decision] = self.decisions(result="ok")
        self.assertEqual((decision["mechanism"], decision["identity"], decision["second_factor"]), ("TEST", "alice", "TOTP"))

    def test_malformedCode(self) -> None:
        """A TOTP line without 6 to 8 digits is NO MALFORMED; the checker never sees it; still in TOTP."""
        self.connect(self.portal(self.passwords, self.totp), settings=ExchangeSettings(max_attempts=10))
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.send("TOTP 12ab56", "TOTP 12345", "TOTP", "TOTP 123456789", "TOTP  123456")
        self.assertEqual(self.lines()[3:], ["NO MALFORMED expected TOTP and 6 to 8 digits"] * 5)
        self.assertEqual(self.totp.calls, [])
        self.assertEqual(self.exchange.state, "TOTP")
        self.send("TOTP 1234567")
        self.assertEqual(self.lines()[8:], [AUTH_FAILED])
        self.assertEqual(self.totp.calls, [("alice", "1234567")])
        self.send(f"TOTP {TOTP_CODE}")
        self.assertEqual(self.transcript()[0][9:], [ok("alice")])

    def test_notEnrolledOrNotAllowed(self) -> None:
        """No NEXT TOTP for a user who is not enrolled, nor after a mechanism that does not allow a second factor."""
        self.connect(self.portal(self.passwords, self.totp))
        self.send("AUTH TEST", response("bob", "builder"))
        self.assertEqual(self.transcript()[0], [GREETING, CHALLENGE_LINE, ok("bob")])
        self.setUp()
        checker = PasswordChecker(ToyMechanismFactory("TEST", second_factor_allowed=False))
        self.connect(self.portal(checker, self.totp))
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.transcript()[0], [GREETING, CHALLENGE_LINE, ok("alice")])
        self.assertIsNone(self.appIdentity().second_factor)

    def test_tooManyWrongCodes(self) -> None:
        """Wrong codes count as failed attempts: the third closes the connection."""
        self.connect(self.portal(self.passwords, self.totp))
        self.send("AUTH TEST", response("alice", "wonderland"), "TOTP 000000", "TOTP 000001", "TOTP 000002")
        self.assertEqual(self.lines()[3:], [AUTH_FAILED, AUTH_FAILED, "NO TOO-MANY-ATTEMPTS 3 failed attempts; closing"])
        self.assertClosed()
        self.assertNoApp()

    def test_ourClientGivesTheCode(self) -> None:
        """Our client answers NEXT TOTP from its totp source and connects; the server app sees second_factor TOTP."""
        codes: list[str] = []

        def totp() -> str:
            codes.append(TOTP_CODE)
            return TOTP_CODE + "\n"

        conn = self.connect(self.portal(self.passwords, self.totp), raw=False, mechanism=ToyClientMechanism(), totp=totp)
        client_app = cast(RecordingProtocol, self.successResultOf(conn.client_ready))
        self.assertEqual(self.client_apps.built, [client_app])
        self.assertEqual(codes, [TOTP_CODE])
        guard = self.client_guard
        assert isinstance(guard, ClientSession)
        self.assertEqual(guard.authenticated_as, "alice")
        identity = self.appIdentity()
        self.assertEqual((identity.second_factor, identity.mfa), ("TOTP", True))
        self.assertEqual(b"".join(client_app.received), SERVER_DATA)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ourClientWithoutCode(self) -> None:
        """Without a totp source our client fails with TOTP-REQUIRED; neither app is built."""
        conn = self.connect(self.portal(self.passwords, self.totp), raw=False, mechanism=ToyClientMechanism())
        error = self.failureResultOf(conn.client_ready, AuthenticationFailed).value
        self.assertEqual(error.code, "TOTP-REQUIRED")
        self.assertEqual(self.client_apps.built, [])
        self.assertNoApp()
        self.assertClosed()
        self.assertEqual(self.totp.calls, [])


class HandshakeEventTests(ExchangeTestCase):
    """
    On a session the decisions report the handshake: one event per
    connection, and every connection is reported.
    """

    def serverEvents(self) -> list[tuple[str, str]]:
        return [
            (e["securenet_event"], e["result"])
            for e in self.log.events
            if e["securenet_event"] in ("tls.handshake", "auth.decision") and e.get("role", "server") == "server"
        ]

    def test_successIsOneEvent(self) -> None:
        """An authenticated connection: one auth.decision, with the handshake's fields; no tls.handshake."""
        self.connect(self.portal(CertificateChecker()), client="alice")
        self.send("AUTH EXTERNAL =")
        self.conn.server_guard.transport.loseConnection()
        self.conn.pump.flush()
        self.assertEqual(self.serverEvents(), [("auth.decision", "ok")])
        [decision] = self.decisions()
        self.assertEqual((decision["tls_version"], decision["peer_subject"]), ("TLSv1.3", "CN=alice"))
        self.assertIsNotNone(decision["cipher"])

    def test_denialsCarryTheHandshake(self) -> None:
        """Denied attempts, then the client leaves: the denials report the handshake."""
        self.connect()
        self.send("AUTH TEST", response("alice", "wrong"))
        transport_of(self.rawClient()).loseConnection()
        self.conn.pump.flush()
        self.assertEqual(self.serverEvents(), [("auth.decision", "denied")])
        self.assertEqual(self.decisions()[0]["tls_version"], "TLSv1.3")

    def test_timeoutCarriesTheHandshake(self) -> None:
        """The deadline passes: the TIMEOUT denial reports the handshake."""
        self.connect()
        self.clock.advance(ExchangeSettings().deadline)
        self.conn.pump.flush()
        self.assertClosed()
        self.assertEqual(self.serverEvents(), [("auth.decision", "denied")])

    def test_leftBeforeAnyDecision(self) -> None:
        """
        A client that completes the handshake and leaves without a word:
        the handshake is reported alone, when the connection ends.
        """
        self.connect(client="alice")
        self.assertEqual(self.serverEvents(), [])
        transport_of(self.rawClient()).loseConnection()
        self.conn.pump.flush()
        self.assertClosed()
        self.assertEqual(self.serverEvents(), [("tls.handshake", "ok")])
        [event] = self.log.of("tls.handshake", role="server")
        self.assertEqual((event["tls_version"], event["peer_subject"]), ("TLSv1.3", "CN=alice"))
        self.assertNoApp()


# -- our client ----------------------------------------------------------------------------


class ClientTests(ExchangeTestCase):
    def test_success(self) -> None:
        """Our client runs TEST, checks the success data, and connects; both apps talk."""
        mechanism = ToyClientMechanism("zoe", "zebra")
        conn = self.connect(raw=False, mechanism=mechanism)
        client_app = cast(RecordingProtocol, self.successResultOf(conn.client_ready))
        guard = self.client_guard
        assert isinstance(guard, ClientSession)
        self.assertEqual(guard.authenticated_as, "Zo\u00eb Doe/ops@example.org")
        self.assertEqual(mechanism.verified, [SUCCESS_DATA])
        transport_of(client_app).write(CLIENT_DATA)
        conn.pump.flush()
        self.assertEqual(self.apps.received, CLIENT_DATA)
        self.assertEqual(b"".join(client_app.received), SERVER_DATA)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refused(self) -> None:
        """NO from the server: AuthenticationFailed with its code and text; neither app; closed."""
        conn = self.connect(raw=False, mechanism=ToyClientMechanism(password="wrong"))
        error = self.failureResultOf(conn.client_ready, AuthenticationFailed).value
        self.assertEqual((type(error), error.code, error.text), (AuthenticationFailed, "AUTH-FAILED", "authentication failed"))
        self.assertEqual(str(error), "authentication failed: AUTH-FAILED authentication failed")
        self.assertEqual(self.client_apps.built, [])
        self.assertNoApp()
        self.assertClosed()
        self.assertOneDenial("wrong password", "TEST", "alice")

    def test_serverDoesNotGreet(self) -> None:
        """A TLS server whose app speaks first: ProtocolViolation; our client sends nothing; no client app."""
        server_apps = RecordingFactory(b"220 mail.example.org ESMTP\r\n")
        conn = self.connect(raw=False, server_factory=NotSecurenetFactory(server_apps, self.portal(), self.clock))
        error = self.failureResultOf(conn.client_ready, ProtocolViolation).value
        self.assertEqual(error.code, "PROTOCOL")
        self.assertIn("did not greet with SECURENET", error.text)
        self.assertEqual(self.client_apps.built, [])
        self.assertEqual(server_apps.received, b"")
        self.assertTrue(fake_transport(conn.client_tls).disconnected)

    def test_serverSaysNothing(self) -> None:
        """A TLS server that never greets: our client gives up at its deadline with ProtocolViolation TIMEOUT."""
        server_apps = RecordingFactory()
        conn = self.connect(raw=False, server_factory=NotSecurenetFactory(server_apps, self.portal(), self.clock))
        self.clock.advance(CLIENT_DEADLINE - 0.001)
        conn.pump.flush()
        self.assertNoResult(conn.client_ready)
        self.clock.advance(0.001)
        conn.pump.flush()
        error = self.failureResultOf(conn.client_ready, ProtocolViolation).value
        self.assertEqual(error.code, "TIMEOUT")
        self.assertEqual(self.client_apps.built, [])
        self.assertTrue(fake_transport(conn.client_tls).disconnected)
        self.assertEqual(server_apps.received, b"")

    def test_serverClosesDuringExchange(self) -> None:
        """The server closes while it checks: ProtocolViolation CLOSED; neither app."""
        self.passwords.hold = True
        conn = self.connect(raw=False, mechanism=ToyClientMechanism())
        self.assertEqual(len(self.passwords.pending), 1)
        self.assertNoResult(conn.client_ready)
        conn.server_guard.transport.loseConnection()
        conn.pump.flush()
        error = self.failureResultOf(conn.client_ready, ProtocolViolation).value
        self.assertEqual(error.code, "CLOSED")
        self.assertEqual(self.client_apps.built, [])
        self.passwords.pending[0].callback("alice")
        conn.pump.flush()
        self.assertNoApp()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_serverNotAuthenticated(self) -> None:
        """
        The server's success data does not verify: ServerNotAuthenticated;
        the client app is never built and no client byte reaches the server.
        """
        mechanism = ToyClientMechanism(expect=b"the real server's proof")
        conn = self.connect(raw=False, mechanism=mechanism)
        error = self.failureResultOf(conn.client_ready, ServerNotAuthenticated).value
        self.assertEqual(error.code, "SERVER-PROOF")
        self.assertEqual(mechanism.verified, [SUCCESS_DATA])
        self.assertEqual(self.client_apps.built, [])
        self.assertEqual(self.apps.received, b"")
        self.assertTrue(fake_transport(conn.client_tls).disconnected)
        guard = self.client_guard
        assert isinstance(guard, ClientSession)
        self.assertIsNone(guard.authenticated_as)

    # Pipelining EXTERNAL (docs/protocol.md)

    def silentServer(self, client_auth: str = "optional") -> RecordingFactory:
        """Connect our client (certificate alice) to a TLS server that never greets; return its app."""
        server_apps = RecordingFactory()
        self.connect(
            raw=False,
            client="alice",
            client_auth=client_auth,
            server_factory=NotSecurenetFactory(server_apps, self.portal(), self.clock),
            mechanism=self.pipelineMechanism,
        )
        return server_apps

    pipelineMechanism: Any = None

    def recordExchanges(self) -> list[ServerExchange]:
        """Every server exchange started from now on (they are gone from the session once done)."""
        exchanges: list[ServerExchange] = []
        start = ServerExchange.start

        def recording(exchange: ServerExchange) -> None:
            exchanges.append(exchange)
            start(exchange)

        self.patch(ServerExchange, "start", recording)
        return exchanges

    def test_pipelinedExternal(self) -> None:
        """
        With a certificate the server asked for and no other mechanism
        chosen, our client sends AUTH EXTERNAL without waiting for the
        greeting; the server takes it as the first line: OK, one decision.
        """
        self.assertEqual(self.silentServer().received, b"AUTH EXTERNAL =\r\n")
        self.setUp()
        exchanges = self.recordExchanges()
        conn = self.connect(self.portal(CertificateChecker(), self.passwords), raw=False, client="alice")
        self.successResultOf(conn.client_ready)
        guard = self.client_guard
        assert isinstance(guard, ClientSession)
        self.assertEqual(guard.authenticated_as, "alice")
        [exchange] = exchanges
        self.assertEqual((exchange.lines, exchange.attempts), (1, 0))
        [decision] = self.decisions()
        self.assertEqual((decision["result"], decision["mechanism"]), ("ok", "EXTERNAL"))
        self.assertEqual(self.appIdentity().avatar_id, "alice")

    def test_pipelinedExternalMechanism(self) -> None:
        """An explicit EXTERNAL mechanism is pipelined too, with its authorization id."""
        self.pipelineMechanism = ExternalClientMechanism("alice")
        self.assertEqual(self.silentServer().received, f"AUTH EXTERNAL {b64('alice')}\r\n".encode())

    def test_pipelinedMechanismFails(self) -> None:
        """
        An EXTERNAL mechanism that cannot produce its initial response:
        AuthenticationFailed CLIENT before anything is sent; no app either side.
        """

        @implementer(IClientMechanism)
        class Broken:
            name = "EXTERNAL"

            def initial(self) -> bytes | None:
                raise ValueError("no authorization id")

            def respond(self, challenge: bytes) -> bytes:
                raise AssertionError("not reached")

            def verify_success(self, data: bytes | None) -> None:
                raise AssertionError("not reached")

        self.pipelineMechanism = Broken()
        server_apps = self.silentServer()
        error = self.failureResultOf(self.conn.client_ready, AuthenticationFailed).value
        self.assertEqual((error.code, error.text), ("CLIENT", "cannot authenticate: no authorization id"))
        self.assertEqual(server_apps.received, b"")
        self.assertEqual(self.client_apps.built, [])
        self.assertTrue(fake_transport(self.conn.client_tls).disconnected)

    def test_noPipeliningOtherwise(self) -> None:
        """
        No pipelining when the server did not ask for a certificate, or
        another mechanism (or a chooser) was given: the client waits.
        """
        self.assertEqual(self.silentServer(client_auth="none").received, b"")
        for mechanism in (ToyClientMechanism(), lambda offered, bindings, cert: ToyClientMechanism()):
            self.setUp()
            self.pipelineMechanism = mechanism
            self.assertEqual(self.silentServer().received, b"", mechanism)

    def test_pipelinedExternalNotOffered(self) -> None:
        """
        EXTERNAL not offered: the server answers NO UNKNOWN-MECHANISM, which
        counts for nothing and is not logged; the client chooses again from
        the greeting (here ANONYMOUS) and succeeds.
        """
        exchanges = self.recordExchanges()
        conn = self.connect(self.portal(self.passwords, AllowAnonymousAccess()), raw=False, client="alice")
        self.successResultOf(conn.client_ready)
        [exchange] = exchanges
        self.assertEqual((exchange.lines, exchange.attempts), (2, 0))
        [decision] = self.decisions()
        self.assertEqual((decision["result"], decision["mechanism"], decision["identity"]), ("ok", "ANONYMOUS", "anonymous"))

    def test_pipelinedExternalNothingElse(self) -> None:
        """EXTERNAL not offered and nothing we can use: NO-MECHANISM, nothing sent, neither app."""
        exchanges = self.recordExchanges()
        conn = self.connect(raw=False, client="alice")
        error = self.failureResultOf(conn.client_ready, AuthenticationFailed).value
        self.assertEqual(error.code, "NO-MECHANISM")
        [exchange] = exchanges
        self.assertEqual((exchange.lines, exchange.attempts, self.decisions()), (1, 0, []))
        self.assertEqual(self.client_apps.built, [])
        self.assertNoApp()

    def test_pipelinedExternalNotOfferedButAccepted(self) -> None:
        """
        A server that greets without EXTERNAL and then accepts the pipelined
        EXTERNAL anyway is not a securenet server: ProtocolViolation, no
        client app, no application byte sent.
        """
        server_apps = RecordingFactory(b"SECURENET 1 AUTH TEST\r\nOK alice\r\n")
        conn = self.connect(raw=False, client="alice", server_factory=NotSecurenetFactory(server_apps, self.portal(), self.clock))
        error = self.failureResultOf(conn.client_ready, ProtocolViolation).value
        self.assertIn("pipelined AUTH EXTERNAL", error.text)
        self.assertEqual(self.client_apps.built, [])
        self.assertEqual(server_apps.received, b"AUTH EXTERNAL =\r\n")
        self.assertTrue(fake_transport(conn.client_tls).disconnected)


# -- early application data (docs/protocol.md) ---------------------------------------------

EARLY_LINE = b"AUTH EXTERNAL = EARLY\r\n"
#: Early bytes that would be a valid exchange line if the server ever read them as one.
LOOKS_LIKE_A_LINE = b"AUTH TEST\r\n"


@implementer(ICredentialsChecker)
class CertificateGate:
    """CertificateChecker, but refusing everyone (C{refuse}) or holding its answer until the test fires it (C{hold})."""

    credentialInterfaces = CertificateChecker.credentialInterfaces

    def __init__(self, *, refuse: bool = False, hold: bool = False) -> None:
        self.refuse = refuse
        self.hold = hold
        self.held: list[Deferred[Any]] = []
        self.calls = 0

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        self.calls += 1
        if self.refuse:
            return defer.fail(UnauthorizedLogin("certificate refused by the test"))
        answer: Deferred[Any] = CertificateChecker().requestAvatarId(credentials)
        if not self.hold:
            return answer
        held: Deferred[Any] = Deferred()
        self.held.append(held)
        return held.addCallback(lambda _: answer)


class EarlyDataTests(ExchangeTestCase):
    """
    C{AUTH EXTERNAL <authzid> EARLY}: application bytes follow the line; on
    OK they are the application's first bytes, on anything else the server
    answers, closes and never reads them.
    """

    def test_earlyDataReachesTheApp(self) -> None:
        """OK: the bytes after the line are the app's first bytes, in order, also those sent while the checker works."""
        gate = CertificateGate(hold=True)
        self.connect(self.portal(gate, self.passwords), client="alice")
        self.write(EARLY_LINE + b"first ")
        self.write(LOOKS_LIKE_A_LINE)
        self.assertEqual(self.lines(), ["SECURENET 1 AUTH EXTERNAL TEST"])
        self.assertEqual(self.apps.built, [])
        gate.held[0].callback(None)
        self.conn.pump.flush()
        self.assertEqual(self.transcript(), (["SECURENET 1 AUTH EXTERNAL TEST", "OK alice"], SERVER_DATA))
        self.assertEqual(self.apps.received, b"first " + LOOKS_LIKE_A_LINE)
        self.assertEqual(self.appIdentity().avatar_id, "alice")
        [decision] = self.decisions()
        self.assertEqual((decision["result"], decision["mechanism"]), ("ok", "EXTERNAL"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refusedEarlyDataDiscarded(self) -> None:
        """The certificate is refused: NO AUTH-FAILED, the connection closes, the early bytes are never read."""
        gate = CertificateGate(refuse=True)
        self.connect(self.portal(gate, self.passwords), client="alice")
        self.write(EARLY_LINE + LOOKS_LIKE_A_LINE + b"secret application data")
        self.assertEqual(self.lines(), ["SECURENET 1 AUTH EXTERNAL TEST", AUTH_FAILED])
        self.assertEqual(gate.calls, 1)
        self.assertEqual(self.passwords.factories[0].runs, [])
        self.assertClosed()
        self.assertNoApp()
        self.assertEqual(self.exchange.buffer, b"")
        self.assertEqual((self.exchange.lines, self.exchange.attempts), (1, 1))
        self.assertOneDenial("certificate refused by the test", "EXTERNAL")

    def test_earlyDataExternalNotOffered(self) -> None:
        """
        EXTERNAL not offered (no certificate checker): NO UNKNOWN-MECHANISM
        and close, not counted nor logged as a decision; the early bytes
        (an AUTH TEST line here) are never read.
        """
        self.connect(self.portal(self.passwords), client="alice")
        self.write(EARLY_LINE + LOOKS_LIKE_A_LINE)
        [greeting, answer] = self.lines()
        self.assertEqual(greeting, GREETING)
        self.assertTrue(answer.startswith("NO UNKNOWN-MECHANISM mechanism not offered"), answer)
        self.assertEqual(self.passwords.factories[0].runs, [])
        self.assertClosed()
        self.assertNoApp()
        self.assertEqual((self.exchange.lines, self.exchange.attempts, self.decisions()), (1, 0, []))

    def test_earlyOnlyOnAFirstExternal(self) -> None:
        """EARLY anywhere but a first AUTH EXTERNAL with an initial response, or an unknown flag: NO MALFORMED, close."""
        for lines, reason in [
            ([b"AUTH TEST = EARLY"], "EARLY on a line other than a first AUTH EXTERNAL"),
            ([b"AUTH NOPE", b"AUTH EXTERNAL = EARLY"], "EARLY on a line other than a first AUTH EXTERNAL"),
            ([b"AUTH EXTERNAL = LATER"], "unknown AUTH flag 'LATER'"),
        ]:
            self.setUp()
            self.connect(self.portal(CertificateChecker(), self.passwords), client="alice")
            for line in lines[:-1]:
                self.write(line + b"\r\n")
            self.write(lines[-1] + b"\r\n" + LOOKS_LIKE_A_LINE)
            answer = self.lines()[-1]
            self.assertTrue(answer.startswith("NO MALFORMED "), (lines, answer))
            self.assertEqual(self.passwords.factories[0].runs, [], lines)
            self.assertClosed()
            self.assertNoApp()
            self.assertEqual(self.decisions()[-1]["reason"], reason)

    def test_earlyDataLimit(self) -> None:
        """Early bytes count against the pre-authentication limit: TOO-MUCH-DATA, close, no app."""
        gate = CertificateGate(hold=True)
        self.connect(self.portal(gate), client="alice", settings=ExchangeSettings(max_buffer=1024))
        self.write(EARLY_LINE + b"x" * 512)
        self.write(b"y" * 600)
        self.assertEqual(self.lines()[-1], "NO TOO-MUCH-DATA wait for each answer before sending more")
        self.assertClosed()
        gate.held[0].callback(None)
        self.conn.pump.flush()
        self.assertNoApp()

    # our client

    def test_clientSendsEarlyData(self) -> None:
        """
        With early_data the client connects its app right after the AUTH
        line: the app's first bytes leave with it, one flight.
        """
        server_apps = RecordingFactory()
        self.client_apps = RecordingFactory(CLIENT_DATA)
        conn = self.connect(
            raw=False,
            client="alice",
            early_data=True,
            server_factory=NotSecurenetFactory(server_apps, self.portal(), self.clock),
        )
        self.assertEqual(server_apps.received, EARLY_LINE + CLIENT_DATA)
        # The server never answered: the app is connected, the exchange still pending.
        client_app = cast(RecordingProtocol, self.successResultOf(conn.client_ready))
        guard = self.client_guard
        assert isinstance(guard, ClientSession)
        self.assertIsNone(guard.authenticated_as)
        self.assertEqual(client_app.received, [])

    def test_clientEarlyDataTimeout(self) -> None:
        """A TLS peer that never answers: at the client's deadline the app's connection ends with ProtocolViolation TIMEOUT."""
        self.client_apps = RecordingFactory(CLIENT_DATA)
        conn = self.connect(
            raw=False,
            client="alice",
            early_data=True,
            server_factory=NotSecurenetFactory(RecordingFactory(), self.portal(), self.clock),
        )
        client_app = cast(RecordingProtocol, self.successResultOf(conn.client_ready))
        self.clock.advance(CLIENT_DEADLINE - 0.001)
        conn.pump.flush()
        self.assertIsNone(client_app.lost)
        self.clock.advance(0.001)
        conn.pump.flush()
        assert client_app.lost is not None
        error = cast(ProtocolViolation, client_app.lost.value)
        self.assertEqual((type(error), error.code), (ProtocolViolation, "TIMEOUT"))
        self.assertEqual(client_app.received, [])
        self.assertTrue(fake_transport(conn.client_tls).disconnected)

    def test_clientEarlyDataAccepted(self) -> None:
        """Against our server: the server app gets the early bytes, the client app only what follows OK."""
        self.client_apps = RecordingFactory(CLIENT_DATA)
        conn = self.connect(self.portal(CertificateChecker()), raw=False, client="alice", early_data=True)
        client_app = cast(RecordingProtocol, self.successResultOf(conn.client_ready))
        self.assertEqual(self.apps.received, CLIENT_DATA)
        self.assertEqual(b"".join(client_app.received), SERVER_DATA)
        guard = self.client_guard
        assert isinstance(guard, ClientSession)
        self.assertEqual(guard.authenticated_as, "alice")
        self.assertEqual(self.appIdentity().avatar_id, "alice")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clientEarlyDataRefused(self) -> None:
        """Refused: the client app loses the connection with AuthenticationFailed; the server discarded its bytes."""
        self.client_apps = RecordingFactory(CLIENT_DATA)
        conn = self.connect(self.portal(CertificateGate(refuse=True)), raw=False, client="alice", early_data=True)
        client_app = cast(RecordingProtocol, self.successResultOf(conn.client_ready))
        assert client_app.lost is not None
        error = cast(AuthenticationFailed, client_app.lost.value)
        self.assertEqual((type(error), error.code), (AuthenticationFailed, "AUTH-FAILED"))
        self.assertEqual(client_app.received, [])
        self.assertNoApp()
        self.assertClosed()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clientEarlyDataNotOffered(self) -> None:
        """EXTERNAL not offered: the client cannot choose again (its bytes are gone): AuthenticationFailed UNKNOWN-MECHANISM."""
        self.client_apps = RecordingFactory(CLIENT_DATA)
        conn = self.connect(self.portal(self.passwords, AllowAnonymousAccess()), raw=False, client="alice", early_data=True)
        client_app = cast(RecordingProtocol, self.successResultOf(conn.client_ready))
        assert client_app.lost is not None
        error = cast(AuthenticationFailed, client_app.lost.value)
        self.assertEqual((type(error), error.code), (AuthenticationFailed, "UNKNOWN-MECHANISM"))
        self.assertIn("early data was discarded", error.text)
        self.assertNoApp()
        self.assertClosed()
        self.assertEqual(self.decisions(), [])

    def test_clientEarlyDataWithoutPipelining(self) -> None:
        """No pipelined EXTERNAL (no certificate): early_data changes nothing, the app waits for OK."""
        server_apps = RecordingFactory()
        self.connect(raw=False, early_data=True, server_factory=NotSecurenetFactory(server_apps, self.portal(), self.clock))
        self.assertNoResult(self.conn.client_ready)
        self.assertEqual(self.client_apps.built, [])
        self.assertEqual(server_apps.received, b"")
        self.setUp()
        self.client_apps = RecordingFactory(CLIENT_DATA)
        conn = self.connect(self.portal(AllowAnonymousAccess()), raw=False, early_data=True)
        client_app = cast(RecordingProtocol, self.successResultOf(conn.client_ready))
        self.assertEqual(self.apps.received, CLIENT_DATA)
        self.assertEqual(b"".join(client_app.received), SERVER_DATA)


# -- throttling through the exchange -----------------------------------------------------


class ThrottleTests(ExchangeTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.store = MemoryStore()
        self.policy = ThrottlePolicy(
            free_failures=1, base_delay=10, max_delay=40, account_lockout=5, address_lockout=8, lockout_seconds=300
        )
        self.throttle = Throttle(self.store, self.clock, self.policy)

    def connectThrottled(self, *checkers: Any, client: str | None = None) -> None:
        self.connect(
            self.portal(*checkers),
            client=client,
            throttle=self.throttle,
            settings=ExchangeSettings(max_attempts=10, deadline=3600),
        )

    def test_throttledAfterFreeFailures(self) -> None:
        """
        Failures count per account and per address; past the free ones the
        next attempt is NO THROTTLED with the time to wait (open, no checker
        call, for any account from the address); after the wait an attempt
        is checked again; a success forgives the account, not the address
        (the success takes back only its own admitted attempt there).
        """
        self.connectThrottled()
        self.send("AUTH TEST", response("alice", "wrong"))
        self.assertEqual(self.store.failures, {CLIENT_ADDRESS_KEY: (1, 0.0), "user:alice": (1, 0.0)})
        self.clock.advance(1)
        self.send("AUTH TEST", response("alice", "wrong"))
        self.assertEqual(self.store.failures, {CLIENT_ADDRESS_KEY: (2, 1.0), "user:alice": (2, 1.0)})
        self.assertEqual(self.passwords.calls, [b"alice", b"alice"])
        self.clock.advance(4)
        self.send("AUTH TEST", response("alice", "wonderland"), "AUTH TEST", response("bob", "builder"))
        # 2 failures, 1 free: wait base_delay (10 s) after the last, 4 s ago.
        throttled = "NO THROTTLED too many recent failures; try again in 7 s"
        self.assertEqual(self.lines()[5:], [CHALLENGE_LINE, throttled, CHALLENGE_LINE, throttled])
        self.assertOpen()
        self.assertEqual(self.passwords.calls, [b"alice", b"alice"])
        self.assertDenied(self.decisions()[-2], "throttled for 6.0 s", "TEST", "alice")
        self.assertDenied(self.decisions()[-1], "throttled for 6.0 s", "TEST", "bob")
        self.assertEqual(self.store.failures, {CLIENT_ADDRESS_KEY: (2, 1.0), "user:alice": (2, 1.0)})
        self.assertNoApp()
        self.clock.advance(5)
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.lines()[9:], [CHALLENGE_LINE, "NO THROTTLED too many recent failures; try again in 2 s"])
        self.clock.advance(1)
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.transcript()[0][11:], [CHALLENGE_LINE, ok("alice")])
        self.assertEqual(self.passwords.calls, [b"alice", b"alice", b"alice"])
        self.assertEqual(self.store.failures, {CLIENT_ADDRESS_KEY: (2, 11.0)})

    def test_delayDoubles(self) -> None:
        """
        Each failure past the free ones doubles the wait (10 s, 20 s, 40 s,
        capped at 40 s) until the account is locked out (5 failures: 300 s).
        """
        self.connectThrottled()
        waits = []
        for _ in range(5):
            self.send("AUTH TEST", response("mallory", "guess"))
            waits.append(self.successResultOf(self.throttle.check([CLIENT_ADDRESS_KEY])))
            self.clock.advance(waits[-1] or 0)
        self.assertEqual(waits, [None, 10.0, 20.0, 40.0, 40.0])
        self.assertEqual(self.passwords.calls, [b"mallory"] * 5)
        self.assertEqual(self.successResultOf(self.throttle.check(["user:mallory"])), 300.0 - 40.0)
        self.assertEqual(self.lines().count(AUTH_FAILED), 5)

    def test_perAccount(self) -> None:
        """An account's failures throttle that account only: another user from the same address gets through."""
        self.store.failures["user:alice"] = (2, 0.0)
        self.connectThrottled()
        self.send("AUTH TEST", response("alice", "wonderland"), "AUTH TEST", response("bob", "builder"))
        lines = self.transcript()[0]
        self.assertEqual(
            lines,
            [GREETING, CHALLENGE_LINE, "NO THROTTLED too many recent failures; try again in 11 s", CHALLENGE_LINE, ok("bob")],
        )
        self.assertEqual(self.passwords.calls, [b"bob"])
        self.assertEqual(self.store.failures, {"user:alice": (2, 0.0)})

    def test_perAddress(self) -> None:
        """An address's failures throttle every attempt from it, EXTERNAL included, without calling the checker."""
        self.store.failures[CLIENT_ADDRESS_KEY] = (2, 0.0)
        certificates = SpyChecker(CertificateChecker())
        self.connectThrottled(certificates, self.passwords, client="alice")
        self.send("AUTH EXTERNAL =", "AUTH TEST", response("bob", "builder"))
        throttled = "NO THROTTLED too many recent failures; try again in 11 s"
        self.assertEqual(self.lines(), ["SECURENET 1 AUTH EXTERNAL TEST", throttled, CHALLENGE_LINE, throttled])
        self.assertEqual((certificates.calls, self.passwords.calls), (0, []))
        self.assertDenied(self.decisions()[0], "throttled for 10.0 s", "EXTERNAL")
        self.clock.advance(10)
        self.send("AUTH EXTERNAL =")
        self.assertEqual(self.transcript()[0][4:], ["OK alice"])
        self.assertEqual(certificates.calls, 1)
        # The successful attempt is taken back; the earlier failures stay.
        self.assertEqual(self.store.failures, {CLIENT_ADDRESS_KEY: (2, 10.0)})

    def test_lockout(self) -> None:
        """At account_lockout failures the account is locked out for lockout_seconds; auth.lockout logged once."""
        self.store.failures["user:alice"] = (4, 0.0)
        self.connectThrottled()
        self.clock.advance(40)
        self.send("AUTH TEST", response("alice", "wrong"))
        self.assertEqual(self.store.failures["user:alice"], (5, 40.0))
        [lockout] = self.log.of("auth.lockout")
        self.assertEqual((lockout["key"], lockout["count"]), ("user:alice", 5))
        self.clock.advance(299)
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.lines()[-1], "NO THROTTLED too many recent failures; try again in 2 s")
        self.clock.advance(1)
        self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.transcript()[0][-1], ok("alice"))
        self.assertEqual(len(self.log.of("auth.lockout")), 1)

    def test_secondFactorThrottled(self) -> None:
        """
        The first TOTP line is part of the password's attempt (one admission
        for both factors, as an HTTP login); each retry after a wrong code
        is admitted and counted like a new attempt, and once throttled a TOTP
        line is NO THROTTLED (still in TOTP, TOTP checker not called); the
        whole success forgives the account and takes back only the
        successful try from the address (the wrong codes stay).
        """
        self.connectThrottled(self.passwords, self.totp)
        self.send("AUTH TEST", response("alice", "wonderland"), "TOTP 000000", "TOTP 000001", f"TOTP {TOTP_CODE}")
        throttled = "NO THROTTLED too many recent failures; try again in 11 s"
        self.assertEqual(self.lines()[2:], ["NEXT TOTP", AUTH_FAILED, AUTH_FAILED, throttled])
        self.assertEqual(self.exchange.state, "TOTP")
        self.assertEqual(self.totp.calls, [("alice", "000000"), ("alice", "000001")])
        self.assertEqual(self.store.failures, {CLIENT_ADDRESS_KEY: (2, 0.0), "user:alice": (2, 0.0)})
        self.clock.advance(10)
        self.send(f"TOTP {TOTP_CODE}")
        self.assertEqual(self.transcript()[0][-1], ok("alice"))
        # The successful try is taken back; the two wrong codes stay on the address.
        self.assertEqual(self.store.failures, {CLIENT_ADDRESS_KEY: (2, 10.0)})

    def test_secondFactorUserRecoversAfterTheWait(self) -> None:
        """
        A TOTP user who had wrong passwords and waits the time THROTTLED
        names gets in with the right password and code: the code is part
        of the password's attempt, not a second throttled one (the HTTP
        login behaves the same: tests/web/test_api.py).
        """
        self.connectThrottled(self.passwords, self.totp)
        for _ in range(4):
            self.send("AUTH TEST", response("alice", "wrong"))
        self.send("AUTH TEST", response("alice", "wonderland"))
        throttled = self.lines()[-1]
        self.assertTrue(throttled.startswith("NO THROTTLED too many recent failures; try again in "), throttled)
        self.clock.advance(int(throttled.split()[-2]))
        self.send("AUTH TEST", response("alice", "wonderland"), f"TOTP {TOTP_CODE}")
        self.assertEqual(self.transcript()[0][-2:], ["NEXT TOTP", ok("alice")])

    def test_anonymousResetsNothing(self) -> None:
        """
        ANONYMOUS proves nothing about the client: it is neither counted nor
        forgives anything; and no success wipes the address's failures (else
        one valid login could reset them between guesses at other accounts).
        """
        self.store.failures[CLIENT_ADDRESS_KEY] = (1, 0.0)
        self.connectThrottled(self.passwords, AllowAnonymousAccess())
        self.send("AUTH ANONYMOUS =")
        self.assertEqual(self.transcript()[0][1:], ["OK anonymous"])
        self.assertEqual(self.store.failures, {CLIENT_ADDRESS_KEY: (1, 0.0)})
        self.setUp()
        self.store.failures[CLIENT_ADDRESS_KEY] = (1, 0.0)
        self.connectThrottled(CertificateChecker(), client="alice")
        self.send("AUTH EXTERNAL =")
        self.assertEqual(self.transcript()[0][1:], ["OK alice"])
        self.assertEqual(self.store.failures, {CLIENT_ADDRESS_KEY: (1, 0.0)})

    def test_throttledCountsAsAttempt(self) -> None:
        """NO THROTTLED counts against the per-connection limit like any failure."""
        self.store.failures[CLIENT_ADDRESS_KEY] = (5, 0.0)
        self.connect(self.portal(), throttle=self.throttle)
        for _ in range(3):
            self.send("AUTH TEST", response("alice", "wonderland"))
        self.assertEqual(self.lines()[-1], "NO TOO-MANY-ATTEMPTS 3 failed attempts; closing")
        self.assertClosed()
        self.assertEqual(self.passwords.calls, [])
        self.assertNoApp()
