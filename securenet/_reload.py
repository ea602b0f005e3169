"""
Live reload for C{twistd securenet}: what SIGHUP re-reads, and the watch
that applies a new CRL file without a signal.

Every piece of reloadable material is an L{IReloadable}: a listener's
certificate, key, trust roots and CRL (L{ListenerMaterial}), its CRL alone
(L{ListenerCRL}, what the CRL watch reloads), the authorization policy, the
token keys.  L{Reloader} runs one reload at a time, in two steps: each
reloadable's C{prepare} reads and checks its files in a thread; only then
does its commit swap the new material in, on the reactor thread, for new
connections (established ones keep theirs).  A refusal changes nothing:
the previous material keeps serving, one C{service.reload} event (a log
line) names the file and the reason, and the reload metric counts it.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from cryptography.hazmat.primitives import serialization
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from securenet import audit
from securenet._errors import SecurenetError
from securenet._logs import SecurenetLogger
from securenet._threads import Runner, reactor_thread_pool_runner
from securenet.interfaces import IReloadable
from securenet.pki._files import load_crl
from securenet.tls._endpoints import SecureServerEndpoint
from securenet.tls._errors import MaterialRefused
from securenet.tls._material import DEFAULT_EXPIRY_MARGIN, check_crl, check_policy, check_validity

log = SecurenetLogger(namespace="securenet.reload")


def _utcnow(clock: Any) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)


@implementer(IReloadable)
class ListenerMaterial:
    """
    A C{securenet:} listener's files: certificate chain, private key, trust
    roots, CRL, expectRoots; checked as the successor of the policy in use
    (L{check_policy}: valid now, expectations, CRL, a test handshake).
    """

    what = "tls"

    def __init__(self, endpoint: SecureServerEndpoint, clock: Any, *, expiry_margin: float = DEFAULT_EXPIRY_MARGIN) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.expiry_margin = expiry_margin

    @property
    def source(self) -> str:
        files = self.endpoint.policy.files
        return files.describe() if files is not None else "?"

    def prepare(self) -> Callable[[], None]:
        current = self.endpoint.policy
        new = current.reloaded()
        warnings = check_policy(new, now=_utcnow(self.clock), current=current, expiry_margin=self.expiry_margin)
        context = new.make_context()
        creator = self.endpoint.creator
        return Commit(lambda: creator.replace(new, context), tuple(warnings))


@implementer(IReloadable)
class ListenerCRL:
    """A listener's CRL file alone: what the CRL watch reloads when the file changes."""

    what = "crl"

    def __init__(self, endpoint: SecureServerEndpoint, clock: Any) -> None:
        self.endpoint = endpoint
        self.clock = clock

    @property
    def source(self) -> str:
        files = self.endpoint.policy.files
        return (files.crl if files is not None else None) or "?"

    def prepare(self) -> Callable[[], None]:
        current = self.endpoint.policy
        new = current.crl_reloaded()
        check_crl(new, now=_utcnow(self.clock), current=current)
        context = new.make_context()
        creator = self.endpoint.creator
        # The Reloader runs one reload at a time: nothing replaces the policy
        # between this prepare and its commit.
        return Commit(lambda: creator.replace(new, context))

    def unchanged(self) -> bool:
        """Whether the file holds the CRL in use (blocking: reads it)."""
        path = self.source
        crl = self.endpoint.policy.crl
        if crl is None:
            return False
        try:
            return load_crl(path).public_bytes(serialization.Encoding.DER) == crl.public_bytes(serialization.Encoding.DER)
        except SecurenetError:
            return False


@attrs.frozen
class Commit:
    """What a C{prepare} returns: the swap, and warnings for the reload's log line (a certificate that expires soon)."""

    apply: Callable[[], object]
    warnings: tuple[str, ...] = ()

    def __call__(self) -> None:
        self.apply()


@attrs.define
class ReloadResult:
    """What one reload of every reloadable did."""

    done: list[str] = attrs.field(factory=list)
    refused: list[str] = attrs.field(factory=list)


class Reloader:
    """
    Reloads L{IReloadable}s, one reload at a time (a SIGHUP during a reload
    waits for it; so does the CRL watch).

    @param count: called with C{(what, result)} for every reloadable
        reloaded (C{result} C{done} or C{refused}): the reload metric.
    """

    def __init__(
        self,
        reactor: Any,
        reloadables: Sequence[IReloadable] = (),
        *,
        runner: Runner | None = None,
        count: Callable[[str, str], object] | None = None,
    ) -> None:
        self.reactor = reactor
        self.reloadables = list(reloadables)
        self.runner: Runner = runner if runner is not None else reactor_thread_pool_runner(reactor)
        self.count = count
        self._lock = DeferredLock()

    def add(self, reloadable: IReloadable) -> None:
        self.reloadables.append(reloadable)

    def reload(self, why: str = "SIGHUP") -> Deferred[ReloadResult]:
        """Reload every reloadable; fires with what was done and refused (it never fails)."""
        d: Deferred[ReloadResult] = self._lock.run(self._reloadAll, why)
        return d

    def reload_one(self, reloadable: IReloadable) -> Deferred[bool]:
        """Reload one (the CRL watch); fires with whether it was done."""
        d: Deferred[bool] = self._lock.run(self._reloadOne, reloadable)
        return d

    async def _reloadAll(self, why: str) -> ReloadResult:
        result = ReloadResult()
        for reloadable in list(self.reloadables):
            done = await self._reloadOne(reloadable)
            (result.done if done else result.refused).append(reloadable.what)
        log.info(
            "{why}: reloaded {done}, refused {refused}",
            why=why,
            done=len(result.done),
            refused=len(result.refused),
        )
        return result

    async def _reloadOne(self, reloadable: IReloadable) -> bool:
        what, source = reloadable.what, reloadable.source
        try:
            commit = await self.runner(reloadable.prepare)
        except SecurenetError as e:
            self._refused(what, source, str(e))
            return False
        except Exception:
            log.failure("reload of {what} ({source}) failed unexpectedly", what=what, source=source)
            self._refused(what, source, "internal error (see the traceback above)")
            return False
        try:
            commit()
        except Exception:
            log.failure("committing the reload of {what} ({source}) failed", what=what, source=source)
            self._refused(what, source, "internal error (see the traceback above)")
            return False
        audit.service_reload(what, source, result="ok", warnings=getattr(commit, "warnings", ()))
        if self.count is not None:
            self.count(what, "ok")
        return True

    def _refused(self, what: str, source: str, reason: str) -> None:
        audit.service_reload(what, source, result="refused", reason=reason)
        if self.count is not None:
            self.count(what, "refused")


def _signature(path: str) -> tuple[int, int, int, int] | None:
    """What changes when a file is replaced or rewritten (None: it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CRLWatch(Service):
    """
    Looks at a listener's CRL file every C{interval} seconds (the endpoint's
    C{crlPoll}) and reloads it through the L{Reloader} when the file changed,
    or when the CRL in use is past its next-update (a stale CRL fails closed
    and recovers as soon as a fresh file is in place, without a signal).  A
    file that keeps being refused is logged once, not at every look.
    """

    def __init__(self, reloader: Reloader, crl: ListenerCRL, interval: float) -> None:
        self.reloader = reloader
        self.crl = crl
        self.interval = interval
        self._seen = _signature(crl.source)
        self._refused: tuple[int, int, int, int] | None = None
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.look)
        self._loop.clock = self.reloader.reactor
        self._loop.start(self.interval, now=False).addErrback(lambda f: log.failure("the CRL watch stopped", f))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def stale(self) -> bool:
        crl = self.crl.endpoint.policy.crl
        if crl is None or crl.next_update_utc is None:
            return False
        return crl.next_update_utc < _utcnow(self.reloader.reactor)

    async def look(self) -> None:
        signature = await self.reloader.runner(_signature, self.crl.source)
        if signature is None:
            return
        if signature == self._seen and not self.stale():
            return
        if signature == self._refused:
            return
        self._seen = signature
        if await self.reloader.runner(self.crl.unchanged):
            return
        done = await self.reloader.reload_one(self.crl)
        self._refused = None if done else signature


def watch_crls(reloader: Reloader, endpoints: Sequence[SecureServerEndpoint]) -> list[CRLWatch]:
    """A L{CRLWatch} for every endpoint with a CRL file and a C{crlPoll} above 0."""
    watches = []
    for endpoint in endpoints:
        files = endpoint.policy.files
        if files is not None and files.crl is not None and endpoint.crl_poll > 0:
            watches.append(CRLWatch(reloader, ListenerCRL(endpoint, reloader.reactor), endpoint.crl_poll))
    return watches


def startup_warnings(endpoints: Sequence[SecureServerEndpoint], clock: Any, expiry_margin: float) -> list[str]:
    """What to warn about at start-up: certificates that expire within the margin (or have expired)."""
    warnings: list[str] = []
    for endpoint in endpoints:
        try:
            warnings.extend(check_validity(endpoint.policy, now=_utcnow(clock), expiry_margin=expiry_margin))
        except MaterialRefused as e:
            warnings.append(str(e))
    return warnings
