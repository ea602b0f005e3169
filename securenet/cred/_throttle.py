"""
Throttling and lockout of failed authentications, per account and per client
address, with counters in the credential store (so they are shared by every
connection and survive restarts).

The throttle never sleeps: an attempt that comes too soon after a failure is
refused at once with the time to wait.  So a burst of wrong passwords costs
the server one counter read per attempt -- no password hash, no blocked
reactor -- and an attacker gets at most one real check per delay period per
account and per address, whatever the number of connections.

Defaults (L{ThrottlePolicy}): the first 3 consecutive failures are free;
after that each failure doubles the wait before the next attempt (1 s, 2 s,
4 s, ... capped at 60 s); 20 consecutive failures lock an account out, and
100 lock an address out, for 15 minutes (NIST SP 800-63B allows at most 100
before lockout).  Attempts are counted when admitted (L{Throttle.admit}); a
success forgives the account's count and takes its own attempt back from the
address's; an address's failures otherwise decay after a quiet lockout period.
An operator clears them at once with L{clear_failures} (C{securenet users
unlock NAME}, C{securenet users unlock --address IP}).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from securenet import audit
from securenet._logs import SecurenetLogger
from securenet.interfaces import ICredentialStore

log = SecurenetLogger(namespace="securenet.auth")


@attrs.frozen
class ThrottlePolicy:
    free_failures: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0
    account_lockout: int = 20
    address_lockout: int = 100
    lockout_seconds: float = 900.0

    def __attrs_post_init__(self) -> None:
        if min(self.free_failures, self.account_lockout, self.address_lockout) < 1:
            raise ValueError("throttle thresholds must be at least 1")
        delays = (self.base_delay, self.max_delay, self.lockout_seconds)
        # NaN compares false with everything: it would silently disable throttling.
        if not all(math.isfinite(d) and d > 0 for d in delays):
            raise ValueError("throttle delays must be positive and finite")
        if self.max_delay < self.base_delay:
            raise ValueError(f"max_delay ({self.max_delay:g} s) is shorter than base_delay ({self.base_delay:g} s)")

    def wait(self, key: str, failures: int, since_last: float) -> float:
        """Seconds still to wait before C{key} may try again (0 if it may now)."""
        if since_last >= self.lockout_seconds:
            return 0.0
        lockout = self.address_lockout if key.startswith("addr:") else self.account_lockout
        if failures >= lockout:
            return self.lockout_seconds - since_last
        if failures <= self.free_failures:
            return 0.0
        delay: float = min(self.base_delay * 2 ** (failures - self.free_failures - 1), self.max_delay)
        return max(0.0, delay - since_last)


def throttle_keys(username: str | None, address: str) -> list[str]:
    """The counters an attempt touches: its address, and its account if named."""
    keys = [f"addr:{address}"]
    if username:
        keys.append(f"user:{username}")
    return keys


@defer.inlineCallbacks
def clear_failures(store: ICredentialStore, key: str, *, by: str):  # type: ignore[no-untyped-def]
    """
    An operator's unlock: forget every failure of C{key} (C{user:NAME} or
    C{addr:IP}), audited as C{auth.unlock} naming C{by}.  Fires with the
    C{(count, time of the last)} cleared, C{(0, 0.0)} when there was none
    (then nothing is changed or logged).
    """
    failures, last = yield store.get_failures(key)
    if failures:
        yield store.reset_failures(key)
        audit.auth_unlock(key, failures, by=by)
    return failures, last


class Throttle:
    def __init__(self, store: ICredentialStore, clock: IReactorTime, policy: ThrottlePolicy = ThrottlePolicy()) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self._lock = defer.DeferredLock()

    @defer.inlineCallbacks
    def check(self, keys: Sequence[str]):  # type: ignore[no-untyped-def]
        """
        Fires with the seconds to wait if any of C{keys} is throttled or
        locked out, else None.
        """
        now = self.clock.seconds()
        longest = 0.0
        for key in keys:
            failures, last = yield self.store.get_failures(key)
            if not failures:
                continue
            if now - last >= self.policy.lockout_seconds:
                # Quiet for a whole lockout period: start counting afresh.
                yield self.store.reset_failures(key)
                continue
            longest = max(longest, self.policy.wait(key, failures, now - last))
        return longest if longest > 0 else None

    @defer.inlineCallbacks
    def failed(self, keys: Sequence[str]):  # type: ignore[no-untyped-def]
        """Count a failure against every key; log lockouts as audit events."""
        now = self.clock.seconds()
        for key in keys:
            count = yield self.store.record_failure(key, now)
            lockout = self.policy.address_lockout if key.startswith("addr:") else self.policy.account_lockout
            if count == lockout:
                audit.auth_lockout(key, count, self.policy.lockout_seconds)

    @defer.inlineCallbacks
    def admit(self, keys: Sequence[str]):  # type: ignore[no-untyped-def]
        """
        Decide whether an attempt may be checked now, and if so count it as a
        failure I{before} it is checked (L{succeeded} forgives it).  Fires
        with the seconds to wait, or None when admitted.

        Counting up front, under a lock, is what makes the rate hold against
        parallel connections: every attempt admitted moves the counters, so
        the next one sees it even while the first is still being checked.
        """
        yield self._lock.acquire()
        try:
            wait = yield self.check(keys)
            if wait is None:
                yield self.failed(keys)
        finally:
            self._lock.release()
        return wait

    @defer.inlineCallbacks
    def succeeded(self, keys: Sequence[str], admitted: int = 1):  # type: ignore[no-untyped-def]
        """
        A success forgives the account's failures, and takes back from the
        address only the C{admitted} attempts L{admit} counted for this login
        (two for a password followed by TOTP).  An address's
        earlier failures are not forgiven (they decay after a quiet lockout
        period): one valid account must not let an attacker wipe the count of
        guesses at others.
        """
        for key in keys:
            if key.startswith("addr:"):
                for _ in range(admitted):
                    yield self.store.forgive_failure(key)
            else:
                yield self.store.reset_failures(key)
