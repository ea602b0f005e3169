"""
Where blocking work runs: the one seam (L{Runner}) and its runners.

Password hashing, SCRAM key derivation and SQLite never run on the
reactor thread.  Every component that blocks takes a L{Runner}:
L{thread_runner} gives it a dedicated thread pool (SQLite: one thread),
L{hashing_runner} one sized to leave a core to the reactor,
L{reactor_thread_pool_runner} the reactor's shared pool, and
L{synchronous_runner} runs on the calling thread (the CLI, tests).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

# -- the thread ----------------------------------------------------------------


class ThreadRunner:
    """
    A L{Runner} with its own threads (one by default: SQLite calls are
    serialised on it), never the reactor thread nor the reactor's shared pool.  The thread starts when the reactor
    runs and stops at reactor shutdown (or at L{stop}).  Made by
    L{thread_runner}.
    """

    def __init__(self, reactor: IReactorCore, *, threads: int = 1, name: str = "securenet-sqlite") -> None:
        if threads < 1:
            raise ValueError(f"a thread runner needs at least one thread, not {threads}")
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=threads, name=name)
        self._stopped = False
        self._startup: Any = reactor.callWhenRunning(self._start)
        self._shutdown: Any = reactor.addSystemEventTrigger("during", "shutdown", self._atShutdown)

    def __call__(self, f: Callable[..., _T], /, *args: Any) -> defer.Deferred[_T]:
        return deferToThreadPool(cast(IReactorFromThreads, self._reactor), self.pool, f, *args)

    def _start(self) -> None:
        self._startup = None  # a fired trigger is gone
        if not self._stopped and not self.pool.started:
            self.pool.start()

    def _atShutdown(self) -> None:
        self._shutdown = None
        self.stop()

    def stop(self) -> None:
        """Stop the thread (after the work already queued); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.pool.stop()
        triggers, self._startup, self._shutdown = (self._startup, self._shutdown), None, None
        for trigger in triggers:
            if trigger is not None:
                self._reactor.removeSystemEventTrigger(trigger)


def thread_runner(reactor: IReactorCore) -> ThreadRunner:
    """
    A runner on one dedicated thread, started with C{reactor} (which must
    also provide C{IReactorFromThreads}) and stopped at its shutdown: what a
    server passes to L{SQLiteStore.open}.
    """
    return ThreadRunner(reactor)


_T = TypeVar("_T")


# -- running blocking work ---------------------------------------------------


class Runner(Protocol):
    """
    The seam for blocking work: C{runner(f, *args)} calls C{f(*args)}
    somewhere and returns a Deferred of its result.
    """

    def __call__(self, f: Callable[..., _T], /, *args: Any) -> defer.Deferred[_T]: ...


def synchronous_runner(f: Callable[..., _T], /, *args: Any) -> defer.Deferred[_T]:
    """Run C{f} now, on the calling thread (the CLI, tests)."""
    return defer.maybeDeferred(f, *args)


def reactor_thread_pool_runner(reactor: IReactorThreads) -> Runner:
    """
    A runner using the reactor's thread pool (C{deferToThread}, with the
    reactor passed in): what L{PasswordChecker} uses in a server.
    """

    def run(f: Callable[..., _T], /, *args: Any) -> defer.Deferred[_T]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return run


def hashing_runner(reactor: Any) -> ThreadRunner:
    """
    Password hashing gets its own pool of C{nproc - 1} threads (at least
    one), not the reactor's shared pool of ten: on a small machine ten
    argon2 hashes at once starve the reactor thread (the benchmark measured
    a p99 of 121 ms during a login storm with the shared pool, 14 ms with a
    dedicated one), and do not finish any sooner.
    """
    return ThreadRunner(reactor, threads=max(1, (os.cpu_count() or 2) - 1), name="securenet-hashing")
