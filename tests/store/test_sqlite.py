"""
Tests of what only the SQLite store promises: its file (mode 0600,
persistence, schema version and migrations, refusing corrupt, foreign, newer
and exposed files), WAL mode and its application id, pruning revoked token
ids by its clock, atomic counters under concurrency, and running its SQL off
the reactor thread (the runners and their sizes).  The contract every store
meets, this one included, is the conformance suite (tests/store).
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

import securenet.store._sqlite
from securenet._threads import thread_runner
from securenet.store._errors import (
    DatabaseFileError,
    InsecureDatabaseFile,
    NoSuchUser,
    StoreError,
    UnsupportedSchema,
)
from securenet.store._migrations import MIGRATIONS, SCHEMA_VERSION
from securenet.store._records import APIKey, ScramKeys, User
from securenet.store._sqlite import APPLICATION_ID, SQLiteStore

T = TypeVar("T")

UTC = datetime.UTC
CREATED = datetime.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def full_user(name: str = "alice") -> User:
    """A user with every field set."""
    return User(
        name=name,
        password_hash="$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        scram=ScramKeys(salt=b"\x00salt\xff", iterations=4096, stored_key=b"s" * 32, server_key=b"k" * 32),
        roles=("admin", "ops"),
        attributes={"team": "blue", "level": 3, "tags": ["a", "b"], "nested": {"x": None, "ok": True}},
        totp_secret="JBSWY3DPEHPK3PXP",
        totp_last_step=57_000_000,
        disabled=True,
        created=CREATED,
    )


def api_key(key_id: str = "k1", user: str = "alice", **kw: Any) -> APIKey:
    values: dict[str, Any] = dict(
        key_id=key_id,
        user=user,
        secret_hash=b"\x01" * 32,
        scopes=("read", "write"),
        created=CREATED,
        expires=CREATED + datetime.timedelta(days=30),
        revoked=False,
    )
    values.update(kw)
    return APIKey(**values)


# -- SQLite only -------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class SQLiteFileTests(SynchronousTestCase):
    """The database file: created safely, versioned, and refused when it cannot be trusted."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.path = self.dir / "sub" / "creds.db"

    def open(self, **kw: Any) -> SQLiteStore:
        store = SQLiteStore.open(self.path, **kw)
        self.addCleanup(store.close)
        return store

    def refused(self, kind: type[DatabaseFileError], problem: str) -> DatabaseFileError:
        """Opening fails with C{kind}: one line naming the file, and the file is left as it was."""
        before = self.path.read_bytes() if self.path.is_file() else None
        e: DatabaseFileError = self.assertRaises(kind, SQLiteStore.open, self.path)
        self.assertEqual(type(e), kind)
        self.assertIsInstance(e, StoreError)
        self.assertEqual(str(e), f"{self.path}: {problem}")
        self.assertEqual(e.path, self.path)
        if before is not None:
            self.assertEqual(self.path.read_bytes(), before)
        return e

    def test_created0600(self) -> None:
        """Directories are made as needed; the file and WAL/shm files are 0600."""
        store = self.open()
        self.successResultOf(store.add_user(User("alice")))
        self.assertEqual(mode(self.path), 0o600)
        for suffix in ("-wal", "-shm"):
            sidecar = Path(str(self.path) + suffix)
            self.assertTrue(sidecar.exists(), sidecar)
            self.assertEqual(mode(sidecar), 0o600, sidecar)

    def test_createdUnderPermissiveUmask(self) -> None:
        old = os.umask(0)
        try:
            self.open()
        finally:
            os.umask(old)
        self.assertEqual(mode(self.path), 0o600)

    def test_wal(self) -> None:
        self.open()
        with sqlite3.connect(self.path) as c:
            self.assertEqual(c.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_reopenPersists(self) -> None:
        store = SQLiteStore.open(self.path)
        self.successResultOf(store.add_user(full_user()))
        self.successResultOf(store.add_api_key(api_key()))
        self.successResultOf(store.record_failure("user:alice", 5.0))
        self.successResultOf(store.revoke_token("t1", datetime.datetime.now(UTC) + datetime.timedelta(hours=1)))
        store.close()
        again = self.open()
        self.assertEqual(self.successResultOf(again.get_user("alice")), full_user())
        self.assertEqual(self.successResultOf(again.list_api_keys()), [api_key()])
        self.assertEqual(self.successResultOf(again.get_failures("user:alice")), (1, 5.0))
        self.assertTrue(self.successResultOf(again.is_token_revoked("t1")))

    def test_secretPersists(self) -> None:
        """A named secret survives closing and reopening the database."""
        store = SQLiteStore.open(self.path)
        secret = self.successResultOf(store.secret("scram-fake-salt"))
        store.close()
        self.assertEqual(self.successResultOf(self.open().secret("scram-fake-salt")), secret)

    def test_schemaVersionRecorded(self) -> None:
        store = self.open()
        self.assertEqual(store.schema_version, SCHEMA_VERSION)
        with sqlite3.connect(self.path) as c:
            self.assertEqual(c.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
            self.assertEqual(c.execute("PRAGMA application_id").fetchone()[0], APPLICATION_ID)
            tables = {row[0] for row in c.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        self.assertEqual(
            tables, {"users", "api_keys", "revoked_tokens", "failures", "secrets", "refresh_families", "refresh_tokens"}
        )

    def test_migrations(self) -> None:
        """A database of an older schema is brought up to date in order, keeping its data."""
        store = SQLiteStore.open(self.path)
        self.successResultOf(store.add_user(User("alice")))
        store.close()
        extra = [
            ("CREATE TABLE extra (x INTEGER)", "INSERT INTO extra VALUES (1)"),
            ("INSERT INTO extra SELECT x + 1 FROM extra",),
        ]
        self.patch(securenet.store._sqlite, "MIGRATIONS", (*MIGRATIONS, *extra))
        store = self.open()
        self.assertEqual(store.schema_version, SCHEMA_VERSION + 2)
        self.assertEqual(self.successResultOf(store.list_users()), [User("alice")])
        with sqlite3.connect(self.path) as c:
            self.assertEqual(sorted(c.execute("SELECT x FROM extra")), [(1,), (2,)])

    def test_newerSchemaRefused(self) -> None:
        SQLiteStore.open(self.path).close()
        with sqlite3.connect(self.path) as c:
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        c.close()
        e = self.refused(
            UnsupportedSchema,
            f"credential database schema version {SCHEMA_VERSION + 1} is newer than this securenet "
            f"supports ({SCHEMA_VERSION}); upgrade securenet",
        )
        assert isinstance(e, UnsupportedSchema)
        self.assertEqual((e.found, e.supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION))

    def test_garbageRefused(self) -> None:
        self.path.parent.mkdir(parents=True)
        self.path.write_bytes(os.urandom(3000))
        self.path.chmod(0o600)
        self.refused(DatabaseFileError, "not an SQLite database (corrupt or wrong file)")

    def test_garbageAfterHeaderRefused(self) -> None:
        self.path.parent.mkdir(parents=True)
        self.path.write_bytes(b"SQLite format 3\x00" + b"\xab" * 3000)
        self.path.chmod(0o600)
        self.refused(DatabaseFileError, "not a usable SQLite database (file is not a database)")

    def test_corruptPageRefused(self) -> None:
        """A damaged page of a real database is found by the check at open."""
        store = SQLiteStore.open(self.path)
        for i in range(300):
            self.successResultOf(store.add_user(User(f"user{i:03}", password_hash="x" * 100)))
        store.close()
        data = bytearray(self.path.read_bytes())
        data[4096 * 2 : 4096 * 3] = b"\xab" * 4096
        self.path.write_bytes(bytes(data))
        before = self.path.read_bytes()
        e = self.assertRaises(DatabaseFileError, SQLiteStore.open, self.path)
        self.assertTrue(str(e).startswith(f"{self.path}: credential database is corrupt (quick_check: "), str(e))
        self.assertNotIn("\n", str(e))
        self.assertEqual(self.path.read_bytes(), before)

    def test_foreignSQLiteRefused(self) -> None:
        self.path.parent.mkdir(parents=True)
        with sqlite3.connect(self.path) as c:
            c.execute("CREATE TABLE songs (title TEXT)")
        c.close()
        self.path.chmod(0o600)
        self.refused(DatabaseFileError, "an SQLite database, but not a securenet credential database")

    def test_otherApplicationIdRefused(self) -> None:
        self.path.parent.mkdir(parents=True)
        with sqlite3.connect(self.path) as c:
            c.execute("PRAGMA application_id = 1234")
        c.close()
        self.path.chmod(0o600)
        self.refused(DatabaseFileError, "an SQLite database, but not a securenet credential database")

    def test_exposedFileRefused(self) -> None:
        """A database group or others can access is refused, like a private key."""
        SQLiteStore.open(self.path).close()
        for bad in (0o640, 0o604, 0o660):
            self.path.chmod(bad)
            e = self.refused(
                InsecureDatabaseFile,
                f"credential database has mode {bad:04o}; it must not be accessible by group or others (chmod 600 {self.path})",
            )
            assert isinstance(e, InsecureDatabaseFile)
            self.assertEqual(e.mode, bad)

    def test_emptyFileBecomesDatabase(self) -> None:
        """An empty 0600 file (e.g. made with install -m 600) is a new database."""
        self.path.parent.mkdir(parents=True)
        self.path.touch(mode=0o600)
        self.assertEqual(self.open().schema_version, SCHEMA_VERSION)

    def test_directoryRefused(self) -> None:
        self.path.mkdir(parents=True)
        self.refused(DatabaseFileError, "credential database path is not a regular file")

    def test_cannotCreate(self) -> None:
        self.path.parent.parent.mkdir(parents=True)
        self.path.parent.write_bytes(b"a file, not a directory")
        self.refused(DatabaseFileError, "cannot open the credential database (Not a directory)")

    def test_closed(self) -> None:
        store = SQLiteStore.open(self.path)
        store.close()
        store.close()
        e = self.failureResultOf(store.get_user("alice"), StoreError).value
        self.assertEqual(str(e), f"{self.path}: the credential database is closed")

    def test_attributesMustBeJSON(self) -> None:
        store = self.open()
        bad = User("alice", attributes={"when": datetime.date(2025, 1, 1)})
        e = self.failureResultOf(store.add_user(bad), StoreError).value
        self.assertEqual(
            str(e), "attributes of user 'alice' cannot be stored as JSON: Object of type date is not JSON serializable"
        )
        self.assertEqual(self.successResultOf(store.list_users()), [])

    def test_revokedTokensPruned(self) -> None:
        """Revocations are forgotten a day after their token expired, at the next revocation."""
        now = [1_000_000.0]
        store = self.open(clock=lambda: now[0])
        at = lambda seconds: datetime.datetime.fromtimestamp(seconds, UTC)  # noqa: E731
        self.successResultOf(store.revoke_token("long-expired", at(now[0] - 2 * 86400)))
        self.successResultOf(store.revoke_token("recently-expired", at(now[0] - 3600)))
        self.successResultOf(store.revoke_token("valid", at(now[0] + 7200)))
        self.assertFalse(self.successResultOf(store.is_token_revoked("long-expired")))
        self.assertTrue(self.successResultOf(store.is_token_revoked("recently-expired")))
        now[0] += 86400 + 3601
        self.successResultOf(store.revoke_token("another", at(now[0] + 60)))
        self.assertFalse(self.successResultOf(store.is_token_revoked("recently-expired")))
        self.assertTrue(self.successResultOf(store.is_token_revoked("valid")))
        self.assertTrue(self.successResultOf(store.is_token_revoked("another")))


class SQLiteConcurrencyTests(SynchronousTestCase):
    """Counters and TOTP steps stay exact when threads and stores race on one file."""

    THREADS = 6
    CALLS = 40

    def setUp(self) -> None:
        self.path = Path(self.mktemp()) / "creds.db"

    def stores(self, count: int) -> list[SQLiteStore]:
        stores = [SQLiteStore.open(self.path) for _ in range(count)]
        for store in stores:
            self.addCleanup(store.close)
        return stores

    def hammer(self, stores: list[SQLiteStore], work: Callable[[SQLiteStore], defer.Deferred[T]]) -> list[T]:
        """Run C{work} THREADS x CALLS times, thread i on store i mod len(stores); every result."""
        results: list[T] = []
        errors: list[BaseException | None] = []
        lock = threading.Lock()
        start = threading.Barrier(self.THREADS)

        def worker(store: SQLiteStore) -> None:
            start.wait()
            for _ in range(self.CALLS):
                got: list[Any] = []
                work(store).addBoth(got.append)
                with lock:
                    if isinstance(got[0], Failure):
                        errors.append(got[0].value)
                    else:
                        results.append(got[0])

        threads = [threading.Thread(target=worker, args=(stores[i % len(stores)],)) for i in range(self.THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        return results

    def test_recordFailureOneStore(self) -> None:
        """Many threads, one store: every failure counted, each count returned once."""
        (store,) = self.stores(1)
        counts = self.hammer([store], lambda s: s.record_failure("user:alice", 1.0))
        total = self.THREADS * self.CALLS
        self.assertEqual(sorted(counts), list(range(1, total + 1)))
        self.assertEqual(self.successResultOf(store.get_failures("user:alice")), (total, 1.0))

    def test_recordFailureTwoStores(self) -> None:
        """Two stores (two connections) on one file: the same."""
        stores = self.stores(2)
        counts = self.hammer(stores, lambda s: s.record_failure("user:alice", 2.0))
        total = self.THREADS * self.CALLS
        self.assertEqual(sorted(counts), list(range(1, total + 1)))
        for store in stores:
            self.assertEqual(self.successResultOf(store.get_failures("user:alice")), (total, 2.0))

    def test_markTotpStepOnce(self) -> None:
        """Racing logins with the same code: exactly one is accepted."""
        stores = self.stores(2)
        self.successResultOf(stores[0].add_user(User("alice", totp_secret="JBSWY3DPEHPK3PXP")))
        accepted = self.hammer(stores, lambda s: s.mark_totp_step("alice", 1234))
        self.assertEqual(accepted.count(True), 1)
        self.assertEqual(len(accepted), self.THREADS * self.CALLS)


class GuardedConnection:
    """A connection that fails any use from the thread that opened the store."""

    def __init__(self, connection: sqlite3.Connection, forbidden: int) -> None:
        self._connection = connection
        self._forbidden = forbidden

    def __getattr__(self, name: str) -> Any:
        if threading.get_ident() == self._forbidden:
            raise AssertionError(f"SQLite used on the forbidden thread ({name})")
        return getattr(self._connection, name)


def other_thread_runner(f: Callable[..., T], /, *args: Any) -> defer.Deferred[T]:
    """Run C{f} to completion on a new thread; the Deferred has fired on return."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(defer.succeed(f(*args)))
        except BaseException:
            out.append(defer.fail())

    t = threading.Thread(target=target)
    t.start()
    t.join()
    return out[0]  # type: ignore[no-any-return]


class SQLiteRunnerTests(SynchronousTestCase):
    """Every store method runs its SQL through the runner, none on the caller's thread."""

    def test_everyMethodThroughRunner(self) -> None:
        store = SQLiteStore.open(Path(self.mktemp()) / "creds.db", runner=other_thread_runner)
        self.addCleanup(store.close)
        real = store._connection
        assert real is not None
        store._connection = GuardedConnection(real, threading.get_ident())  # type: ignore[assignment]
        self.addCleanup(setattr, store, "_connection", real)
        later = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
        ok = self.successResultOf
        ok(store.add_user(User("alice")))
        ok(store.update_user(User("alice", roles=("x",))))
        self.assertEqual(ok(store.get_user("alice")), User("alice", roles=("x",)))
        self.assertEqual(len(ok(store.list_users())), 1)
        self.assertTrue(ok(store.mark_totp_step("alice", 1)))
        ok(store.add_api_key(api_key()))
        self.assertIsNotNone(ok(store.get_api_key("k1")))
        self.assertEqual(len(ok(store.list_api_keys())), 1)
        ok(store.revoke_api_key("k1"))
        ok(store.revoke_token("t", later))
        self.assertTrue(ok(store.is_token_revoked("t")))
        self.assertEqual(ok(store.record_failure("k", 1.0)), 1)
        self.assertEqual(ok(store.get_failures("k")), (1, 1.0))
        ok(store.reset_failures("k"))
        ok(store.delete_user("alice"))
        self.failureResultOf(store.delete_user("alice"), NoSuchUser)
        # The guard works: used here, it fails.
        self.assertRaises(AssertionError, lambda: store._connection.execute)  # type: ignore[union-attr]


class ThreadRunnerTests(TestCase):
    """L{thread_runner}: one dedicated thread, with the real reactor."""

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.runner = thread_runner(reactor)
        self.addCleanup(self.runner.stop)

    async def test_oneDedicatedThread(self) -> None:
        main = threading.get_ident()
        idents = await defer.gatherResults([self.runner(threading.get_ident) for _ in range(5)])
        self.assertNotIn(main, idents)
        self.assertEqual(len(set(idents)), 1)
        self.assertEqual(self.runner.pool.max, 1)

    async def test_errors(self) -> None:
        def boom() -> None:
            raise StoreError("boom")

        with self.assertRaises(StoreError):
            await self.runner(boom)

    async def test_store(self) -> None:
        """A store on the thread runner answers with Deferreds that fire later."""
        store = SQLiteStore.open(Path(self.mktemp()) / "creds.db", runner=self.runner)
        self.addCleanup(store.close)
        real = store._connection
        assert real is not None
        store._connection = GuardedConnection(real, threading.get_ident())  # type: ignore[assignment]
        self.addCleanup(setattr, store, "_connection", real)
        d = store.add_user(full_user())
        self.assertNoResult(d)
        await d
        self.assertEqual(await store.get_user("alice"), full_user())
        self.assertEqual(await store.record_failure("user:alice", 1.0), 1)

    def test_stopIdempotent(self) -> None:
        """Stopping twice is harmless, and a stopped runner is not restarted with the reactor."""
        self.runner.stop()
        self.runner.stop()
        self.assertTrue(self.runner.pool.joined)
        self.runner._start()
        self.assertFalse(self.runner.pool.started)


class ThreadRunnerSizeTests(SynchronousTestCase):
    """ThreadRunner's pool size, and the password-hashing pool of --auth sqlite."""

    def test_threads(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from securenet._threads import ThreadRunner

        runner = ThreadRunner(MemoryReactorClock(), threads=3, name="t")
        self.addCleanup(runner.stop)
        self.assertEqual((runner.pool.min, runner.pool.max, runner.pool.name), (1, 3, "t"))
        with self.assertRaises(ValueError):
            ThreadRunner(MemoryReactorClock(), threads=0)

    def test_hashingPoolLeavesACoreToTheReactor(self) -> None:
        """The hashing pool has nproc - 1 threads (at least one), not the reactor's shared ten."""
        from twisted.internet.testing import MemoryReactorClock

        from securenet import _threads

        for cpus, expected in ((1, 1), (2, 1), (8, 7), (None, 1)):
            self.patch(os, "cpu_count", lambda cpus=cpus: cpus)
            runner = _threads.hashing_runner(MemoryReactorClock())
            self.addCleanup(runner.stop)
            self.assertEqual((runner.pool.max, runner.pool.name), (expected, "securenet-hashing"), cpus)
