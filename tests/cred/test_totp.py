"""
Tests for L{securenet.cred.totp}: codes accepted within one step of now and
only once, every refusal with its audit reason, L{ISecondFactor.required},
and enrolment.  Codes are computed independently with pyotp at the fake
clock's time; nothing sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.parse

import pyotp
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import securenet.cred._strcred
from securenet.cred._credentials import TOTPCredentials
from securenet.cred._strcred import CheckerArgumentError, totpCheckerFactory
from securenet.cred._totp import AlreadyEnrolled, TOTPChecker, TOTPRefused, enroll
from securenet.interfaces import ISecondFactor
from securenet.store._errors import NoSuchUser
from securenet.store._memory import MemoryStore
from securenet.store._records import User

#: A time in the middle of a 30 s step (so "one step ago" is unambiguous).
NOW = 1_800_000_015
SECRET = pyotp.random_base32()


class TOTPTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryStore()
        self.store.users["alice"] = User("alice", totp_secret=SECRET)
        self.store.users["bob"] = User("bob")
        self.checker = TOTPChecker(self.store, self.clock)

    def code(self, offset_steps: int = 0, secret: str = SECRET) -> str:
        """The code an authenticator shows C{offset_steps} steps from the fake now (RFC 6238 via pyotp)."""
        return pyotp.TOTP(secret).at(self.clock.seconds() + 30 * offset_steps)

    def accept(self, code: str, user: str = "alice") -> None:
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(TOTPCredentials(user, code))), user)

    def assertRefused(self, code: str, reason: str, user: str = "alice") -> None:
        failure = self.failureResultOf(self.checker.requestAvatarId(TOTPCredentials(user, code)), TOTPRefused)
        self.assertEqual(failure.value.reason, reason)
        self.assertIsInstance(failure.value, UnauthorizedLogin)
        self.assertEqual(str(failure.value), "authentication failed")


class CheckTests(TOTPTestCase):
    def test_valid(self) -> None:
        self.accept(self.code())
        self.assertEqual(self.store.users["alice"].totp_last_step, NOW // 30)

    def test_same_code_twice(self) -> None:
        """pyotp alone would accept it again; the second use is refused."""
        code = self.code()
        self.assertTrue(pyotp.TOTP(SECRET).verify(code, for_time=NOW))
        self.accept(code)
        self.assertRefused(code, "code already used")
        self.clock.advance(10)
        self.assertRefused(code, "code already used")

    def test_two_steps_ago(self) -> None:
        """A code from two steps ago is outside the window of one step."""
        self.assertRefused(self.code(-2), "code outside the time window (-60 s)")
        self.assertRefused(self.code(+2), "code outside the time window (+60 s)")
        self.assertIsNone(self.store.users["alice"].totp_last_step)

    def test_previous_step_accepted_once(self) -> None:
        previous = self.code(-1)
        self.accept(previous)
        self.assertEqual(self.store.users["alice"].totp_last_step, NOW // 30 - 1)
        self.assertRefused(previous, "code already used")

    def test_next_step_accepted_once(self) -> None:
        upcoming = self.code(+1)
        self.accept(upcoming)
        self.clock.advance(30)
        self.assertRefused(upcoming, "code already used")

    def test_older_code_after_newer(self) -> None:
        """After the current code was used, the previous step's code is refused (steps only go forward)."""
        previous = self.code(-1)
        self.accept(self.code())
        self.assertRefused(previous, "code already used")

    def test_next_step_code_accepted_after_current(self) -> None:
        self.accept(self.code())
        self.clock.advance(30)
        self.accept(self.code())

    def test_code_ages_out(self) -> None:
        code = self.code()
        self.clock.advance(60)
        self.assertRefused(code, "code outside the time window (-60 s)")

    def test_wrong_code(self) -> None:
        valid = {self.code(n) for n in range(-10, 11)}
        wrong = next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in valid)
        self.assertRefused(wrong, "wrong code")

    def test_not_enrolled(self) -> None:
        self.assertRefused(self.code(), "not enrolled in TOTP", user="bob")

    def test_unknown_user(self) -> None:
        self.assertRefused(self.code(), "unknown user", user="carol")

    def test_disabled_user(self) -> None:
        self.store.users["alice"] = User("alice", totp_secret=SECRET, disabled=True)
        self.assertRefused(self.code(), "user disabled")

    def test_malformed(self) -> None:
        """Wrong length, non-digits (including Unicode digits), spaces: refused before any lookup."""
        code = self.code()
        for bad in ("", code[:5], code + "0", "12345a", " " + code[:5], code[:3] + " " + code[3:], "١٢٣٤٥٦", "-12345"):
            self.assertRefused(bad, "malformed code")
        self.assertIsNone(self.store.users["alice"].totp_last_step)

    def test_invalid_stored_secret(self) -> None:
        self.store.users["alice"] = User("alice", totp_secret="not base32!")
        self.assertRefused("123456", "stored TOTP secret is invalid")

    def test_user_deleted_between_lookup_and_mark(self) -> None:
        store = self.store

        def mark(name: str, step: int) -> object:
            del store.users[name]
            return MemoryStore.mark_totp_step(store, name, step)

        self.patch(store, "mark_totp_step", mark)
        self.assertRefused(self.code(), "unknown user")

    def test_window_zero(self) -> None:
        checker = TOTPChecker(self.store, self.clock, window=0)
        failure = self.failureResultOf(checker.requestAvatarId(TOTPCredentials("alice", self.code(-1))), TOTPRefused)
        self.assertEqual(failure.value.reason, "code outside the time window (-30 s)")

    def test_sha256_eight_digits(self) -> None:
        checker = TOTPChecker(self.store, self.clock, digits=8, digest=hashlib.sha256)
        code = pyotp.TOTP(SECRET, digits=8, digest=hashlib.sha256).at(NOW)
        self.assertEqual(self.successResultOf(checker.requestAvatarId(TOTPCredentials("alice", code))), "alice")

    def test_bad_settings(self) -> None:
        for kw in ({"digits": 5}, {"interval": 0}, {"window": 3}, {"window": -1}):
            with self.assertRaises(ValueError):
                TOTPChecker(self.store, self.clock, **kw)  # type: ignore[arg-type]

    def test_interfaces(self) -> None:
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))
        self.assertTrue(verifyObject(ISecondFactor, self.checker))


class RequiredTests(TOTPTestCase):
    def test_required(self) -> None:
        self.assertIs(self.successResultOf(self.checker.required("alice")), True)
        self.assertIs(self.successResultOf(self.checker.required("bob")), False)
        self.assertIs(self.successResultOf(self.checker.required("carol")), False)


class EnrollTests(TOTPTestCase):
    def test_enroll(self) -> None:
        secret, uri = self.successResultOf(enroll(self.store, "bob", issuer="Example Corp"))
        self.assertEqual(len(secret), 32)
        self.assertEqual(self.store.users["bob"].totp_secret, secret)
        parsed = urllib.parse.urlparse(uri)
        query = urllib.parse.parse_qs(parsed.query)
        self.assertEqual((parsed.scheme, parsed.netloc), ("otpauth", "totp"))
        self.assertEqual(urllib.parse.unquote(parsed.path), "/Example Corp:bob")
        self.assertEqual((query["secret"], query["issuer"]), ([secret], ["Example Corp"]))
        self.assertIs(self.successResultOf(self.checker.required("bob")), True)
        self.accept(pyotp.TOTP(secret).at(NOW), user="bob")

    def test_secret_is_160_bits(self) -> None:
        secret, _ = self.successResultOf(enroll(self.store, "bob"))
        self.assertEqual(len(base64.b32decode(secret)), 20)

    def test_already_enrolled(self) -> None:
        failure = self.failureResultOf(enroll(self.store, "alice"), AlreadyEnrolled)
        self.assertEqual(str(failure.value), "user 'alice' is already enrolled in TOTP")
        self.assertEqual(self.store.users["alice"].totp_secret, SECRET)

    def test_replace_resets_last_step(self) -> None:
        self.accept(self.code())
        secret, _ = self.successResultOf(enroll(self.store, "alice", replace=True))
        self.assertNotEqual(secret, SECRET)
        self.assertIsNone(self.store.users["alice"].totp_last_step)
        old = self.code()
        if old not in {self.code(n, secret) for n in (-1, 0, 1)}:  # else the new secret shows the same code
            failure = self.failureResultOf(self.checker.requestAvatarId(TOTPCredentials("alice", old)), TOTPRefused)
            self.assertNotEqual(failure.value.reason, "code already used")
        self.accept(self.code(0, secret))

    def test_unknown_user(self) -> None:
        self.failureResultOf(enroll(self.store, "carol"), NoSuchUser)
        self.assertNotIn("carol", self.store.users)


class StrcredTests(TOTPTestCase):
    def test_generate(self) -> None:
        self.patch(securenet.cred._strcred, "open_store", lambda path, auth_type: self.store)
        checker = totpCheckerFactory.generateChecker("db=creds.db")
        self.assertIsInstance(checker, TOTPChecker)
        self.assertIs(checker.store, self.store)

    def test_db_required(self) -> None:
        with self.assertRaises(CheckerArgumentError) as e:
            totpCheckerFactory.generateChecker("")
        self.assertEqual(str(e.exception), "--auth totp: db=PATH (the credential database) is required")
