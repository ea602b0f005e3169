"""
Tests for L{securenet.cred.throttle}: the policy's arithmetic, refused
policies, and L{Throttle} against L{MemoryStore} with a fake clock.  (The
exchange's use of it is tested in tests/session/test_exchange.py.)
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from securenet.cred._throttle import Throttle, ThrottlePolicy, throttle_keys
from securenet.store._memory import MemoryStore
from securenet.testing import EventCapture

ALICE = "user:alice"
ADDRESS = "addr:192.0.2.1"


class PolicyTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """The documented defaults: 3 free, 1 s doubling to 60 s, lockout at 20 (account) / 100 (address) for 15 min."""
        policy = ThrottlePolicy()
        self.assertEqual(
            (
                policy.free_failures,
                policy.base_delay,
                policy.max_delay,
                policy.account_lockout,
                policy.address_lockout,
                policy.lockout_seconds,
            ),
            (3, 1.0, 60.0, 20, 100, 900.0),
        )

    def test_freeFailures(self) -> None:
        """Up to free_failures consecutive failures cost no wait."""
        policy = ThrottlePolicy()
        for failures in range(4):
            self.assertEqual(policy.wait(ALICE, failures, 0.0), 0.0, failures)
        self.assertGreater(policy.wait(ALICE, 4, 0.0), 0.0)

    def test_doublingAndCap(self) -> None:
        """Each failure past the free ones doubles the wait, up to max_delay; time since the last failure counts."""
        policy = ThrottlePolicy()
        waits = [policy.wait(ALICE, failures, 0.0) for failures in range(4, 12)]
        self.assertEqual(waits, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0])
        self.assertEqual(policy.wait(ALICE, 6, 1.5), 2.5)
        self.assertEqual(policy.wait(ALICE, 6, 4.0), 0.0)
        self.assertEqual(policy.wait(ALICE, 6, 10.0), 0.0)
        custom = ThrottlePolicy(free_failures=1, base_delay=10, max_delay=25)
        self.assertEqual([custom.wait(ALICE, n, 0.0) for n in range(1, 6)], [0.0, 10.0, 20.0, 25.0, 25.0])

    def test_accountAndAddressLockout(self) -> None:
        """An account locks at account_lockout, an address only at address_lockout; both for lockout_seconds."""
        policy = ThrottlePolicy()
        self.assertEqual(policy.wait(ALICE, 19, 0.0), 60.0)
        self.assertEqual(policy.wait(ALICE, 20, 0.0), 900.0)
        self.assertEqual(policy.wait(ALICE, 20, 100.0), 800.0)
        self.assertEqual(policy.wait(ADDRESS, 20, 100.0), 0.0)
        self.assertEqual(policy.wait(ADDRESS, 20, 10.0), 50.0)
        self.assertEqual(policy.wait(ADDRESS, 99, 0.0), 60.0)
        self.assertEqual(policy.wait(ADDRESS, 100, 0.0), 900.0)
        self.assertEqual(policy.wait(ADDRESS, 250, 899.0), 1.0)

    def test_lockoutExpires(self) -> None:
        """After lockout_seconds since the last failure nothing is owed, whatever the count."""
        policy = ThrottlePolicy()
        for key, failures in ((ALICE, 20), (ALICE, 500), (ADDRESS, 100)):
            self.assertEqual(policy.wait(key, failures, 899.5), 0.5)
            self.assertEqual(policy.wait(key, failures, 900.0), 0.0)

    def test_invalidPolicies(self) -> None:
        """Thresholds below 1, delays that are not positive and finite, and max_delay < base_delay are refused."""
        nan, inf = float("nan"), float("inf")
        bad = [
            {"free_failures": 0},
            {"account_lockout": 0},
            {"address_lockout": -1},
            {"base_delay": 0},
            {"max_delay": -1},
            {"lockout_seconds": 0},
            {"base_delay": nan},
            {"max_delay": nan},
            {"lockout_seconds": nan},
            {"base_delay": inf, "max_delay": inf},
            {"lockout_seconds": inf},
            {"base_delay": 10, "max_delay": 5},
        ]
        for kwargs in bad:
            with self.assertRaises(ValueError, msg=repr(kwargs)):
                ThrottlePolicy(**kwargs)  # type: ignore[arg-type]
        with self.assertRaises(ValueError) as caught:
            ThrottlePolicy(base_delay=10, max_delay=5)
        self.assertIn("max_delay (5 s) is shorter than base_delay (10 s)", str(caught.exception))
        ThrottlePolicy(free_failures=1, base_delay=5, max_delay=5, account_lockout=1, address_lockout=1, lockout_seconds=0.5)


class ThrottleKeysTests(SynchronousTestCase):
    def test_keys(self) -> None:
        """Always the address; the account too when one is named (an empty name is none)."""
        self.assertEqual(throttle_keys(None, "192.0.2.1"), [ADDRESS])
        self.assertEqual(throttle_keys("", "192.0.2.1"), [ADDRESS])
        self.assertEqual(throttle_keys("alice", "192.0.2.1"), [ADDRESS, ALICE])
        self.assertEqual(throttle_keys("addr:192.0.2.1", "::1"), ["addr:::1", "user:addr:192.0.2.1"])


class SlowStore(MemoryStore):
    """A MemoryStore whose failure reads answer only when released, counting overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[Deferred[tuple[int, float]], str]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def get_failures(self, key: str) -> Deferred[tuple[int, float]]:
        d: Deferred[tuple[int, float]] = Deferred()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.waiting.append((d, key))
        return d

    def release(self) -> None:
        while self.waiting:
            d, key = self.waiting.pop(0)
            self.in_flight -= 1
            d.callback(self.failures.get(key, (0, 0.0)))


class ThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = EventCapture(self)
        self.clock = Clock()
        self.store = MemoryStore()
        self.policy = ThrottlePolicy(
            free_failures=2, base_delay=5, max_delay=20, account_lockout=4, address_lockout=6, lockout_seconds=100
        )
        self.throttle = Throttle(self.store, self.clock, self.policy)
        self.keys = [ADDRESS, ALICE]

    def check(self, keys: list[str] | None = None) -> float | None:
        result: float | None = self.successResultOf(self.throttle.check(keys or self.keys))
        return result

    def failed(self, keys: list[str] | None = None) -> None:
        self.assertIsNone(self.successResultOf(self.throttle.failed(keys or self.keys)))

    def test_failedCountsInTheStore(self) -> None:
        """Each failure adds one to every key, with the clock's time."""
        self.assertIsNone(self.check())
        self.failed()
        self.clock.advance(3)
        self.failed()
        self.assertEqual(self.store.failures, {ADDRESS: (2, 3.0), ALICE: (2, 3.0)})
        self.assertIsNone(self.check())

    def test_checkWaitsAndAllows(self) -> None:
        """Past the free failures check fires with the wait; once it has passed, with None."""
        for _ in range(3):
            self.failed()
        self.assertEqual(self.check(), 5.0)
        self.clock.advance(4)
        self.assertEqual(self.check(), 1.0)
        self.clock.advance(1)
        self.assertIsNone(self.check())
        self.failed()
        # The fourth failure doubles the address's wait, and locks the account out.
        self.assertEqual(self.check([ADDRESS]), 10.0)
        self.assertEqual(self.check(), 100.0)

    def test_longestWaitWins(self) -> None:
        """With several keys, the longest wait of any of them; a key with no failures adds nothing."""
        for _ in range(3):
            self.failed([ALICE])
        self.failed([ADDRESS])
        self.assertEqual(self.check([ADDRESS]), None)
        self.assertEqual(self.check([ADDRESS, ALICE]), 5.0)
        self.assertEqual(self.check([ADDRESS, "user:bob"]), None)

    def test_succeededForgivesTheAccountOnly(self) -> None:
        """
        A success forgets the failures of its account keys, and only those; an
        address gets back only the attempts admitted for this login (its
        other failures decay instead: one valid login must not wipe them).
        """
        for _ in range(4):
            self.failed([ADDRESS, ALICE, "user:bob"])
        self.successResultOf(self.throttle.succeeded(self.keys))
        self.assertEqual(self.store.failures, {ADDRESS: (3, 0.0), "user:bob": (4, 0.0)})
        self.assertIsNone(self.check([ALICE]))
        self.assertEqual(self.check([ADDRESS]), 5.0)
        self.assertEqual(self.check(["user:bob"]), 100.0)  # 4 failures: locked out
        self.successResultOf(self.throttle.succeeded([ADDRESS], admitted=2))
        self.assertEqual(self.store.failures[ADDRESS], (1, 0.0))
        self.successResultOf(self.throttle.succeeded([ADDRESS], admitted=2))
        self.assertNotIn(ADDRESS, self.store.failures)

    def test_admitCountsBeforeTheCheck(self) -> None:
        """
        admit() counts an attempt when it lets it through, so attempts still
        being checked (parallel connections) use up the allowance: with 2
        free failures the third admitted-but-unanswered attempt is refused.
        """
        self.assertIsNone(self.successResultOf(self.throttle.admit(self.keys)))
        self.assertIsNone(self.successResultOf(self.throttle.admit(self.keys)))
        self.assertIsNone(self.successResultOf(self.throttle.admit(self.keys)))
        self.assertEqual(self.store.failures, {ADDRESS: (3, 0.0), ALICE: (3, 0.0)})
        self.assertEqual(self.successResultOf(self.throttle.admit(self.keys)), 5.0)
        self.assertEqual(self.store.failures, {ADDRESS: (3, 0.0), ALICE: (3, 0.0)})

    def test_admitIsSerialised(self) -> None:
        """
        With a store that answers later (as the SQLite store does, from its
        thread), two admits in flight at once are decided one after the other.
        """
        slow = SlowStore()
        throttle = Throttle(slow, self.clock, self.policy)
        slow.failures[ALICE] = (3, 0.0)
        first = throttle.admit([ALICE])
        second = throttle.admit([ALICE])
        slow.release()
        self.assertEqual(self.successResultOf(first), 5.0)
        self.assertEqual(self.successResultOf(second), 5.0)
        self.assertEqual(slow.max_in_flight, 1)

    def test_lockoutEventOnce(self) -> None:
        """auth.lockout is logged once per key, when its count reaches the key's threshold."""
        for n in range(1, 8):
            self.failed()
            self.clock.advance(1)
            events = self.log.of("auth.lockout")
            expected = (1 if n >= 4 else 0) + (1 if n >= 6 else 0)
            self.assertEqual(len(events), expected, n)
        account, address = self.log.of("auth.lockout")
        self.assertEqual((account["key"], account["count"], account["seconds"]), (ALICE, 4, 100.0))
        self.assertEqual((address["key"], address["count"], address["seconds"]), (ADDRESS, 6, 100.0))
        self.assertEqual(self.log.of("auth.lockout", key=ALICE), [account])

    def test_lockedOutUntilQuiet(self) -> None:
        """
        A locked-out key waits lockout_seconds from its last failure; after a
        quiet lockout period its counter starts afresh (and a new lockout
        is logged again when reached).
        """
        for _ in range(4):
            self.failed([ALICE])
        self.assertEqual(self.check([ALICE]), 100.0)
        self.clock.advance(99)
        self.assertEqual(self.check([ALICE]), 1.0)
        self.assertEqual(self.store.failures[ALICE], (4, 0.0))
        self.clock.advance(1)
        self.assertIsNone(self.check([ALICE]))
        self.assertEqual(self.store.failures, {})
        self.failed([ALICE])
        self.assertEqual(self.store.failures[ALICE], (1, 100.0))
        for _ in range(3):
            self.failed([ALICE])
        self.assertEqual(len(self.log.of("auth.lockout", key=ALICE)), 2)

    def test_quietPeriodResetsBelowLockout(self) -> None:
        """Failures older than lockout_seconds are forgotten even below the lockout threshold."""
        for _ in range(3):
            self.failed()
        self.clock.advance(100)
        self.assertIsNone(self.check())
        self.assertEqual(self.store.failures, {})
        self.failed()
        self.assertEqual(self.store.failures, {ADDRESS: (1, 100.0), ALICE: (1, 100.0)})
