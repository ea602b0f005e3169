"""
Tests for C{securenet users ...}: each subcommand's output and effect on the
database, and for each bad input the exact one-line error, exit code 1, and
the database left as it was.

They run L{securenet.cli.main} in-process with cheap hashing injected
(L{securenet.cli._users.password_hasher} and C{scram_iterations} replaced);
a few run the installed console script, as a user would, and so pay for the
production hashing.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import argon2
import attrs
import pyotp
from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import securenet.cli._users
from securenet._threads import synchronous_runner
from securenet.cli import EXIT_BROKEN_PIPE, main
from securenet.cli._users import qr_text
from securenet.cred._identity import AuthenticationContext, IdentityRealm
from securenet.cred._login import LoginFailure, LoginFlow
from securenet.cred._passwords import DEFAULT_ARGON2, PasswordHasher
from securenet.cred._scram import DEFAULT_ITERATIONS, derive_scram_keys
from securenet.cred._storechecker import StoreChecker
from securenet.cred._throttle import Throttle
from securenet.store._postgres import PostgresStore
from securenet.store._records import APIKey, User
from securenet.store._sqlite import SQLiteStore
from securenet.testing import TEST_SCRAM_ITERATIONS, EventCapture, weak_hasher
from tests import support
from tests.support import postgres


@attrs.frozen
class Result:
    code: int
    out: str
    err: str


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*argv: str | Path, stdin: io.StringIO | None = None) -> Result:
    """Run C{securenet ARGV...} in-process with C{stdin}, capturing its output."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = stdin if stdin is not None else io.StringIO("")
    sys.stdout, sys.stderr = out, err
    try:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own errors
            code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return Result(code, out.getvalue(), err.getvalue())


def value(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    return out[0]


#: Any hasher verifies any argon2 hash; this one is cheap to build.
HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, insecurely_weak=True)


class UsersTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(securenet.cli._users, "password_hasher", weak_hasher)
        self.patch(securenet.cli._users, "scram_iterations", TEST_SCRAM_ITERATIONS)
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.db = self.dir / "creds.db"
        self.prompts: list[str] = []
        self.answers: list[str] = []
        self.patch(securenet.cli._users, "getpass", self._getpass)

    def _getpass(self, prompt: str = "Password: ") -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0)

    def password_file(self, content: str | bytes, name: str = "pw") -> Path:
        path = self.dir / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def users(self, *argv: str | Path, stdin: io.StringIO | None = None) -> Result:
        return run("users", *argv, "--db", self.db, stdin=stdin)

    def add(self, name: str, password: str = "s3cret", *roles: str) -> None:
        role_args = [a for r in roles for a in ("--role", r)]
        self.assertOK(self.users("add", name, *role_args, "--password-file", self.password_file(password, f"pw-{name}")))

    def state(self) -> tuple[list[User], list[APIKey]] | None:
        """Everything in the database (None if there is none): compared to prove nothing changed."""
        if not self.db.exists():
            return None
        with SQLiteStore.open(self.db) as store:
            return value(store.list_users()), value(store.list_api_keys())

    def user(self, name: str) -> User:
        with SQLiteStore.open(self.db) as store:
            user = value(store.get_user(name))
        assert isinstance(user, User), user
        return user

    def assertOK(self, result: Result) -> Result:
        self.assertEqual((result.code, result.err), (0, ""), result)
        return result

    def assertFails(self, result: Result, message: str) -> None:
        """Exit 1, nothing on stdout, and exactly C{securenet: error: MESSAGE} on stderr."""
        self.assertEqual(result, Result(1, "", f"securenet: error: {message}\n"))

    def assertRefused(self, argv: tuple[str | Path, ...], message: str, stdin: io.StringIO | None = None) -> None:
        """The command fails with C{message} and the database is as it was."""
        before = self.state()
        self.assertFails(self.users(*argv, stdin=stdin), message)
        self.assertEqual(self.state(), before)

    def assertPassword(self, name: str, password: str) -> None:
        """C{name}'s argon2 hash and SCRAM keys are both of C{password}."""
        user = self.user(name)
        assert user.password_hash is not None and user.scram is not None
        self.assertTrue(HASHER.verify(user.password_hash, password))
        self.assertEqual(user.scram, derive_scram_keys(password, salt=user.scram.salt, iterations=TEST_SCRAM_ITERATIONS))


class AddTests(UsersTestCase):
    """C{securenet users add}."""

    def test_add(self) -> None:
        result = self.users("add", "alice", "--role", "admin", "--role", "ops", "--password-file", self.password_file("s3cret"))
        self.assertEqual(result, Result(0, "added user alice (roles: admin, ops)\n", ""))
        user = self.user("alice")
        self.assertEqual((user.roles, user.disabled, user.totp_secret), (("admin", "ops"), False, None))
        self.assertPassword("alice", "s3cret")
        assert user.password_hash is not None
        self.assertIn("$argon2id$v=19$m=8,t=1,p=1$", user.password_hash)
        self.assertEqual(os.stat(self.db).st_mode & 0o777, 0o600)

    def test_noRoles(self) -> None:
        result = self.users("add", "bob", "--password-file", self.password_file("pw"))
        self.assertEqual(result.out, "added user bob (roles: (none))\n")

    def test_trailingNewlineStripped(self) -> None:
        """One trailing newline (LF or CRLF) is not part of the password."""
        self.add("alice", "s3cret\n")
        self.assertPassword("alice", "s3cret")
        self.add("bob", "pass word\r\n")
        self.assertPassword("bob", "pass word")

    def test_onlyOneNewlineStripped(self) -> None:
        self.assertRefused(
            ("add", "alice", "--password-file", self.password_file("s3cret\n\n")),
            "password refused: it contains a control character",
        )

    def test_unicodePassword(self) -> None:
        """Stored in its SASLprep form: the equivalent spelling logs in too."""
        self.add("alice", "I\u00adX")
        self.assertPassword("alice", "\u2168")

    def test_existing(self) -> None:
        self.add("alice", "first")
        self.assertRefused(
            ("add", "alice", "--password-file", self.password_file("second")),
            f"user 'alice' already exists in {self.db}",
        )
        self.assertPassword("alice", "first")

    def test_existingNotPrompted(self) -> None:
        """At a terminal, an existing name is refused before the password is asked for."""
        self.add("alice")
        self.assertRefused(("add", "alice"), f"user 'alice' already exists in {self.db}", stdin=FakeTTY())
        self.assertEqual(self.prompts, [])

    def test_emptyPasswordFile(self) -> None:
        for content in ("", "\n", "\r\n"):
            path = self.password_file(content)
            self.assertRefused(("add", "alice", "--password-file", path), f"{path}: password file is empty")
        self.assertIsNone(self.state())

    def test_missingPasswordFile(self) -> None:
        path = self.dir / "nope"
        self.assertRefused(("add", "alice", "--password-file", path), f"{path}: password file does not exist")
        self.assertIsNone(self.state())

    def test_passwordFileNotUTF8(self) -> None:
        path = self.password_file(b"\xffpw")
        self.assertRefused(("add", "alice", "--password-file", path), f"{path}: password file is not UTF-8 text")

    def test_passwordFileDirectory(self) -> None:
        self.assertRefused(("add", "alice", "--password-file", self.dir), f"{self.dir}: password file is a directory")

    def test_badName(self) -> None:
        pw = self.password_file("pw")
        self.assertRefused(
            ("add", "al ice", "--password-file", pw), "user name 'al ice' contains whitespace or a control character"
        )
        self.assertRefused(("add", "", "--password-file", pw), "user name must not be empty")
        self.assertRefused(
            ("add", "a" * 65, "--password-file", pw), f"user name {'a' * 65!r} is 65 characters; at most 64 are allowed"
        )
        self.assertIsNone(self.state())

    def test_badRole(self) -> None:
        self.add("bob")
        self.assertRefused(
            ("add", "alice", "--role", "a,b", "--password-file", self.password_file("pw")),
            "role name 'a,b' contains whitespace, a control character or a comma",
        )

    def test_terminal(self) -> None:
        """At a terminal: asked twice."""
        self.answers = ["s3cret", "s3cret"]
        self.assertOK(self.users("add", "alice", stdin=FakeTTY()))
        self.assertEqual(self.prompts, ["new password for alice: ", "repeat it: "])
        self.assertPassword("alice", "s3cret")

    def test_terminalMismatch(self) -> None:
        self.add("bob")
        self.answers = ["s3cret", "s3cert"]
        self.assertRefused(("add", "alice"), "the two passwords differ; nothing changed", stdin=FakeTTY())

    def test_terminalEmpty(self) -> None:
        self.add("bob")
        self.answers = [""]
        self.assertRefused(("add", "alice"), "password must not be empty", stdin=FakeTTY())
        self.assertEqual(self.prompts, ["new password for alice: "])

    def test_terminalNewDatabase(self) -> None:
        """A refused password leaves no database behind."""
        self.answers = ["a", "b"]
        self.assertRefused(("add", "alice"), "the two passwords differ; nothing changed", stdin=FakeTTY())
        self.assertFalse(self.db.exists())

    def test_stdin(self) -> None:
        """Not a terminal: the first line of standard input."""
        self.assertOK(self.users("add", "alice", stdin=io.StringIO("s3cret\nignored\n")))
        self.assertPassword("alice", "s3cret")
        self.assertEqual(self.prompts, [])

    def test_stdinEmpty(self) -> None:
        self.assertRefused(
            ("add", "alice"),
            "no password: give --password-file FILE, type it at a terminal, or send it on standard input",
            stdin=io.StringIO(""),
        )
        self.assertRefused(("add", "alice"), "password must not be empty", stdin=io.StringIO("\n"))

    def test_noPasswordArgument(self) -> None:
        """Secrets are never command-line arguments."""
        for option in ("--password", "--pass", "--p"):
            result = self.users("add", "alice", option, "s3cret")
            self.assertEqual((result.code, result.out), (2, ""), option)
            self.assertIn("unrecognized arguments", result.err)
            self.assertIsNone(self.state())

    def test_defaultDatabase(self) -> None:
        """Without --db: var/securenet.db, directories created."""
        password_file = self.password_file("pw").absolute()
        cwd = os.getcwd()
        os.chdir(self.dir)
        self.addCleanup(os.chdir, cwd)
        self.assertOK(run("users", "add", "alice", "--password-file", password_file))
        self.assertEqual(os.stat("var/securenet.db").st_mode & 0o777, 0o600)
        self.assertIn("alice", run("users", "list").out)

    def test_insecureDatabase(self) -> None:
        self.add("bob")
        self.db.chmod(0o644)
        before = self.db.read_bytes()
        self.assertFails(
            self.users("add", "alice", "--password-file", self.password_file("pw")),
            f"{self.db}: credential database has mode 0644; it must not be accessible by group or others (chmod 600 {self.db})",
        )
        self.assertEqual(self.db.read_bytes(), before)
        self.assertEqual(self.users("list").err.splitlines()[0][:40], f"securenet: error: {self.db}"[:40])
        self.db.chmod(0o600)
        self.assertEqual([u.name for u in self.state()[0]], ["bob"])  # type: ignore[index]

    def test_corruptDatabase(self) -> None:
        self.db.write_bytes(b"this is not a database" * 100)
        self.db.chmod(0o600)
        before = self.db.read_bytes()
        self.assertFails(
            self.users("add", "alice", "--password-file", self.password_file("pw")),
            f"{self.db}: not an SQLite database (corrupt or wrong file)",
        )
        self.assertEqual(self.db.read_bytes(), before)


class PasswdTests(UsersTestCase):
    """C{securenet users passwd}."""

    def test_passwd(self) -> None:
        """New hash and SCRAM keys; everything else kept."""
        self.add("alice", "old", "admin")
        with SQLiteStore.open(self.db) as store:
            value(store.update_user(attrs.evolve(self.user("alice"), totp_secret="JBSWY3DPEHPK3PXP", totp_last_step=7)))
        before = self.user("alice")
        result = self.users("passwd", "alice", "--password-file", self.password_file("new"))
        self.assertEqual(result, Result(0, "changed the password of alice\n", ""))
        self.assertPassword("alice", "new")
        after = self.user("alice")
        assert after.password_hash is not None
        self.assertFalse(HASHER.verify(after.password_hash, "old"))
        self.assertEqual(attrs.evolve(after, password_hash=before.password_hash, scram=before.scram), before)

    def test_unknownUser(self) -> None:
        self.add("alice")
        self.assertRefused(("passwd", "bob", "--password-file", self.password_file("pw")), f"no user 'bob' in {self.db}")

    def test_refusedPassword(self) -> None:
        self.add("alice", "old")
        path = self.password_file("")
        self.assertRefused(("passwd", "alice", "--password-file", path), f"{path}: password file is empty")
        self.answers = ["a", "b"]
        self.assertRefused(("passwd", "alice"), "the two passwords differ; nothing changed", stdin=FakeTTY())
        self.assertPassword("alice", "old")

    def test_noDatabase(self) -> None:
        self.assertRefused(
            ("passwd", "alice", "--password-file", self.password_file("pw")),
            f"{self.db}: no credential database here (create it with 'securenet users add NAME --db {self.db}')",
        )
        self.assertFalse(self.db.exists())


class DeleteTests(UsersTestCase):
    """C{securenet users del}."""

    def test_delete(self) -> None:
        self.add("alice")
        self.add("bob")
        self.assertEqual(self.users("del", "alice"), Result(0, "deleted user alice\n", ""))
        state = self.state()
        assert state is not None
        self.assertEqual([u.name for u in state[0]], ["bob"])

    def test_deleteWithKeys(self) -> None:
        self.add("alice")
        self.add("bob")
        with SQLiteStore.open(self.db) as store:
            for key_id, user in [("k1", "alice"), ("k2", "alice"), ("k3", "bob")]:
                value(store.add_api_key(APIKey(key_id, user, b"h" * 32)))
        self.assertEqual(self.users("del", "alice"), Result(0, "deleted user alice and 2 API keys\n", ""))
        state = self.state()
        assert state is not None
        self.assertEqual([k.key_id for k in state[1]], ["k3"])

    def test_unknownUser(self) -> None:
        self.add("alice")
        self.assertRefused(("del", "bob"), f"no user 'bob' in {self.db}")


class ListTests(UsersTestCase):
    """C{securenet users list}."""

    def test_list(self) -> None:
        """Name, roles, disabled, TOTP enrolled; never a hash or secret."""
        self.add("bob")
        self.add("alice", "pw", "admin", "ops")
        self.add("Zo\u00eb", "pw", "ops")
        self.assertOK(self.users("disable", "bob"))
        self.assertOK(self.users("totp-enroll", "alice"))
        result = self.assertOK(self.users("list"))
        self.assertEqual(
            result.out,
            "NAME   ROLES      DISABLED  TOTP\n"
            "Zo\u00eb    ops        no        no\n"
            "alice  admin,ops  no        yes\n"
            "bob    -          yes       no\n",
        )

    def test_empty(self) -> None:
        with SQLiteStore.open(self.db):
            pass
        self.assertEqual(self.users("list"), Result(0, f"no users in {self.db}\n", ""))

    def test_noDatabase(self) -> None:
        self.assertRefused(
            ("list",),
            f"{self.db}: no credential database here (create it with 'securenet users add NAME --db {self.db}')",
        )
        self.assertFalse(self.db.exists())


class RolesTests(UsersTestCase):
    """C{securenet users roles}."""

    def test_setAndClear(self) -> None:
        self.add("alice", "pw", "admin")
        self.assertEqual(self.users("roles", "alice", "ops", "audit", "ops"), Result(0, "roles of alice: ops, audit\n", ""))
        self.assertEqual(self.user("alice").roles, ("ops", "audit"))
        self.assertEqual(self.users("roles", "alice"), Result(0, "roles of alice: (none)\n", ""))
        self.assertEqual(self.user("alice").roles, ())
        self.assertPassword("alice", "pw")

    def test_badRole(self) -> None:
        self.add("alice", "pw", "admin")
        self.assertRefused(
            ("roles", "alice", "ok", "not ok"), "role name 'not ok' contains whitespace, a control character or a comma"
        )

    def test_unknownUser(self) -> None:
        self.add("alice")
        self.assertRefused(("roles", "bob", "admin"), f"no user 'bob' in {self.db}")


class DisableTests(UsersTestCase):
    """C{securenet users disable} / C{enable}."""

    def test_disableEnable(self) -> None:
        self.add("alice")
        self.assertEqual(self.users("disable", "alice"), Result(0, "disabled user alice\n", ""))
        self.assertTrue(self.user("alice").disabled)
        self.assertEqual(self.users("disable", "alice"), Result(0, "user alice was already disabled\n", ""))
        self.assertEqual(self.users("enable", "alice"), Result(0, "enabled user alice\n", ""))
        self.assertFalse(self.user("alice").disabled)
        self.assertEqual(self.users("enable", "alice"), Result(0, "user alice was already enabled\n", ""))

    def test_unknownUser(self) -> None:
        self.add("alice")
        self.assertRefused(("disable", "bob"), f"no user 'bob' in {self.db}")
        self.assertRefused(("enable", "bob"), f"no user 'bob' in {self.db}")

    def test_nfcName(self) -> None:
        """Names given in another normal form find the user."""
        self.add("Zo\u00eb")
        self.assertOK(self.users("disable", "Zoe\u0308"))
        self.assertTrue(self.user("Zo\u00eb").disabled)


class TotpEnrollTests(UsersTestCase):
    """C{securenet users totp-enroll}."""

    def test_enroll(self) -> None:
        self.add("alice")
        result = self.assertOK(self.users("totp-enroll", "alice"))
        lines = result.out.splitlines(keepends=True)
        self.assertEqual(lines[0], "enrolled alice for TOTP; scan the QR code with an authenticator app, or give it this URI:\n")
        uri = lines[1].rstrip("\n")
        secret = self.user("alice").totp_secret
        assert secret is not None
        self.assertEqual(len(secret), 32)
        self.assertEqual(uri, pyotp.TOTP(secret).provisioning_uri(name="alice", issuer_name="securenet"))
        parsed = pyotp.parse_uri(uri)
        assert isinstance(parsed, pyotp.TOTP)
        self.assertEqual((parsed.secret, parsed.issuer, parsed.name), (secret, "securenet", "alice"))
        self.assertEqual("".join(lines[2:]), qr_text(uri))
        self.assertIn("\u2588", qr_text(uri))
        self.assertIsNone(self.user("alice").totp_last_step)

    def test_alreadyEnrolled(self) -> None:
        self.add("alice")
        self.assertOK(self.users("totp-enroll", "alice"))
        self.assertRefused(
            ("totp-enroll", "alice"),
            "user 'alice' is already enrolled for TOTP; use --force to replace the secret "
            "(their current authenticator stops working)",
        )

    def test_force(self) -> None:
        """A new secret, and the last used step forgotten."""
        self.add("alice")
        self.assertOK(self.users("totp-enroll", "alice"))
        first = self.user("alice")
        with SQLiteStore.open(self.db) as store:
            self.assertTrue(value(store.mark_totp_step("alice", 99)))
        self.assertOK(self.users("totp-enroll", "alice", "--force"))
        second = self.user("alice")
        self.assertNotEqual(second.totp_secret, first.totp_secret)
        self.assertIsNone(second.totp_last_step)
        self.assertEqual(attrs.evolve(second, totp_secret=first.totp_secret), first)

    def test_unknownUser(self) -> None:
        self.add("alice")
        self.assertRefused(("totp-enroll", "bob"), f"no user 'bob' in {self.db}")


class UnlockTests(UsersTestCase):
    """
    C{securenet users unlock NAME} and C{--address IP}: an account or an
    address locked out by failures in the database logs in again at once.
    """

    #: When the failures happened; the throttle's clock is a second later.
    NOW = 1_800_000_000.0

    def setUp(self) -> None:
        super().setUp()
        self.add("alice", "s3cret")
        self.events = EventCapture(self)

    def lock_out(self, key: str, count: int) -> None:
        with SQLiteStore.open(self.db) as store:
            for _ in range(count):
                value(store.record_failure(key, self.NOW))

    def failures(self, key: str) -> tuple[int, float]:
        with SQLiteStore.open(self.db) as store:
            failures: tuple[int, float] = value(store.get_failures(key))
        return failures

    def login(self, address: str) -> str | float:
        """A password login of alice from C{address}, as a server runs it: her name, or the seconds to wait."""
        clock = Clock()
        clock.advance(self.NOW + 1)
        with SQLiteStore.open(self.db) as store:
            checker = StoreChecker(
                store, clock, runner=synchronous_runner, hasher=weak_hasher(), scram_iterations=TEST_SCRAM_ITERATIONS
            )
            flow = LoginFlow(Portal(IdentityRealm(store), [checker]), Throttle(store, clock))

            async def attempt() -> str:
                admitted = await flow.admit("alice", address)
                identity = await flow.check(
                    UsernamePassword(b"alice", b"s3cret"), AuthenticationContext("PLAIN", address), "alice"
                )
                await flow.succeeded(admitted)
                return identity.avatar_id

            outcome = value(defer.Deferred.fromCoroutine(attempt()))
        if isinstance(outcome, Failure):
            outcome.trap(LoginFailure)
            return float(cast(LoginFailure, outcome.value).wait)
        assert isinstance(outcome, str)
        return outcome

    def test_unlockUser(self) -> None:
        """Twenty failures lock alice out (a throttled attempt is not counted); unlocked, she logs in."""
        self.lock_out("user:alice", 20)
        self.assertIsInstance(self.login("10.0.0.1"), float)
        result = self.users("unlock", "alice")
        self.assertEqual(
            result, Result(0, "unlocked user alice: cleared 20 recorded failures (the last at 2027-01-15T08:00:00Z)\n", "")
        )
        self.assertEqual(self.failures("user:alice"), (0, 0.0))
        self.assertEqual(self.login("10.0.0.1"), "alice")
        [event] = self.events.of("auth.unlock")
        self.assertEqual((event["key"], event["count"]), ("user:alice", 20))
        self.assertTrue(event["by"].endswith(" (securenet users unlock)"), event["by"])

    def test_unlockAddress(self) -> None:
        """An address locked out stays so when the user is unlocked; unlocking the address lets the login in."""
        self.lock_out("addr:127.0.0.1", 100)
        self.lock_out("user:alice", 20)
        self.assertOK(self.users("unlock", "alice"))
        self.assertIsInstance(self.login("127.0.0.1"), float)
        result = self.users("unlock", "--address", "127.0.0.1")
        self.assertEqual(
            result,
            Result(0, "unlocked address 127.0.0.1: cleared 100 recorded failures (the last at 2027-01-15T08:00:00Z)\n", ""),
        )
        self.assertEqual(self.failures("addr:127.0.0.1"), (0, 0.0))
        self.assertEqual(self.login("127.0.0.1"), "alice")
        self.assertEqual([e["key"] for e in self.events.of("auth.unlock")], ["user:alice", "addr:127.0.0.1"])

    def test_ipv6AddressNormalized(self) -> None:
        """The address is written as the server's keys write it (C{0:0::1} is C{::1})."""
        self.lock_out("addr:::1", 3)
        self.assertEqual(
            self.users("unlock", "--address", "0:0::1"),
            Result(0, "unlocked address ::1: cleared 3 recorded failures (the last at 2027-01-15T08:00:00Z)\n", ""),
        )

    def test_dualStackAddress(self) -> None:
        """On a dual-stack listener 127.0.0.1 is ::ffff:127.0.0.1: --address clears both spellings."""
        self.lock_out("addr:::ffff:127.0.0.1", 100)
        self.lock_out("addr:127.0.0.1", 2)
        self.assertEqual(
            self.users("unlock", "--address", "::ffff:127.0.0.1"),
            Result(0, "unlocked address 127.0.0.1: cleared 102 recorded failures (the last at 2027-01-15T08:00:00Z)\n", ""),
        )
        self.assertEqual((self.failures("addr:::ffff:127.0.0.1"), self.failures("addr:127.0.0.1")), ((0, 0.0), (0, 0.0)))

    def test_nothingToClear(self) -> None:
        """A known user without failures: said so, exit 0, nothing logged."""
        self.assertEqual(self.users("unlock", "alice"), Result(0, "user alice has no failures recorded; nothing to clear\n", ""))
        self.assertEqual(self.events.of("auth.unlock"), [])

    def test_unknownUser(self) -> None:
        self.lock_out("user:bob", 20)
        self.assertRefused(("unlock", "bob"), f"no user 'bob' in {self.db}")
        self.assertEqual(self.failures("user:bob")[0], 20)

    def test_unknownAddress(self) -> None:
        self.lock_out("addr:127.0.0.1", 100)
        self.assertRefused(
            ("unlock", "--address", "10.0.0.9"), f"no failures recorded for address 10.0.0.9 in {self.db}; nothing to clear"
        )
        self.assertEqual(self.failures("addr:127.0.0.1")[0], 100)
        self.assertEqual(self.events.of("auth.unlock"), [])

    def test_badUsage(self) -> None:
        self.assertRefused(
            ("unlock", "--address", "localhost"), "--address 'localhost' is not an IP address (e.g. 127.0.0.1 or ::1)"
        )
        self.assertRefused(("unlock",), "give a user NAME or --address IP (one of them)")
        self.assertRefused(("unlock", "alice", "--address", "127.0.0.1"), "give a user NAME or --address IP (one of them)")

    def test_noDatabase(self) -> None:
        missing = self.dir / "missing.db"
        result = run("users", "unlock", "alice", "--db", missing)
        self.assertEqual(
            result,
            Result(
                1,
                "",
                f"securenet: error: {missing}: no credential database here "
                f"(create it with 'securenet users add NAME --db {missing}')\n",
            ),
        )
        self.assertFalse(missing.exists())


class ConsoleScriptTests(SynchronousTestCase):
    """The installed C{securenet} script, password piped on standard input."""

    def test_addAndList(self) -> None:
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        db = directory / "creds.db"
        env = support.child_env()
        securenet = support.script("securenet")
        added = support.run([securenet, "users", "add", "alice", "--role", "admin", "--db", str(db)], input=b"s3cret\n", env=env)
        self.assertEqual((added.returncode, added.stdout, added.stderr), (0, b"added user alice (roles: admin)\n", b""))
        listed = support.run([securenet, "users", "list", "--db", str(db)], env=env)
        self.assertEqual(
            (listed.returncode, listed.stdout, listed.stderr),
            (0, b"NAME   ROLES  DISABLED  TOTP\nalice  admin  no        no\n", b""),
        )
        again = support.run([securenet, "users", "add", "alice", "--db", str(db)], input=b"x\n", env=env)
        self.assertEqual(
            (again.returncode, again.stdout, again.stderr),
            (1, b"", f"securenet: error: user 'alice' already exists in {db}\n".encode()),
        )


class BrokenPipeTests(SynchronousTestCase):
    """C{securenet users totp-enroll NAME | head}: when the reader is gone, the command ends quietly."""

    def test_readerGone(self) -> None:
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        db = directory / "creds.db"
        with SQLiteStore.open(db) as store:
            value(store.add_user(User(name="alice")))
        # A pipe whose reader has exited already, as head's has once it has its lines.
        reader, writer = os.pipe()
        os.close(reader)
        try:
            done = subprocess.run(
                [support.script("securenet"), "users", "totp-enroll", "alice", "--db", str(db)],
                stdout=writer,
                stderr=subprocess.PIPE,
                env=support.child_env(),
                timeout=60,
            )
        finally:
            os.close(writer)
        self.assertEqual((done.returncode, done.stderr), (EXIT_BROKEN_PIPE, b""))
        with SQLiteStore.open(db) as store:
            self.assertIsNotNone(value(store.get_user("alice")).totp_secret)


class ProductionHashingTests(SynchronousTestCase):
    """
    No environment variable weakens what the installed command writes: the
    test-only C{SECURENET_TEST_FAST_HASH=1} of earlier versions is ignored.
    """

    def assertProductionRecord(self, user: User, password: str) -> None:
        assert user.password_hash is not None and user.scram is not None
        parameters = argon2.extract_parameters(user.password_hash)
        self.assertEqual(parameters, DEFAULT_ARGON2)
        self.assertTrue(HASHER.verify(user.password_hash, password))
        self.assertEqual(user.scram.iterations, DEFAULT_ITERATIONS)
        self.assertEqual(user.scram, derive_scram_keys(password, salt=user.scram.salt, iterations=DEFAULT_ITERATIONS))

    def test_fastHashVariableIgnored(self) -> None:
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        db = directory / "creds.db"
        env = support.child_env(SECURENET_TEST_FAST_HASH="1")
        securenet = support.script("securenet")
        added = support.run([securenet, "users", "add", "alice", "--db", str(db)], input=b"s3cret\n", env=env)
        self.assertEqual((added.returncode, added.stderr), (0, b""))
        with SQLiteStore.open(db) as store:
            self.assertProductionRecord(value(store.get_user("alice")), "s3cret")
        changed = support.run([securenet, "users", "passwd", "alice", "--db", str(db)], input=b"n3w\n", env=env)
        self.assertEqual((changed.returncode, changed.stderr), (0, b""))
        with SQLiteStore.open(db) as store:
            self.assertProductionRecord(value(store.get_user("alice")), "n3w")


class PostgresUsersTests(UsersTestCase):
    """C{securenet users ... --db postgresql://...}: the same commands on a PostgreSQL database."""

    def setUp(self) -> None:
        super().setUp()
        self.url = postgres.server().database(self)

    def users(self, *argv: str | Path, stdin: io.StringIO | None = None) -> Result:
        return run("users", *argv, "--db", self.url, stdin=stdin)

    def store(self) -> PostgresStore:
        store = PostgresStore.open(self.url)
        self.addCleanup(store.close)
        return store

    def login(self, store: PostgresStore, password: bytes = b"s3cret") -> str | Failure:
        checker = StoreChecker(
            store, Clock(), runner=synchronous_runner, hasher=weak_hasher(), scram_iterations=TEST_SCRAM_ITERATIONS
        )
        flow = LoginFlow(Portal(IdentityRealm(store), [checker]), Throttle(store, Clock()))

        async def attempt() -> str:
            admitted = await flow.admit("alice", "10.0.0.1")
            identity = await flow.check(UsernamePassword(b"alice", password), AuthenticationContext("PLAIN", "10.0.0.1"), "alice")
            await flow.succeeded(admitted)
            return identity.avatar_id

        outcome: str | Failure = value(defer.Deferred.fromCoroutine(attempt()))
        return outcome

    def test_addListLogin(self) -> None:
        """Users added, listed and changed by the CLI in PostgreSQL log in through the portal."""
        self.add("alice", "s3cret", "ops")
        self.add("bob")
        self.assertOK(self.users("roles", "bob", "admin"))
        self.assertEqual(
            self.assertOK(self.users("list")).out,
            "NAME   ROLES  DISABLED  TOTP\nalice  ops    no        no\nbob    admin  no        no\n",
        )
        store = self.store()
        self.assertEqual(self.login(store), "alice")
        refused = self.login(store, b"wrong")
        assert isinstance(refused, Failure)
        refused.trap(LoginFailure)
        self.assertEqual(cast(LoginFailure, refused.value).kind, "refused")
        self.assertEqual(self.successResultOf(store.get_failures("user:alice"))[0], 1)
        self.assertOK(self.users("del", "bob"))
        self.assertEqual([u.name for u in self.successResultOf(store.list_users())], ["alice"])

    def test_addExistingRefused(self) -> None:
        self.add("alice")
        self.assertFails(
            self.users("add", "alice", "--password-file", self.password_file("other")),
            f"user 'alice' already exists in {self.store().path}",
        )

    def test_passwordInURLRefused(self) -> None:
        """A URL with a password is refused by argument parsing: exit 2, the password never echoed, nothing written."""
        url = self.url.replace("@", ":hunter2@", 1)
        result = run("users", "add", "alice", "--password-file", self.password_file("s3cret"), "--db", url)
        self.assertEqual((result.code, result.out), (2, ""))
        self.assertIn(
            "argument --db: the PostgreSQL URL carries a password: put the password in PGPASSFILE or ~/.pgpass", result.err
        )
        self.assertNotIn("hunter2", result.err)
        self.assertEqual(self.successResultOf(self.store().list_users()), [])

    def test_loginFailsClosedWhileDown(self) -> None:
        """
        With the server stopped, a login is refused as unavailable (cause
        db), nothing counted; when it is back the same store lets alice in.
        """
        self.add("alice")
        store = PostgresStore.open(self.url, timeout=1)
        self.addCleanup(store.close)
        server = postgres.server()
        server.stop_server()
        self.addCleanup(server.start_server)
        refused = self.login(store)
        assert isinstance(refused, Failure)
        refused.trap(LoginFailure)
        failure = cast(LoginFailure, refused.value)
        self.assertEqual((failure.kind, failure.cause), ("unavailable", "db"))
        self.assertEqual(failure.reason, f"{store.path}: the credential database cannot be reached")
        server.start_server()
        for _ in range(30):  # the pool reconnects by itself; each refused try waits the store's timeout
            counted = value(store.get_failures("user:alice"))
            if not isinstance(counted, Failure):
                break
        # Nothing was counted while the server was down.
        self.assertEqual(counted, (0, 0.0))
        self.assertEqual(self.successResultOf(store.get_failures("addr:10.0.0.1")), (0, 0.0))
        self.assertEqual(self.login(store), "alice")
