"""
The service C{twistd securenet} runs: its listeners, each of which says it
listens only once its port is bound and stops twistd with one line when it
cannot bind (L{ListenError}); SIGHUP, which reloads certificates, keys,
CRLs, the policy and token keys (L{securenet._reload.Reloader}); the watch
that makes authentications fail closed when the audit log cannot be
written (L{securenet.audit.watch_sink}); and the graceful stop
(L{drain_connections}, C{--drain}).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.python.failure import Failure

from securenet import audit
from securenet._logs import SecurenetLogger, literal
from securenet._reload import Reloader, ReloadResult
from securenet.interfaces import IDrainable
from securenet.pki._pins import spki_pin
from securenet.tls._endpoints import SecureServerEndpoint
from securenet.tls._guard import TLSGuard, TLSGuardFactory

log = SecurenetLogger(namespace="securenet.tap")


class ListenError(SystemExit, Exception):
    """
    A listener cannot bind its port: twistd stops, exit status 1, with one
    line naming the endpoint and the operating system's reason (on stderr
    and in the log) instead of a traceback and a server that listens nowhere.

    Raised from C{privilegedStartService}, inside twistd's start-up: as an
    C{Exception}, twistd's clean-up for a failed start runs (the pidfile is
    removed, a daemon's parent is told and exits 1); as a C{SystemExit},
    Python then exits 1 without a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(1)
        self.message = message

    def __str__(self) -> str:
        return self.message


def listen_failure_message(failure: Failure, option: str, description: str) -> str:
    """One line: where the listener could not bind and why (C{option} names the setting, C{--listen} or C{--http})."""
    error = failure.value
    if isinstance(error, CannotListenError):
        host = error.interface or "*"
        shown = f"[{host}]" if ":" in host else host
        reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
        return f"cannot listen on {shown}:{error.port}: {reason} ({option} {description})"
    return f"cannot listen ({option} {description}): {failure.getErrorMessage()}"


class Listener(StreamServerEndpointService):
    """
    One listener of C{twistd securenet}: it says it listens only once its
    port is bound (C{announce}), and a bind that fails stops twistd with one
    line (L{ListenError}) instead of Twisted's traceback and a process that
    keeps running without listening.

    The listener listens with a L{TLSGuardFactory}, C{guards}, whose open
    connections a graceful stop drains (L{SecurenetService}): C{factory}
    itself when it is one (the session layer's), else one wrapping it when
    the endpoint is a securenet TLS endpoint (L{SecureServerEndpoint}, or
    one that listens through it).  Another endpoint (the plain-HTTP
    C{--metrics} listener) gets C{factory} as it is, and C{guards} is None.

    @param option: the setting the endpoint came from (C{--listen}, C{--http}).
    @param announce: called with the listening port once it is bound.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        *,
        option: str,
        description: str,
        reactor: Any,
        announce: Callable[[IListeningPort], object] | None = None,
    ) -> None:
        super().__init__(endpoint, factory)
        self.guards: TLSGuardFactory | None = None
        if isinstance(factory, TLSGuardFactory):
            self.guards = factory
        elif self.tls_endpoint is not None:
            self.guards = TLSGuardFactory(factory, reactor)
        self.option = option
        self.description = description
        self.reactor = reactor
        self.announce = announce
        #: The listening port, once bound (C{/readyz} asks).
        self.port: IListeningPort | None = None

    @property
    def tls_endpoint(self) -> SecureServerEndpoint | None:
        """The C{securenet:} endpoint this listener serves (through wrappers such as the HTTP API's announcer), if any."""
        endpoint: object = self.endpoint
        while not isinstance(endpoint, SecureServerEndpoint):
            endpoint = getattr(endpoint, "endpoint", None)
            if endpoint is None:
                return None
        return endpoint

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        starting = True
        failed: list[Failure] = []

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            if self.announce is not None:
                self.announce(port)
            return port

        def refused(failure: Failure) -> None:
            if failure.check(CancelledError):
                return
            if starting:
                failed.append(failure)
            else:
                self._failedLater(failure)

        listened = self.guards if self.guards is not None else self.factory
        self._waitingForPort = self.endpoint.listen(listened).addCallbacks(listening, refused)
        starting = False
        if failed:
            message = listen_failure_message(failed[0], self.option, self.description)
            log.error(literal(message))
            # twistd has sent sys.stderr to the log by now: the terminal's is sys.__stderr__.
            print(f"twistd securenet: error: {message}", file=sys.__stderr__ or sys.stderr, flush=True)
            raise ListenError(message)

    def _failedLater(self, failure: Failure) -> None:
        """A bind that fails once the reactor runs (no securenet: endpoint does): the line, then twistd stops."""
        log.error(literal(f"{listen_failure_message(failure, self.option, self.description)}; stopping"))
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)


#: Seconds a graceful stop lets established connections finish (C{--drain}).
DEFAULT_DRAIN = 30


def _connections(count: int) -> str:
    return f"{count} connection{'' if count == 1 else 's'}"


@attrs.frozen
class StopSummary:
    """
    What a graceful stop did with the connections open when it began.

    @ivar drained: connections of an application that ended within the drain time.
    @ivar closed: those still open at the deadline, closed by the server.
    @ivar unfinished: those still in the TLS handshake or the authentication
        exchange, closed at once.
    @ivar drain: the drain time, in seconds.
    """

    drained: int
    closed: int
    unfinished: int
    drain: float

    def line(self) -> str:
        """The one line logged: C{stopped: 3 connections drained, 1 closed at the drain deadline (30 s), 0 closed during the handshake}."""  # noqa: E501
        return (
            f"stopped: {_connections(self.drained)} drained, {self.closed} closed at the drain deadline ({self.drain:g} s),"
            f" {self.unfinished} closed during the handshake"
        )


def _abort(guard: TLSGuard) -> None:
    transport = guard.transport
    if transport is not None:
        transport.abortConnection()


def _tell(guard: TLSGuard) -> None:
    """Call the application's L{IDrainable.drain}, if it has one; an exception is logged and the drain goes on."""
    drainable = IDrainable(guard.application, None)
    if drainable is None:
        return
    try:
        drainable.drain()
    except Exception:
        log.failure("drain() of the application of {peer} failed", peer=guard.peerDescription())


def drain_connections(reactor: Any, factories: Sequence[TLSGuardFactory], drain: float) -> Deferred[StopSummary]:
    """
    Wind down the open connections of C{factories} (whose ports no longer
    accept): a connection still in the TLS handshake or the authentication
    exchange is closed at once (it has no exchange of its application to
    finish, and its client learns at once to go elsewhere); every connected
    application that provides L{IDrainable} is told; then the connections
    have C{drain} seconds to end, after which the server closes
    (C{abortConnection}) those still open.  With C{drain} 0 every
    connection is closed at once, and no application is told.

    @return: fires with the L{StopSummary} once every connection is gone.
    """
    guards = [guard for factory in factories for guard in factory.connections()]
    serving = [guard for guard in guards if guard.application is not None]
    unfinished = [guard for guard in guards if guard.application is None]
    for guard in unfinished:
        _abort(guard)
    if drain <= 0:
        for guard in serving:
            _abort(guard)
    else:
        for guard in serving:
            _tell(guard)
    gone: Deferred[Any] = gatherResults([factory.whenClosed() for factory in factories])
    closed: list[TLSGuard] = []

    def deadline() -> None:
        closed.extend(guard for guard in serving if guard in guard.factory.protocols)
        for guard in closed:
            _abort(guard)

    timer = reactor.callLater(drain, deadline) if drain > 0 and serving else None

    def summary(_: object) -> StopSummary:
        if timer is not None and timer.active():
            timer.cancel()
        if drain <= 0:
            closed.extend(serving)
        return StopSummary(len(serving) - len(closed), len(closed), len(unfinished), drain)

    return gone.addCallback(summary)


def exit_cleanly(reactor: Any) -> None:
    """
    Make a stop by signal exit 0: twistd ends a process that a signal
    stopped by sending itself that signal again once the reactor stopped
    (exit status 143 for SIGTERM), but a stop that drained is a success.
    The one place that touches the reactor's private C{_exitSignal}.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None


class SecurenetService(MultiService):
    """
    The service C{twistd securenet} runs: its listeners; while it runs, a
    SIGHUP handler that reloads (C{reloader}: without one SIGHUP is logged
    and ignored; its default action would end the process), and a watch on
    the log observers (L{securenet.audit.watch_sink}) so that
    authentications fail closed when the audit log cannot be written
    (C{fail_closed}, C{--audit-failure refuse}).

    Stopping it (SIGTERM, SIGINT: twistd stops the reactor, which waits for
    L{stopService}'s Deferred) is graceful: every listener's port closes
    first (a new connection is refused), then the open connections are
    drained for up to C{drain} seconds (L{drain_connections}), then one
    C{service.stopped} line says what happened (L{StopSummary.line}), and
    twistd exits 0.

    @param drain: the drain time in seconds (C{--drain}, default L{DEFAULT_DRAIN}).
    """

    def __init__(
        self, reactor: Any, *, fail_closed: bool = True, reloader: Reloader | None = None, drain: float = DEFAULT_DRAIN
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.fail_closed = fail_closed
        self.reloader = reloader
        self.drain = drain
        self._previousHangup: Any = None
        self._unwatch: Callable[[], None] | None = None

    def startService(self) -> None:
        self._unwatch = audit.watch_sink(fail_closed=self.fail_closed)
        super().startService()
        if hasattr(signal, "SIGHUP"):
            try:
                self._previousHangup = signal.signal(signal.SIGHUP, self._hangup)
            except ValueError:  # not the main thread: no signal handlers
                self._previousHangup = None

    def stopService(self) -> Deferred[None]:
        # Every child stops: a listener's port closes, its connections stay open.
        stopped: Deferred[Any] = super().stopService()
        stopped.addCallback(lambda _: self._drainConnections())

        def finished(result: object) -> object:
            # Only now: a SIGHUP during the drain must not kill the process.
            if self._previousHangup is not None:
                signal.signal(signal.SIGHUP, self._previousHangup)
                self._previousHangup = None
            if self._unwatch is not None:
                self._unwatch()
                self._unwatch = None
            return result

        stopped.addBoth(finished)
        return stopped

    def listeners(self) -> list[Listener]:
        """Every L{Listener} of the service, the HTTP API's included, in the order they were added."""
        found: list[Listener] = []

        def walk(service: object) -> None:
            if isinstance(service, Listener):
                found.append(service)
            elif isinstance(service, MultiService):
                for child in service:
                    walk(child)

        walk(self)
        return found

    def _drainConnections(self) -> Deferred[None]:
        factories = [listener.guards for listener in self.listeners() if listener.guards is not None]

        def report(summary: StopSummary) -> None:
            audit.service_stopped(
                summary.line(),
                drained=summary.drained,
                closed=summary.closed,
                unfinished=summary.unfinished,
                drain=summary.drain,
            )
            exit_cleanly(self.reactor)

        return drain_connections(self.reactor, factories, self.drain).addCallback(report)

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt the reactor anywhere: act from the reactor's loop.
        self.reactor.callFromThread(self.reload, "SIGHUP")

    def reload(self, why: str = "SIGHUP") -> Deferred[ReloadResult] | None:
        """Reload what the reloader holds (what SIGHUP does)."""
        if self.reloader is None:
            log.warn("{why} received: nothing to reload; ignoring", why=why)
            return None
        return self.reloader.reload(why)


def _announcer(endpoint: SecureServerEndpoint, description: str, app: str) -> Callable[[IListeningPort], None]:
    """What a stream listener logs once its port is bound (with the port the kernel chose)."""

    def announce(port: IListeningPort) -> None:
        address = port.getHost()
        host = getattr(address, "host", "?")
        shown = f"[{host}]" if ":" in host else host
        port_number = getattr(address, "port", "?")
        policy = endpoint.policy
        pin = spki_pin(policy.certificate_chain[0])
        audit.service_listening(
            "stream",
            f"securenet listening on {shown}:{port_number} ({description}): profile {policy.profile.name},"
            f" clientAuth {policy.client_auth}, app {app}, server pin {pin}",
            endpoint=description,
            profile=policy.profile.name,
            client_auth=policy.client_auth,
            pin=pin,
            app=app,
            address=shown,
            port=port_number,
        )

    return announce
