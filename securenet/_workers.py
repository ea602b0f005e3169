"""
C{twistd securenet --workers N}: one supervisor and N worker processes that
serve the same listeners.

The supervisor binds every listener's socket itself and hands the listening
sockets to the workers, which adopt them (C{securenet:fd=N:...}, as from
systemd socket activation).  Why adopted sockets rather than SO_REUSEPORT:
one listen queue that belongs to the supervisor, so a worker that dies or
restarts loses no connection attempt (the kernel queues it, another worker
or the new one accepts it), where with SO_REUSEPORT the connections hashed
to a dead worker's queue are reset; and the same code path serves socket
activation.  The kernel hands each new connection to one of the workers
waiting in C{accept}.

The supervisor restarts a worker that dies (after a pause that grows while
workers keep dying at start-up), passes SIGHUP (reload) to every worker, and
on SIGTERM passes it on and waits for every worker to finish its drain
before it exits.  Workers log to their standard output; the supervisor
writes each line to its own log, prefixed with the worker's number.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from securenet._logs import SecurenetLogger, literal
from securenet._service import ListenError, exit_cleanly
from securenet.tls._endpoints import DEFAULT_BACKLOG, EndpointConfigurationError, split_description

log = SecurenetLogger(namespace="securenet.workers")

#: The twistd options whose values name listeners: the supervisor gives workers its own.
LISTENER_OPTIONS = ("--listen", "--http", "--metrics")

#: Seconds a worker that keeps dying at start-up waits before its next start, at most.
MAX_RESTART_DELAY = 30.0

#: A worker that lived less than this (seconds) died "at start-up": its next start waits longer.
STARTUP_SECONDS = 5.0


@attrs.frozen
class BoundListener:
    """A listener the supervisor bound: its option, its endpoint string without address, and the socket."""

    option: str
    description: str
    sock: socket.socket

    def for_worker(self) -> str:
        """The endpoint string a worker adopts the socket with."""
        args, kwargs = split_description(self.description)
        rest = [f"{k}={_escape(v)}" for k, v in kwargs.items() if k not in ("port", "interface", "backlog", "fd")]
        return ":".join(["securenet", f"fd={self.sock.fileno()}", *rest])


def _escape(value: str) -> str:
    """A value as an endpoint string writes it (the inverse of L{split_description})."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def bind_listener(option: str, description: str) -> BoundListener:
    """
    Bind (and listen on) the socket of C{description} as the endpoint
    would: its interface (default 127.0.0.1), port and backlog; or take the
    inherited socket of C{fd=}.

    @raise ListenError: the port cannot be bound (one line, as a worker would say).
    @raise EndpointConfigurationError: the string has no port.
    """
    args, kwargs = split_description(description)
    if "fd" in kwargs:
        sock = socket.socket(fileno=int(kwargs["fd"]))
        sock.set_inheritable(True)
        return BoundListener(option, description, sock)
    port_text = args[0] if args else kwargs.get("port")
    if port_text is None:
        raise EndpointConfigurationError(f"{option} {description}: port is required")
    interface = kwargs.get("interface", "127.0.0.1")
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((interface.strip("[]"), int(port_text)))
        sock.listen(int(kwargs.get("backlog", DEFAULT_BACKLOG)))
    except OSError as e:
        sock.close()
        shown = f"[{interface}]" if ":" in interface else interface
        message = f"cannot listen on {shown}:{port_text}: {e.strerror or e} ({option} {description})"
        log.error(literal(message))
        print(f"twistd securenet: error: {message}", file=sys.__stderr__ or sys.stderr, flush=True)
        raise ListenError(message) from None
    sock.set_inheritable(True)
    return BoundListener(option, description, sock)


def worker_arguments(
    args: Sequence[str], listeners: Sequence[BoundListener], *, number: int = 1, metrics: int | None = None
) -> list[str]:
    """
    The C{twistd securenet} arguments of worker C{number}: the supervisor's,
    without C{--workers} and the listeners, then each listener adopting its
    socket; with C{metrics} (a port), the worker serves C{/metrics} on that
    port plus C{number - 1} (each worker has its own counters: Prometheus
    scrapes every worker, as it would every host).
    """
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--workers", *LISTENER_OPTIONS):
            skip = "=" not in arg
            continue
        out.append(arg)
    for listener in listeners:
        out += [listener.option, listener.for_worker()]
    if metrics is not None:
        out += ["--metrics", str(metrics + number - 1)]
    return out


class _Worker(ProcessProtocol):
    """One worker process: its output goes to the supervisor's log, line by line."""

    def __init__(self, supervisor: Supervisor, number: int) -> None:
        self.supervisor = supervisor
        self.number = number
        self.started = supervisor.reactor.seconds()
        self.ended: Deferred[None] = Deferred()
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if lines:
            # One log event per read, not per line: under load a read holds
            # many lines, and relaying them is the supervisor's only work.
            self.supervisor.worker_lines(self.number, [line.decode("utf-8", "replace") for line in lines])

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if self._buffer:
            self.supervisor.worker_lines(self.number, [self._buffer.decode("utf-8", "replace")])
            self._buffer = b""
        self.supervisor.worker_ended(self, reason)
        self.ended.callback(None)

    def signal(self, signum: int) -> None:
        if self.transport is not None and self.transport.pid is not None:
            try:
                self.transport.signalProcess(signum)
            except OSError:
                pass


def _strip_timestamp(line: str) -> str:
    """A worker's twistd log line without its timestamp (the supervisor's log adds its own)."""
    head, sep, rest = line.partition(" [")
    return f"[{rest}" if sep and head[:4].isdigit() else line


class Supervisor(Service):
    """
    See the module docstring.

    @param args: the supervisor's own C{twistd securenet} arguments (what
        workers get, without C{--workers} and listeners).
    @param listeners: C{(option, endpoint string)} of every listener.
    @param drain: the workers' drain time: how long a stop waits before it
        kills a worker that has not exited.
    @param metrics: the port of worker 1's C{/metrics} (worker N: plus N - 1), or None.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        workers: int,
        args: Sequence[str],
        listeners: Sequence[tuple[str, str]],
        drain: float,
        metrics: int | None = None,
        executable: str = sys.executable,
    ) -> None:
        self.reactor = reactor
        self.count = workers
        self.args = list(args)
        self.listener_specs = list(listeners)
        self.drain = drain
        self.metrics = metrics
        self.executable = executable
        self.bound: list[BoundListener] = []
        self.workers: dict[int, _Worker] = {}
        self.delays: dict[int, float] = {}
        self.stopping = False
        self._restarts: dict[int, IDelayedCall] = {}
        self._previousHangup: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        for option, description in self.listener_specs:
            self.bound.append(bind_listener(option, description))
        for listener in self.bound:
            address = listener.sock.getsockname()
            log.info(
                "supervisor listening on {host}:{port} ({option} {description}) for {count} workers",
                host=address[0],
                port=address[1],
                option=listener.option,
                description=listener.description,
                count=self.count,
            )

    def startService(self) -> None:
        super().startService()
        for number in range(1, self.count + 1):
            self.spawn(number)
        try:
            self._previousHangup = signal.signal(signal.SIGHUP, self._hangup)
        except ValueError:  # not the main thread
            self._previousHangup = None

    def command(self, number: int) -> list[str]:
        """Worker C{number}'s command line."""
        run = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
        return [
            self.executable,
            "-c",
            run,
            "--nodaemon",
            "--pidfile=",
            "--logfile=-",
            "securenet",
            *worker_arguments(self.args, self.bound, number=number, metrics=self.metrics),
        ]

    def spawn(self, number: int) -> None:
        worker = _Worker(self, number)
        fds: dict[int, str | int] = {0: "w", 1: "r", 2: "r"}
        for listener in self.bound:
            fds[listener.sock.fileno()] = listener.sock.fileno()
        argv = self.command(number)
        self.reactor.spawnProcess(worker, argv[0], argv, env=dict(os.environ), path=os.getcwd(), childFDs=fds)
        self.workers[number] = worker
        pid = worker.transport.pid if worker.transport is not None else None
        log.info("worker {number} started (pid {pid})", number=number, pid=pid)

    def worker_lines(self, number: int, lines: Sequence[str]) -> None:
        """Write a worker's log lines to the supervisor's log, each prefixed with its number (one event)."""
        shown = [f"worker {number}: {_strip_timestamp(line)}" for line in lines if line.strip()]
        if shown:
            log.info(literal("\n".join(shown)))

    def worker_ended(self, worker: _Worker, reason: Failure) -> None:
        number = worker.number
        if self.workers.get(number) is worker:
            del self.workers[number]
        how = "exited" if reason.check(ProcessDone) else f"ended ({reason.getErrorMessage()})"
        if self.stopping:
            log.info("worker {number} {how}", number=number, how=how)
            return
        lived = self.reactor.seconds() - worker.started
        delay = self.delays.get(number, 0.5)
        delay = min(MAX_RESTART_DELAY, delay * 2) if lived < STARTUP_SECONDS else 0.5
        self.delays[number] = delay
        log.warn(
            "worker {number} {how} after {lived:.1f} s; restarting it in {delay:g} s",
            number=number,
            how=how,
            lived=lived,
            delay=delay,
        )
        self._restarts[number] = self.reactor.callLater(delay, self._restart, number)

    def _restart(self, number: int) -> None:
        self._restarts.pop(number, None)
        if not self.stopping:
            self.spawn(number)

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.signal_workers, signal.SIGHUP, "SIGHUP")

    def signal_workers(self, signum: int, why: str) -> None:
        """Send C{signum} to every worker."""
        log.info("{why}: passed to {count} workers", why=why, count=len(self.workers))
        for worker in list(self.workers.values()):
            worker.signal(signum)

    def stopService(self) -> Deferred[None]:
        """Pass SIGTERM to every worker, wait for each to drain and exit (killing one that outlives the drain)."""
        super().stopService()
        self.stopping = True
        # The workers close their copies as they stop: with the supervisor's
        # closed too, a new connection attempt is refused rather than queued.
        for listener in self.bound:
            listener.sock.close()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        if self._previousHangup is not None:
            signal.signal(signal.SIGHUP, self._previousHangup)
            self._previousHangup = None
        workers = list(self.workers.values())
        if not workers:
            return self._finished(None)
        self.signal_workers(signal.SIGTERM, "stopping")
        kill = self.reactor.callLater(self.drain + 10, self._kill)
        ended: Deferred[Any] = gatherResults([w.ended for w in workers])

        def done(result: object) -> None:
            if kill.active():
                kill.cancel()
            self._finished(None)

        return ended.addCallback(done)

    def _kill(self) -> None:
        for worker in list(self.workers.values()):
            log.warn("worker {number} outlived the drain; killing it", number=worker.number)
            worker.signal(signal.SIGKILL)

    def _finished(self, result: None) -> Deferred[None]:
        log.info("supervisor stopped: every worker exited")
        exit_cleanly(self.reactor)
        return succeed(None)
