"""
Tests for L{securenet.cred.passwords}: SASLprep (against scramp's copy and
RFC 4013's examples), argon2id hashing, SCRAM key derivation (against
scramp), user creation, the password checker and the PLAIN mechanism.

Hashing uses tiny argon2 parameters and 4096 SCRAM iterations, so the suite
stays fast; no assertion is about time.
"""

from __future__ import annotations

import datetime
import random
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import scramp
from scramp.utils import saslprep as scramp_saslprep
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from securenet._errors import SecurenetError
from securenet._threads import synchronous_runner
from securenet.cred._identity import IdentityRealm
from securenet.cred._names import UserRecordError, validate_roles, validate_user_name
from securenet.cred._passwords import (
    DEFAULT_ARGON2,
    GENERIC_REFUSAL,
    InvalidPasswordHash,
    LoginRefused,
    PasswordChecker,
    PasswordHasher,
)
from securenet.cred._saslprep import PasswordError, SASLprepError, normalize_password, saslprep
from securenet.cred._scram import derive_scram_keys
from securenet.cred._users import new_user
from securenet.interfaces import IMechanismFactory, IServerMechanism
from securenet.sasl._mechanism import Challenge, ChannelBindings, Complete, MechanismError
from securenet.sasl._offer import offered_mechanisms
from securenet.sasl._plain import PLAIN, PlainMechanism, parse_plain
from securenet.store._memory import MemoryStore
from securenet.store._records import ScramKeys, User

T = TypeVar("T")

ITERATIONS = 4096


def fast_hasher(time_cost: int = 1) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=8, parallelism=1, insecurely_weak=True)


#: Code point ranges the corpus draws from: ASCII, controls, Latin, combining
#: marks, Hebrew/Arabic (bidi), spaces and joiners, variation selectors,
#: fullwidth, private use, surrogates, tags, math letters, roman numerals,
#: CJK, Hangul, and anything at all.
CORPUS_RANGES = [
    (0x20, 0x7E), (0x00, 0x20), (0x7F, 0x2FF), (0x300, 0x36F), (0x590, 0x6FF),
    (0x2000, 0x206F), (0xFE00, 0xFEFF), (0xFF00, 0xFFFF), (0xE000, 0xE0FF),
    (0xD800, 0xDFFF), (0xE0000, 0xE007F), (0x1D400, 0x1D7FF), (0x2160, 0x218F),
    (0x3000, 0x30FF), (0xAC00, 0xAD00), (0x0, 0x10FFFF),
]  # fmt: skip

#: Hand-picked inputs: each mapping, normalization, prohibition and bidi rule.
HANDPICKED = [
    "", "user", "USER", "pencil", "I\u00adX", "\u00aa", "\u2168", "\u0007",
    "\u0627\u0031", "\u0627\u0031\u0628", "\u0627", "\u05d0\u05d1", "a\u05d0",
    "\u05d0a\u05d0", "\u00a0", "a\u3000b", "\u200b", "\ufeff", "\ufb01",
    "\u1680x", "\ue000", "\ufdd0", "\ufffe", "\ud800", "\udfff", "\ufff9",
    "\u2ff0", "\u0340", "\u200e", "\U000e0001", "\u0221", "\U0010fffd",
    "caf\u00e9", "cafe\u0301", "\uff21\uff22", "\u2126", "\u212b", "\u1e9b\u0323",
    "pass word", "tab\tchar", "\u0085", "\u2028", "\U0001d400", "\u00df", "\u0130",
    "\u034f", "\u180b", "\u2060", "\ufe0f", "\u200c\u200d", "\u06dd", "\u070f",
    "\u180e", "\ufff9\ufffa", "\U0001d173", "\u206a", "\U000e0020",
]  # fmt: skip


def corpus(size: int = 4000, seed: int = 4013) -> list[str]:
    rng = random.Random(seed)
    strings = list(HANDPICKED)
    for _ in range(size):
        strings.append("".join(chr(rng.randint(*rng.choice(CORPUS_RANGES))) for _ in range(rng.randint(0, 6))))
    return strings


class SASLprepTests(SynchronousTestCase):
    """L{saslprep} is RFC 4013."""

    def test_rfc4013Examples(self) -> None:
        """RFC 4013 section 3's table."""
        self.assertEqual(saslprep("I\u00adX"), "IX")
        self.assertEqual(saslprep("user"), "user")
        self.assertEqual(saslprep("USER"), "USER")
        self.assertEqual(saslprep("\u00aa"), "a")
        self.assertEqual(saslprep("\u2168"), "IX")
        self.assertEqual(self.assertRaises(SASLprepError, saslprep, "\u0007").problem, "contains a control character")
        self.assertEqual(
            self.assertRaises(SASLprepError, saslprep, "\u0627\u0031").problem,
            "contains right-to-left characters but does not start and end with one",
        )

    def test_sameAsScramp(self) -> None:
        """
        On a corpus of hand-picked and random strings, L{saslprep} gives
        scramp's answer: the same output, or a refusal where scramp refuses.
        """
        disagreements = []
        refused = 0
        for text in corpus():
            try:
                expected: str | None = scramp_saslprep(text)
            except scramp.ScramException:
                expected = None
            try:
                actual: str | None = saslprep(text)
            except SASLprepError:
                actual = None
            if expected is None:
                refused += 1
            if actual != expected:
                disagreements.append((text, expected, actual))
        self.assertEqual(disagreements, [])
        # The corpus exercises both outcomes.
        self.assertGreater(refused, 100)
        self.assertLess(refused, len(corpus()) - 100)

    def test_idempotent(self) -> None:
        """A prepared string is its own preparation (so preparing twice is harmless)."""
        for text in corpus(1000):
            try:
                prepared = saslprep(text)
            except SASLprepError:
                continue
            self.assertEqual(saslprep(prepared), prepared, ascii(text))

    def test_mapping(self) -> None:
        """Non-ASCII spaces become U+0020; 'mapped to nothing' characters go."""
        self.assertEqual(saslprep("a\u00a0b\u3000c\u2003d"), "a b c d")
        self.assertEqual(saslprep("a\u200bb\ufeffc\u00add"), "abcd")

    def test_problems(self) -> None:
        """Each refusal names its problem and never quotes the input."""
        cases = {
            "se\u0000cret": "contains a control character",
            "se\u0085cret": "contains a control character",
            "se\ue000cret": "contains a private-use character",
            "se\ufdd0cret": "contains a non-character code point",
            "se\ud800cret": "contains a surrogate code point",
            # ruff reads the lone surrogate of the key above as U+FFFD: the keys differ.
            "se\ufffdcret": "contains a character inappropriate for plain text",  # noqa: F601
            "se\u2ff0cret": "contains a character inappropriate for canonical representation",
            "se\u200ecret": "contains a display-changing or deprecated character",
            "se\U000e0001cret": "contains a tagging character",
            "se\u0221cret": "contains a code point unassigned in Unicode 3.2",
            "\u05d0a\u05d0": "mixes right-to-left and left-to-right characters",
            "\u05d0\u05d11": "contains right-to-left characters but does not start and end with one",
        }
        for text, problem in cases.items():
            e = self.assertRaises(SASLprepError, saslprep, text)
            self.assertEqual(e.problem, problem, ascii(text))
            self.assertEqual(str(e), f"string refused by SASLprep: it {problem}")
            self.assertNotIn("cret", str(e))
            self.assertIsInstance(e, SecurenetError)

    def test_unassignedAllowedInQueries(self) -> None:
        """C{allow_unassigned=True} (a "query" string) lets unassigned code points through."""
        self.assertEqual(saslprep("a\u0221", allow_unassigned=True), "a\u0221")

    def test_rightToLeft(self) -> None:
        """A string of right-to-left characters that starts and ends with one is fine."""
        self.assertEqual(saslprep("\u0627\u0031\u0628"), "\u0627\u0031\u0628")


class NormalizePasswordTests(SynchronousTestCase):
    """L{normalize_password}: SASLprep, refusing empty results, never quoting the password."""

    def test_equivalentPasswords(self) -> None:
        self.assertEqual(normalize_password("I\u00adX"), "IX")
        self.assertEqual(normalize_password("\u2168"), "IX")

    def test_empty(self) -> None:
        self.assertEqual(str(self.assertRaises(PasswordError, normalize_password, "")), "password must not be empty")

    def test_emptyOncePrepared(self) -> None:
        e = self.assertRaises(PasswordError, normalize_password, "\u00ad\u200b")
        self.assertEqual(str(e), "password is empty once prepared (it holds only characters SASLprep removes)")

    def test_refused(self) -> None:
        e = self.assertRaises(PasswordError, normalize_password, "hunter\u00072")
        self.assertEqual(str(e), "password refused: it contains a control character")


class PasswordHasherTests(SynchronousTestCase):
    """L{PasswordHasher}: argon2id, OWASP minimums, rehash detection, a dummy hash."""

    def test_hashAndVerify(self) -> None:
        hasher = fast_hasher()
        h = hasher.hash("correct horse")
        self.assertTrue(h.startswith("$argon2id$v=19$m=8,t=1,p=1$"), h)
        self.assertTrue(hasher.verify(h, "correct horse"))
        self.assertFalse(hasher.verify(h, "correct horse "))
        self.assertFalse(hasher.verify(h, "Correct horse"))

    def test_saltedHashes(self) -> None:
        hasher = fast_hasher()
        self.assertNotEqual(hasher.hash("same"), hasher.hash("same"))

    def test_verifyNormalizes(self) -> None:
        """Passwords SASLprep makes equal verify against each other's hash."""
        hasher = fast_hasher()
        self.assertTrue(hasher.verify(hasher.hash("I\u00adX"), "\u2168"))
        self.assertTrue(hasher.verify(hasher.hash("\u2168"), "IX"))

    def test_verifyRefusedPassword(self) -> None:
        """A password SASLprep refuses, or an empty one, is a wrong password, not an exception."""
        hasher = fast_hasher()
        h = hasher.hash("secret")
        self.assertFalse(hasher.verify(h, "sec\u0007ret"))
        self.assertFalse(hasher.verify(h, ""))

    def test_hashRefusedPassword(self) -> None:
        e = self.assertRaises(PasswordError, fast_hasher().hash, "")
        self.assertEqual(str(e), "password must not be empty")

    def test_invalidHash(self) -> None:
        e = self.assertRaises(InvalidPasswordHash, fast_hasher().verify, "not a hash", "secret")
        self.assertEqual(str(e), "stored password hash is not an argon2 hash")

    def test_needsRehash(self) -> None:
        """A hash made with other parameters needs rehashing; garbage too."""
        old, new = fast_hasher(1), fast_hasher(2)
        h = old.hash("secret")
        self.assertFalse(old.needs_rehash(h))
        self.assertTrue(new.needs_rehash(h))
        self.assertTrue(new.needs_rehash("garbage"))

    def test_dummyHash(self) -> None:
        """The dummy hash has the hasher's parameters and matches no usual password."""
        hasher = fast_hasher()
        self.assertTrue(hasher.dummy_hash.startswith("$argon2id$v=19$m=8,t=1,p=1$"))
        self.assertFalse(hasher.needs_rehash(hasher.dummy_hash))
        self.assertFalse(hasher.verify(hasher.dummy_hash, "password"))
        self.assertNotEqual(hasher.dummy_hash, fast_hasher().dummy_hash)

    def test_weakRefused(self) -> None:
        """Parameters below every OWASP minimum need C{insecurely_weak=True}."""
        e = self.assertRaises(ValueError, PasswordHasher, time_cost=1, memory_cost=19456)
        self.assertEqual(
            str(e),
            "argon2id time_cost=1, memory_cost=19456 KiB is weaker than every OWASP minimum "
            "(e.g. memory_cost=19456 with time_cost=2); pass insecurely_weak=True only in tests",
        )
        self.assertRaises(ValueError, PasswordHasher, time_cost=4, memory_cost=7168)

    def test_owaspMinimumAccepted(self) -> None:
        """OWASP's m=19 MiB, t=2 configuration is accepted as is."""
        hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
        self.assertIn("$m=19456,t=2,p=1$", hasher.dummy_hash)

    def test_defaults(self) -> None:
        """The default is argon2-cffi's RFC 9106 low-memory profile (t=3, 64 MiB, p=4)."""
        self.assertEqual(
            (DEFAULT_ARGON2.time_cost, DEFAULT_ARGON2.memory_cost, DEFAULT_ARGON2.parallelism),
            (3, 65536, 4),
        )
        hasher = PasswordHasher()
        self.assertTrue(hasher.dummy_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$"))


class DeriveScramKeysTests(SynchronousTestCase):
    """L{derive_scram_keys} gives what scramp's C{make_auth_info} does."""

    def test_sameAsScramp(self) -> None:
        mechanism = scramp.ScramMechanism("SCRAM-SHA-256")
        for password in ["pencil", "I\u00adX", "\u2168", "caf\u00e9", "p\u00e4ss w\u00f6rd", "\u0627\u0031\u0628"]:
            for iterations in (4096, 5000):
                salt = bytes(range(16))
                keys = derive_scram_keys(password, salt=salt, iterations=iterations)
                expected_salt, stored_key, server_key, i = mechanism.make_auth_info(
                    password, iteration_count=iterations, salt=salt
                )
                self.assertEqual(keys, ScramKeys(expected_salt, i, stored_key, server_key), ascii(password))

    def test_rfc7677Example(self) -> None:
        """RFC 7677 section 3: user/pencil, its salt and 4096 iterations give its ServerSignature key."""
        import base64
        import hashlib
        import hmac

        salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
        keys = derive_scram_keys("pencil", salt=salt, iterations=4096)
        auth_message = (
            b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        )
        signature = hmac.digest(keys.server_key, auth_message, "sha256")
        self.assertEqual(base64.b64encode(signature), b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        client_signature = hmac.digest(keys.stored_key, auth_message, "sha256")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        self.assertEqual(hashlib.sha256(client_key).digest(), keys.stored_key)

    def test_randomSalt(self) -> None:
        a, b = derive_scram_keys("pencil", iterations=ITERATIONS), derive_scram_keys("pencil", iterations=ITERATIONS)
        self.assertEqual((len(a.salt), len(b.salt)), (16, 16))
        self.assertNotEqual(a.salt, b.salt)
        self.assertNotEqual(a.stored_key, b.stored_key)

    def test_defaultIterations(self) -> None:
        """600,000 iterations unless told otherwise (checked on the signature, not by running it)."""
        import inspect

        self.assertEqual(inspect.signature(derive_scram_keys).parameters["iterations"].default, 600_000)

    def test_refusals(self) -> None:
        e = self.assertRaises(ValueError, derive_scram_keys, "pencil", iterations=4095)
        self.assertEqual(str(e), "SCRAM iterations must be at least 4096, not 4095")
        e = self.assertRaises(ValueError, derive_scram_keys, "pencil", salt=b"", iterations=4096)
        self.assertEqual(str(e), "SCRAM salt must not be empty")
        e = self.assertRaises(PasswordError, derive_scram_keys, "pen\u0000cil", iterations=4096)
        self.assertEqual(str(e), "password refused: it contains a control character")


class NewUserTests(SynchronousTestCase):
    """L{new_user} and the name/role rules."""

    def test_newUser(self) -> None:
        hasher = fast_hasher()
        user = new_user("alice", "s3cret", roles=["admin", "ops", "admin"], hasher=hasher,
                        scram_iterations=ITERATIONS, attributes={"team": "blue"})  # fmt: skip
        self.assertEqual((user.name, user.roles, user.attributes), ("alice", ("admin", "ops"), {"team": "blue"}))
        assert user.password_hash is not None and user.scram is not None and user.created is not None
        self.assertTrue(hasher.verify(user.password_hash, "s3cret"))
        self.assertEqual(user.scram, derive_scram_keys("s3cret", salt=user.scram.salt, iterations=ITERATIONS))
        self.assertEqual((user.totp_secret, user.totp_last_step, user.disabled), (None, None, False))
        self.assertIsNotNone(user.created.tzinfo)
        self.assertLess(abs(user.created - datetime.datetime.now(datetime.UTC)), datetime.timedelta(minutes=5))

    def test_nfc(self) -> None:
        """Names are stored in NFC."""
        user = new_user("Zoe\u0308", "pw", hasher=fast_hasher(), scram_iterations=ITERATIONS)
        self.assertEqual(user.name, "Zo\u00eb")

    def test_badNames(self) -> None:
        cases = {
            "": "user name must not be empty",
            "a" * 65: f"user name {'a' * 65!r} is 65 characters; at most 64 are allowed",
            "al ice": "user name 'al ice' contains whitespace or a control character",
            "alice\n": "user name 'alice\\n' contains whitespace or a control character",
            "al\u00adice": "user name 'al\\xadice' contains whitespace or a control character",
            "al\ue000ice": "user name 'al\\ue000ice' refused: it contains a private-use character",
            "\u2168": "user name 'Ⅸ' is not in SASLprep form (that would be 'IX')",
            "\u05d0a": "user name 'אa' refused: it mixes right-to-left and left-to-right characters",
        }
        for name, message in cases.items():
            e = self.assertRaises(UserRecordError, validate_user_name, name)
            self.assertEqual(str(e), message)
            self.assertRaises(UserRecordError, new_user, name, "pw", hasher=fast_hasher(), scram_iterations=ITERATIONS)
        self.assertEqual(validate_user_name("a" * 64), "a" * 64)
        self.assertEqual(validate_user_name("spiffe://example.org/x"), "spiffe://example.org/x")

    def test_badRoles(self) -> None:
        self.assertEqual(str(self.assertRaises(UserRecordError, validate_roles, [""])), "role name must not be empty")
        self.assertEqual(
            str(self.assertRaises(UserRecordError, validate_roles, ["a,b"])),
            "role name 'a,b' contains whitespace, a control character or a comma",
        )
        self.assertRaises(UserRecordError, validate_roles, ["a b"])

    def test_badPassword(self) -> None:
        hasher = fast_hasher()
        e = self.assertRaises(PasswordError, new_user, "alice", "", hasher=hasher, scram_iterations=ITERATIONS)
        self.assertEqual(str(e), "password must not be empty")
        e = self.assertRaises(PasswordError, new_user, "alice", "a\u0007", hasher=hasher, scram_iterations=ITERATIONS)
        self.assertEqual(str(e), "password refused: it contains a control character")


# -- the checker ---------------------------------------------------------------


class SpyHasher(PasswordHasher):
    """Records every verify/hash call and whether it ran inside the runner."""

    def __init__(self, time_cost: int = 1) -> None:
        super().__init__(time_cost=time_cost, memory_cost=8, parallelism=1, insecurely_weak=True)
        self.calls: list[tuple[str, str | None, str, bool]] = []
        self.in_runner = threading.local()

    def verify(self, hash: str, password: str) -> bool:
        self.calls.append(("verify", hash, password, getattr(self.in_runner, "flag", False)))
        return super().verify(hash, password)

    def hash(self, password: str) -> str:
        self.calls.append(("hash", None, password, getattr(self.in_runner, "flag", False)))
        return super().hash(password)


def flagging_runner(hasher: SpyHasher, calls: list[Callable[..., Any]]) -> Any:
    """A synchronous runner that marks what runs inside it."""

    def run(f: Callable[..., T], /, *args: Any) -> defer.Deferred[T]:
        calls.append(f)
        hasher.in_runner.flag = True
        try:
            return defer.maybeDeferred(f, *args)
        finally:
            hasher.in_runner.flag = False

    return run


class PasswordCheckerTests(SynchronousTestCase):
    """L{PasswordChecker}: one generic refusal, equal work for unknown users, rehashing."""

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.hasher = SpyHasher()
        self.run_calls: list[Callable[..., Any]] = []
        self.checker = PasswordChecker(self.store, self.hasher, flagging_runner(self.hasher, self.run_calls))
        self.alice = new_user("alice", "s3cret", roles=["admin"], hasher=fast_hasher(), scram_iterations=ITERATIONS)
        self.store.users["alice"] = self.alice

    def check(self, username: bytes | str, password: bytes | str) -> defer.Deferred[Any]:
        return self.checker.requestAvatarId(UsernamePassword(username, password))  # type: ignore[arg-type]

    def assertRefused(self, d: defer.Deferred[Any], reason: str) -> LoginRefused:
        failure = self.failureResultOf(d, LoginRefused)
        e = failure.value
        assert isinstance(e, LoginRefused)
        self.assertIsInstance(e, UnauthorizedLogin)
        self.assertEqual(str(e), GENERIC_REFUSAL)
        self.assertEqual(e.reason, reason)
        return e

    def test_interfaces(self) -> None:
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))
        self.assertEqual(self.checker.credentialInterfaces, (IUsernamePassword,))
        offered = offered_mechanisms(Portal(IdentityRealm(self.store), [self.checker]), False, ChannelBindings())
        self.assertEqual(offered, {"PLAIN": PLAIN})

    def test_success(self) -> None:
        """Bytes (as Twisted and PLAIN give them) or str; the avatar id is the user name."""
        self.assertEqual(self.successResultOf(self.check(b"alice", b"s3cret")), "alice")
        self.assertEqual(self.successResultOf(self.check("alice", "s3cret")), "alice")

    def test_verifiedInRunner(self) -> None:
        """The hasher is only ever called through the runner."""
        self.successResultOf(self.check(b"alice", b"s3cret"))
        self.failureResultOf(self.check(b"alice", b"wrong"), LoginRefused)
        self.failureResultOf(self.check(b"nobody", b"wrong"), LoginRefused)
        self.assertTrue(self.hasher.calls)
        self.assertEqual([c for c in self.hasher.calls if not c[3]], [])
        self.assertEqual(self.run_calls, [self.hasher.verify] * 3)

    def test_wrongPassword(self) -> None:
        self.assertRefused(self.check(b"alice", b"wrong"), "wrong password for 'alice'")
        self.assertEqual(self.hasher.calls, [("verify", self.alice.password_hash, "wrong", True)])

    def test_unknownUser(self) -> None:
        """An unknown user costs a verification against the dummy hash, then is refused."""
        self.assertRefused(self.check(b"mallory", b"s3cret"), "no user 'mallory'")
        self.assertEqual(self.hasher.calls, [("verify", self.hasher.dummy_hash, "s3cret", True)])

    def test_noPassword(self) -> None:
        """A user without a password (e.g. API keys only) costs the same and is refused."""
        self.store.users["bot"] = User("bot", roles=("svc",))
        self.assertRefused(self.check(b"bot", b"anything"), "user 'bot' has no password")
        self.assertEqual(self.hasher.calls, [("verify", self.hasher.dummy_hash, "anything", True)])

    def test_disabled(self) -> None:
        """A disabled user is refused, even with the right password, after the same work."""
        self.store.users["alice"] = attrs.evolve(self.alice, disabled=True)
        self.assertRefused(self.check(b"alice", b"s3cret"), "user 'alice' is disabled")
        self.assertRefused(self.check(b"alice", b"wrong"), "wrong password for 'alice'")
        self.assertEqual([c[0] for c in self.hasher.calls], ["verify", "verify"])

    def test_emptyUserName(self) -> None:
        self.assertRefused(self.check(b"", b"s3cret"), "empty user name")
        self.assertEqual(self.hasher.calls, [])

    def test_emptyPassword(self) -> None:
        self.assertRefused(self.check(b"alice", b""), "empty password for 'alice'")
        self.assertEqual(self.hasher.calls, [])

    def test_badUserName(self) -> None:
        self.assertRefused(self.check(b"al\x00ice", b"s3cret"), "user name refused: it contains a control character")
        self.assertRefused(self.check(b"\xffalice", b"s3cret"), "user name is not valid UTF-8")
        self.assertEqual(self.hasher.calls, [])

    def test_badPassword(self) -> None:
        """A password SASLprep refuses is refused without naming it."""
        e = self.assertRefused(
            self.check(b"alice", b"s3\x07cret"), "password refused: it contains a control character (user 'alice')"
        )
        self.assertNotIn("cret", e.reason)
        self.assertRefused(self.check(b"alice", b"\xff"), "password is not valid UTF-8")

    def test_normalized(self) -> None:
        """Passwords are compared after SASLprep; user names after NFC."""
        self.store.users["Zo\u00eb"] = new_user("Zo\u00eb", "I\u00adX", hasher=fast_hasher(), scram_iterations=ITERATIONS)
        self.assertEqual(self.successResultOf(self.check("Zoe\u0308".encode(), "\u2168".encode())), "Zo\u00eb")

    def test_corruptStoredHash(self) -> None:
        self.store.users["alice"] = attrs.evolve(self.alice, password_hash="garbage")
        self.assertRefused(self.check(b"alice", b"s3cret"), "the stored password hash of 'alice' is not an argon2 hash")

    def test_rehash(self) -> None:
        """A hash made with older parameters is replaced after a successful login."""
        checker = PasswordChecker(self.store, fast_hasher(time_cost=2), synchronous_runner)
        self.assertEqual(self.successResultOf(checker.requestAvatarId(UsernamePassword(b"alice", b"s3cret"))), "alice")
        stored = self.store.users["alice"]
        assert stored.password_hash is not None
        self.assertNotEqual(stored.password_hash, self.alice.password_hash)
        self.assertIn("$m=8,t=2,p=1$", stored.password_hash)
        self.assertTrue(checker.hasher.verify(stored.password_hash, "s3cret"))
        self.assertEqual(attrs.evolve(stored, password_hash=self.alice.password_hash), self.alice)

    def test_noRehashWhenCurrent(self) -> None:
        self.successResultOf(self.check(b"alice", b"s3cret"))
        self.assertIs(self.store.users["alice"], self.alice)
        self.assertEqual([c[0] for c in self.hasher.calls], ["verify"])

    def test_noRehashOnFailure(self) -> None:
        checker = PasswordChecker(self.store, fast_hasher(time_cost=2), synchronous_runner)
        self.failureResultOf(checker.requestAvatarId(UsernamePassword(b"alice", b"wrong")), LoginRefused)
        self.assertIs(self.store.users["alice"], self.alice)

    def test_rehashKeepsNewerPassword(self) -> None:
        """A password changed while the rehash was computed is not overwritten."""
        hasher = fast_hasher(time_cost=2)
        changed = attrs.evolve(self.alice, password_hash=hasher.hash("new password"))

        def runner(f: Callable[..., T], /, *args: Any) -> defer.Deferred[T]:
            if f == hasher.hash:
                self.store.users["alice"] = changed
            return defer.maybeDeferred(f, *args)

        checker = PasswordChecker(self.store, hasher, runner)
        self.successResultOf(checker.requestAvatarId(UsernamePassword(b"alice", b"s3cret")))
        self.assertIs(self.store.users["alice"], changed)

    def test_plainEndToEnd(self) -> None:
        """PLAIN's credentials are what the checker checks."""
        step = self.successResultOf(PLAIN(ChannelBindings(), "peer").step(b"\x00alice\x00s3cret"))
        assert isinstance(step, Complete)
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(step.credentials)), "alice")


class PlainTests(SynchronousTestCase):
    """The PLAIN mechanism (RFC 4616)."""

    def assertCredentials(self, step: object, username: bytes, password: bytes) -> None:
        assert isinstance(step, Complete), step
        self.assertTrue(IUsernamePassword.providedBy(step.credentials))
        self.assertEqual((step.credentials.username, step.credentials.password), (username, password))
        self.assertIsNone(step.success_data)

    def test_factory(self) -> None:
        self.assertTrue(verifyObject(IMechanismFactory, PLAIN))
        self.assertEqual((PLAIN.name, PLAIN.second_factor_allowed), ("PLAIN", True))
        mechanism = PLAIN(ChannelBindings(), "192.0.2.1:1234")
        self.assertTrue(verifyObject(IServerMechanism, mechanism))
        self.assertIsNot(mechanism, PLAIN(ChannelBindings(), "192.0.2.1:1234"))

    def test_initialResponse(self) -> None:
        step = self.successResultOf(PlainMechanism().step(b"\x00alice\x00s3cret"))
        self.assertCredentials(step, b"alice", b"s3cret")

    def test_sameAuthzid(self) -> None:
        step = self.successResultOf(PlainMechanism().step(b"alice\x00alice\x00s3cret"))
        self.assertCredentials(step, b"alice", b"s3cret")

    def test_utf8(self) -> None:
        step = self.successResultOf(PlainMechanism().step("\x00Zo\u00eb\x00p\u00e4ss".encode()))
        self.assertCredentials(step, "Zo\u00eb".encode(), "p\u00e4ss".encode())

    def test_challengeFirst(self) -> None:
        """Without an initial response: an empty challenge, then the message."""
        mechanism = PlainMechanism()
        self.assertEqual(self.successResultOf(mechanism.step(None)), Challenge(b""))
        self.assertCredentials(self.successResultOf(mechanism.step(b"\x00alice\x00s3cret")), b"alice", b"s3cret")

    def assertMalformed(self, d: defer.Deferred[Any], message: str) -> None:
        e = self.failureResultOf(d, MechanismError).value
        self.assertEqual(str(e), message)
        self.assertNotIn("s3cret", str(e))

    def test_noResponseToChallenge(self) -> None:
        mechanism = PlainMechanism()
        mechanism.step(None)
        self.assertMalformed(mechanism.step(None), "PLAIN expected a response to its empty challenge")

    def test_stepAfterComplete(self) -> None:
        mechanism = PlainMechanism()
        mechanism.step(b"\x00alice\x00s3cret")
        self.assertMalformed(mechanism.step(b"\x00alice\x00s3cret"), "PLAIN exchange is already complete")

    def test_stepAfterError(self) -> None:
        mechanism = PlainMechanism()
        self.failureResultOf(mechanism.step(b"garbage"), MechanismError)
        self.assertMalformed(mechanism.step(b"\x00alice\x00s3cret"), "PLAIN exchange is already complete")

    def test_malformed(self) -> None:
        separators = "PLAIN message must be authzid NUL authcid NUL password; it has {} NUL separators, not 2"
        cases = {
            b"alice s3cret": separators.format(0),
            b"alice\x00s3cret": separators.format(1),
            b"\x00alice\x00s3cret\x00": separators.format(3),
            b"\x00al\xffice\x00s3cret": "PLAIN message is not valid UTF-8",
            b"\xff\x00alice\x00s3cret": "PLAIN message is not valid UTF-8",
            b"\x00alice\x00s3cret\xff": "PLAIN message is not valid UTF-8",
            b"\x00\x00s3cret": "PLAIN message has an empty authentication identity",
            b"\x00alice\x00": "PLAIN message has an empty password",
            b"bob\x00alice\x00s3cret": "PLAIN authorization identity differs from the authentication identity (not supported)",
            b"\x00alice\x00" + b"s3cret" * 700: "PLAIN message is longer than 4096 bytes",
        }
        for message, error in cases.items():
            self.assertMalformed(PlainMechanism().step(message), error)
            self.assertRaises(MechanismError, parse_plain, message)

    def test_authzidNormalized(self) -> None:
        """An authzid that is the authcid in another Unicode normal form is the same identity."""
        step = self.successResultOf(PlainMechanism().step("Zoe\u0308\x00Zo\u00eb\x00pw".encode()))
        self.assertCredentials(step, "Zo\u00eb".encode(), b"pw")
