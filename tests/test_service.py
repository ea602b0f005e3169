"""
The graceful stop of C{twistd securenet} in memory (L{securenet._service}):
TLS connections joined in memory to one session factory on a fake clock,
drained by L{drain_connections} and by L{SecurenetService.stopService}.
The real process (SIGTERM, exit status) is tests/e2e/test_drain.py.
"""

from __future__ import annotations

import signal
from typing import Any, cast

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from securenet._service import DEFAULT_DRAIN, Listener, SecurenetService, StopSummary, drain_connections
from securenet.apps._echo import EchoFactory
from securenet.interfaces import IDrainable
from securenet.protocols import SecureLineReceiver
from securenet.session._server import SessionFactory
from securenet.testing import EphemeralPKI, EventCapture, MemoryConnection, connect_in_memory
from securenet.tls._endpoints import SecureServerEndpoint
from securenet.tls._guard import TLSGuardFactory
from tests.support.drain import Conversation

PKI = EphemeralPKI.create()


class Client(LineReceiver):
    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.lost: Failure | None = None

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


class Recorded(Conversation):
    """The test application: records that it was told to drain (in C{told}, shared by its factory)."""

    told: list[Recorded]

    def drain(self) -> None:
        super().drain()
        self.told.append(self)


def recorded_factory(told: list[Recorded]) -> Factory:
    factory = Factory.forProtocol(type("Told", (Recorded,), {"told": told}))
    return factory


class Served:
    """One connection to C{session} in memory; C{aborted} records the server closing it with abortConnection."""

    def __init__(self, testcase: SynchronousTestCase, session: TLSGuardFactory, clock: Clock, *, handshake: bool = True) -> None:
        self.memory: MemoryConnection = connect_in_memory(
            server_policy=PKI.server_policy(client_auth="optional"),
            client_policy=PKI.client_policy("alice"),
            server_factory=session,
            client_factory=Factory.forProtocol(Client),
            clock=clock,
        )
        self.guard = self.memory.server_guard
        self.aborted: list[bool] = []
        tls = self.memory.server_tls
        abort = tls.abortConnection

        def aborting() -> None:
            self.aborted.append(True)
            abort()

        testcase.patch(tls, "abortConnection", aborting)
        ready: list[Any] = []
        self.memory.client_ready.addBoth(ready.append)
        self.client: Client | None = None
        if handshake:
            self.flush()
            [client] = ready
            assert isinstance(client, Client), client
            self.client = client

    def flush(self) -> None:
        self.memory.pump.flush()

    def say(self, line: bytes) -> None:
        assert self.client is not None
        self.client.sendLine(line)
        self.flush()

    @property
    def open(self) -> bool:
        return self.guard in self.guard.factory.protocols


def flush(*connections: Served) -> None:
    for connection in connections:
        connection.flush()


def results(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


class DrainConnectionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.told: list[Recorded] = []
        self.session = SessionFactory(recorded_factory(self.told), PKI.certificate_portal(), self.clock)

    def test_exchangeCompletesOneOutlivesTheDeadline(self) -> None:
        """
        One connection mid-conversation finishes it and ends within the drain
        time; one that holds on is closed at the deadline, and not before;
        both applications were told; the summary counts them.
        """
        talking = Served(self, self.session, self.clock)
        holding = Served(self, self.session, self.clock)
        talking.say(b"begin")
        holding.say(b"hold")
        done = results(drain_connections(self.clock, [self.session], 30))
        self.assertEqual([p.transport for p in self.told], [c.guard for c in (talking, holding)])
        self.assertTrue(all(p.draining for p in self.told))
        talking.say(b"end")
        assert talking.client is not None and holding.client is not None
        self.assertEqual(talking.client.lines, [b"started", b"done"])
        self.assertIsNotNone(talking.client.lost)
        self.assertFalse(talking.open)
        self.clock.advance(29.9)
        flush(holding)
        self.assertEqual((done, holding.aborted, holding.open, holding.client.lost), ([], [], True, None))
        self.clock.advance(0.1)
        flush(holding)
        self.assertEqual((holding.aborted, holding.open, talking.aborted), ([True], False, []))
        self.assertIsNotNone(holding.client.lost)
        self.assertEqual(done, [StopSummary(drained=1, closed=1, unfinished=0, drain=30)])
        self.assertEqual(
            done[0].line(), "stopped: 1 connection drained, 1 closed at the drain deadline (30 s), 0 closed during the handshake"
        )

    def test_allDrainedBeforeTheDeadline(self) -> None:
        """Every connection ends in time: the summary comes then, the deadline is cancelled, nothing is aborted."""
        connections = [Served(self, self.session, self.clock) for _ in range(3)]
        for connection in connections:
            connection.say(b"begin")
        done = results(drain_connections(self.clock, [self.session], 30))
        for connection in connections[:2]:
            connection.say(b"end")
        self.assertEqual(done, [])
        connections[2].say(b"end")
        self.assertEqual(done, [StopSummary(drained=3, closed=0, unfinished=0, drain=30)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual([c.aborted for c in connections], [[], [], []])
        self.assertEqual(done[0].line().split(",")[0], "stopped: 3 connections drained")

    def test_handshakeClosedAtOnce(self) -> None:
        """
        A connection still in the TLS handshake is closed at once, without
        waiting for the drain time: it has no exchange to finish, and its
        client learns at once to try elsewhere.
        """
        early = Served(self, self.session, self.clock, handshake=False)
        serving = Served(self, self.session, self.clock)
        self.assertIsNone(early.guard.application)
        done = results(drain_connections(self.clock, [self.session], 30))
        self.assertEqual((early.aborted, serving.aborted), ([True], []))
        flush(early)
        self.assertFalse(early.open)
        self.assertEqual(len(self.told), 1)
        serving.say(b"end")
        self.assertEqual(done, [StopSummary(drained=1, closed=0, unfinished=1, drain=30)])

    def test_authenticationClosedAtOnce(self) -> None:
        """A connection whose TLS handshake is done but whose authentication is not: closed at once, too."""
        pending: Deferred[Any] = Deferred()
        portal = PKI.certificate_portal()
        self.patch(portal, "login", lambda *args: pending)
        session = SessionFactory(recorded_factory(self.told), portal, self.clock)
        authenticating = Served(self, session, self.clock, handshake=False)
        authenticating.flush()
        self.assertIsNotNone(authenticating.guard.handshake)
        self.assertIsNone(authenticating.guard.application)
        done = results(drain_connections(self.clock, [session], 30))
        self.assertEqual(authenticating.aborted, [True])
        authenticating.flush()
        self.assertEqual(done, [StopSummary(drained=0, closed=0, unfinished=1, drain=30)])
        self.assertEqual(self.told, [])

    def test_zeroClosesAtOnce(self) -> None:
        """C{--drain 0}: every connection is closed at once and no application is told."""
        connections = [Served(self, self.session, self.clock) for _ in range(2)]
        done = results(drain_connections(self.clock, [self.session], 0))
        self.assertEqual([c.aborted for c in connections], [[True], [True]])
        flush(*connections)
        self.assertEqual(self.told, [])
        self.assertEqual(done, [StopSummary(drained=0, closed=2, unfinished=0, drain=0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nothingOpen(self) -> None:
        """No connection: the summary at once, no timer left."""
        done = results(drain_connections(self.clock, [self.session, TLSGuardFactory(Factory(), self.clock)], 30))
        self.assertEqual(done, [StopSummary(drained=0, closed=0, unfinished=0, drain=30)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notDrainableWaitsForTheDeadline(self) -> None:
        """An application without IDrainable is not told; it may still end by itself, or is closed at the deadline."""
        session = SessionFactory(Factory.forProtocol(LineReceiver), PKI.certificate_portal(), self.clock)
        connection = Served(self, session, self.clock)
        self.assertFalse(IDrainable.providedBy(connection.guard.application))
        done = results(drain_connections(self.clock, [session], 5))
        self.clock.advance(4)
        connection.flush()
        self.assertEqual((done, connection.aborted), ([], []))
        self.clock.advance(1)
        connection.flush()
        self.assertEqual(done, [StopSummary(drained=0, closed=1, unfinished=0, drain=5)])

    def test_drainRaises(self) -> None:
        """An application whose drain() raises: logged, the others are still told, the deadline still holds."""

        class Broken(SecureLineReceiver):
            def drain(self) -> None:
                raise RuntimeError("boom")

        broken_session = SessionFactory(Factory.forProtocol(Broken), PKI.certificate_portal(), self.clock)
        broken = Served(self, broken_session, self.clock)
        fine = Served(self, self.session, self.clock)
        done = results(drain_connections(self.clock, [broken_session, self.session], 10))
        [error] = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(str(error.value), "boom")
        self.assertEqual(len(self.told), 1)
        fine.say(b"end")
        self.clock.advance(10)
        broken.flush()
        self.assertEqual((broken.aborted, fine.aborted), ([True], []))
        self.assertEqual(done, [StopSummary(drained=1, closed=1, unfinished=0, drain=10)])


class EchoDrainTests(SynchronousTestCase):
    def test_echoClosesAtOnce(self) -> None:
        """The built-in echo has nothing of its own to finish: told to drain, it closes, after what it echoed."""
        clock = Clock()
        session = SessionFactory(EchoFactory(), PKI.certificate_portal(), clock)
        connection = Served(self, session, clock)
        assert connection.client is not None
        connection.client.transport.write(b"hi\n")  # type: ignore[union-attr]
        connection.flush()
        done = results(drain_connections(clock, [session], 30))
        connection.flush()
        self.assertEqual((connection.client.lines, connection.aborted, connection.open), ([b"hi"], [], False))
        self.assertEqual(done, [StopSummary(drained=1, closed=0, unfinished=0, drain=30)])


class Port:
    """A listening port that records when it stops listening."""

    def __init__(self, history: list[str]) -> None:
        self.history = history

    def stopListening(self) -> Deferred[None]:
        self.history.append("stopped listening")
        return succeed(None)


class Endpoint:
    def __init__(self, history: list[str]) -> None:
        self.history = history
        self.factories: list[IProtocolFactory] = []

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        self.factories.append(factory)
        return succeed(cast(IListeningPort, Port(self.history)))


class StopServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.history: list[str] = []
        self.told: list[Recorded] = []
        self.events = EventCapture(self)

    def listener(self, factory: IProtocolFactory) -> tuple[Listener, Endpoint]:
        endpoint = Endpoint(self.history)
        listener = Listener(cast(Any, endpoint), factory, option="--listen", description="test", reactor=self.clock)
        return listener, endpoint

    def test_listenerKeepsItsGuardFactory(self) -> None:
        """
        A session factory is the listener's guard factory; another factory is
        wrapped in one when the endpoint is a securenet TLS endpoint (or
        listens through one), and listened with as it is otherwise (the
        plain-HTTP metrics listener): there is no TLS guard over plain TCP.
        """
        session = SessionFactory(Factory(), PKI.certificate_portal(), self.clock)
        listener, endpoint = self.listener(session)
        self.assertIs(listener.guards, session)
        plain = Factory()
        tls = Endpoint(self.history)
        tls.endpoint = SecureServerEndpoint(self.clock, PKI.server_policy(), 0)  # type: ignore[attr-defined]
        wrapped = Listener(cast(Any, tls), plain, option="--http", description="test", reactor=self.clock)
        assert wrapped.guards is not None
        self.assertIs(wrapped.guards.wrappedFactory, plain)
        bare, bare_endpoint = self.listener(plain)
        self.assertIsNone(bare.guards)
        for each in (listener, wrapped, bare):
            each.privilegedStartService()
        self.assertEqual((endpoint.factories, tls.factories, bare_endpoint.factories), ([session], [wrapped.guards], [plain]))

    def test_stopAcceptsNoMoreThenDrainsThenOneLine(self) -> None:
        """
        stopService: the ports stop listening before any application is
        told; its Deferred fires only once the connections are gone (the
        reactor waits for it); one service.stopped event; the signal that
        stopped twistd is forgotten, so that it exits 0.
        """
        told = self.told
        history = self.history

        class Logged(Recorded):
            def drain(self) -> None:
                history.append("drain")
                super().drain()

        @implementer(IDrainable)
        class Plain(LineReceiver):
            def drain(self) -> None:
                history.append("drain")

        Logged.told = told
        session = SessionFactory(Factory.forProtocol(Logged), PKI.certificate_portal(), self.clock)
        web = TLSGuardFactory(Factory.forProtocol(Plain), self.clock)
        service = SecurenetService(self.clock, drain=20)
        stream, _ = self.listener(session)
        stream.setServiceParent(service)
        # The HTTP API's listeners are grandchildren (web_service is a MultiService).
        group = MultiService()
        group.setServiceParent(service)
        http, _ = self.listener(web)
        http.setServiceParent(group)
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        talking = Served(self, session, self.clock)
        talking.say(b"begin")
        other = Served(self, web, self.clock)
        self.clock._exitSignal = 15  # type: ignore[attr-defined]  # what the reactor's SIGTERM handler sets
        stopped = results(service.stopService())
        self.assertEqual(history, ["stopped listening", "stopped listening", "drain", "drain"])
        talking.say(b"end")
        self.assertEqual((stopped, self.events.of("service.stopped")), ([], []))
        # SIGHUP during the drain is still the service's (by default it would kill the process).
        self.assertEqual(signal.getsignal(signal.SIGHUP), service._hangup)
        self.clock.advance(20)
        other.flush()
        self.assertEqual(stopped, [None])
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)
        [event] = self.events.of("service.stopped")
        self.assertEqual(
            formatEvent(event),
            "stopped: 1 connection drained, 1 closed at the drain deadline (20 s), 0 closed during the handshake",
        )
        self.assertEqual(
            (event["drained"], event["closed"], event["unfinished"], event["drain"], event["log_level"].name),
            (1, 1, 0, 20, "info"),
        )
        self.assertIsNone(self.clock._exitSignal)  # type: ignore[attr-defined]

    def test_defaultDrain(self) -> None:
        self.assertEqual((DEFAULT_DRAIN, SecurenetService(self.clock).drain), (30, 30))
