"""
The service C{twistd securenet} runs: its listeners, each of which says it
listens only once its port is bound and stops twistd with one line when it
cannot bind (L{ListenError}); SIGHUP logged and ignored (there is no reload
yet); and the watch that makes authentications fail closed when the audit
log cannot be written (L{securenet.audit.watch_sink}).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.python.failure import Failure

from securenet import audit
from securenet._logs import SecurenetLogger, literal
from securenet.pki._pins import spki_pin
from securenet.tls._endpoints import SecureServerEndpoint

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
        self.option = option
        self.description = description
        self.reactor = reactor
        self.announce = announce
        #: The listening port, once bound (C{/readyz} asks).
        self.port: IListeningPort | None = None

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

        self._waitingForPort = self.endpoint.listen(self.factory).addCallbacks(listening, refused)
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


#: What SIGHUP logs: until the configuration can be reloaded, the signal is ignored (by default it kills the process).
SIGHUP_IGNORED = "SIGHUP received: reload is not implemented yet; ignoring"


class SecurenetService(MultiService):
    """
    The service C{twistd securenet} runs: its listeners; while it runs, a
    SIGHUP handler that logs L{SIGHUP_IGNORED} and keeps serving, and a
    watch on the log observers (L{securenet.audit.watch_sink}) so that
    authentications fail closed when the audit log cannot be written
    (C{fail_closed}, C{--audit-failure refuse}).
    """

    def __init__(self, reactor: Any, *, fail_closed: bool = True) -> None:
        super().__init__()
        self.reactor = reactor
        self.fail_closed = fail_closed
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
        if self._previousHangup is not None:
            signal.signal(signal.SIGHUP, self._previousHangup)
            self._previousHangup = None
        stopped: Deferred[None] = super().stopService()

        def unwatch(result: object) -> object:
            if self._unwatch is not None:
                self._unwatch()
                self._unwatch = None
            return result

        stopped.addBoth(unwatch)
        return stopped

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt the reactor anywhere: log from the reactor's loop.
        self.reactor.callFromThread(log.warn, SIGHUP_IGNORED)


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
