"""
L{PostgresStore} on a real PostgreSQL server (L{tests.support.postgres}):
the backend conformance suite, its migrations, two stores as two hosts
racing, the URL that never carries a password, and the outage (fail
closed, then service resumes by itself).
"""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from twisted.internet import defer
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securenet.interfaces import ICredentialStore
from securenet.store import (
    POSTGRES_MIGRATIONS,
    POSTGRES_SCHEMA_VERSION,
    DatabaseFileError,
    PostgresStore,
    StoreError,
    StoreUnavailable,
    UnsupportedSchema,
    User,
)
from securenet.store._postgres import PASSWORD_ADVICE, check_url, is_postgres_url
from tests.store.test_conformance import PersistentStoreConformanceMixin, refresh_token
from tests.support import child_env, postgres
from tests.support.e2e import free_port
from tests.support.postgres import ROLE

T = TypeVar("T")


class PostgresCase(SynchronousTestCase):
    """A fresh database per test, on the run's server."""

    _url: str | None = None

    @property
    def server(self) -> postgres.PostgresServer:
        return postgres.server()

    @property
    def url(self) -> str:
        """The test's database (made on first use)."""
        if self._url is None:
            self._url = self.server.database(self)
        return self._url

    def open_url(self, url: str, **options: Any) -> PostgresStore:
        store = PostgresStore.open(url, **options)
        self.addCleanup(store.close)
        return store

    def sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        """Run C{statement} in the test's database as the superuser; its rows."""
        name = self.url.rsplit("/", 1)[1]
        with self.server.admin(name) as c:
            cursor = c.execute(statement, params or None)
            return list(cursor.fetchall()) if cursor.description else []


class PostgresStoreConformance(PersistentStoreConformanceMixin, PostgresCase):
    """L{PostgresStore}, on the calling thread (no runner)."""

    def make_store(self) -> ICredentialStore:
        return self.open_url(self.url, pool_size=8)

    def pg(self, store: ICredentialStore) -> PostgresStore:
        assert isinstance(store, PostgresStore), store
        return store

    def close(self, store: ICredentialStore) -> None:
        self.pg(store).close()

    def reopen(self, store: ICredentialStore) -> ICredentialStore:
        self.close(store)
        return self.make_store()

    def open_another(self, store: ICredentialStore) -> ICredentialStore:
        return self.make_store()


class MigrationTests(PostgresCase):
    def test_fresh(self) -> None:
        """An empty database gets every table and the current schema version, in its one row."""
        store = self.open_url(self.url)
        self.assertEqual(store.schema_version, POSTGRES_SCHEMA_VERSION)
        self.assertEqual(self.sql("SELECT version FROM schema_version"), [(POSTGRES_SCHEMA_VERSION,)])
        tables = {row[0] for row in self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        self.assertEqual(
            tables,
            {
                "schema_version",
                "users",
                "api_keys",
                "revoked_tokens",
                "failures",
                "secrets",
                "refresh_families",
                "refresh_tokens",
            },
        )

    def test_reopenKeepsData(self) -> None:
        store = self.open_url(self.url)
        self.successResultOf(store.add_user(User("alice")))
        store.close()
        again = self.open_url(self.url)
        self.assertEqual(again.schema_version, POSTGRES_SCHEMA_VERSION)
        self.assertEqual(self.successResultOf(again.list_users()), [User("alice")])

    def test_laterMigrationsApplied(self) -> None:
        """A database of an older schema is brought up to date in order, keeping its data."""
        store = self.open_url(self.url)
        self.successResultOf(store.add_user(User("alice")))
        store.close()
        extra = [
            ("CREATE TABLE extra (x INTEGER)", "INSERT INTO extra VALUES (1)"),
            ("INSERT INTO extra SELECT x + 1 FROM extra",),
        ]
        self.patch(postgres_module(), "POSTGRES_MIGRATIONS", (*POSTGRES_MIGRATIONS, *extra))
        store = self.open_url(self.url)
        self.assertEqual(store.schema_version, POSTGRES_SCHEMA_VERSION + 2)
        self.assertEqual(sorted(self.sql("SELECT x FROM extra")), [(1,), (2,)])
        self.assertEqual(self.successResultOf(store.list_users()), [User("alice")])

    def test_newerSchemaRefused(self) -> None:
        """A schema from a newer securenet is refused, and left as it was."""
        self.open_url(self.url).close()
        self.sql("UPDATE schema_version SET version = %s", POSTGRES_SCHEMA_VERSION + 1)
        e = self.assertRaises(UnsupportedSchema, PostgresStore.open, self.url)
        self.assertEqual((e.found, e.supported), (POSTGRES_SCHEMA_VERSION + 1, POSTGRES_SCHEMA_VERSION))
        self.assertEqual(
            str(e),
            f"postgresql://{ROLE}@127.0.0.1:{self.server.port}/{self.url.rsplit('/', 1)[1]}: credential database schema "
            f"version {POSTGRES_SCHEMA_VERSION + 1} is newer than this securenet supports ({POSTGRES_SCHEMA_VERSION}); "
            "upgrade securenet",
        )
        self.assertEqual(self.sql("SELECT version FROM schema_version"), [(POSTGRES_SCHEMA_VERSION + 1,)])

    def test_otherApplicationRefused(self) -> None:
        """A database with tables but no securenet schema is refused, and left alone."""
        self.sql("CREATE TABLE theirs (x INTEGER)")
        e = self.assertRaises(DatabaseFileError, PostgresStore.open, self.url)
        self.assertIs(type(e), DatabaseFileError)
        self.assertEqual(e.problem, "a PostgreSQL database, but not a securenet credential database")
        self.assertEqual(self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"), [("theirs",)])

    def test_hostsStartingTogetherMigrateOnce(self) -> None:
        """Stores opened at once on an empty database (hosts starting together): one migrates, all open."""
        opened: list[PostgresStore] = []
        errors: list[BaseException] = []
        start = threading.Barrier(4, timeout=30)

        def open_one() -> None:
            try:
                start.wait()
                opened.append(PostgresStore.open(self.url))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for store in opened:
            self.addCleanup(store.close)
        self.assertEqual(errors, [])
        self.assertEqual(len(opened), 4)
        self.assertEqual(self.sql("SELECT version FROM schema_version"), [(POSTGRES_SCHEMA_VERSION,)])


def postgres_module() -> Any:
    import securenet.store._postgres

    return securenet.store._postgres


class HostsRaceTests(PostgresCase):
    """Two stores, each with its own pool, as two hosts of one service."""

    def race(self, work: Any, calls: int = 40) -> list[Any]:
        hosts = [self.open_url(self.url, pool_size=4), self.open_url(self.url, pool_size=4)]
        results: list[Any] = []
        lock = threading.Lock()
        start = threading.Barrier(8, timeout=30)

        def worker(number: int) -> None:
            host = hosts[number % 2]
            start.wait()
            for _ in range(calls):
                outcome: list[Any] = []
                work(host).addBoth(outcome.append)
                with lock:
                    results.append(outcome[0] if outcome else "no answer")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(len(results), 8 * calls)
        return results

    def test_throttleCounters(self) -> None:
        """Parallel failures on two hosts: each count handed out once, the total exact."""
        setup = self.open_url(self.url)
        counts = self.race(lambda s: s.record_failure("addr:192.0.2.1", 3.0))
        self.assertEqual(sorted(counts), list(range(1, 8 * 40 + 1)))
        self.assertEqual(self.successResultOf(setup.get_failures("addr:192.0.2.1")), (8 * 40, 3.0))

    def test_totpStep(self) -> None:
        """One code tried on two hosts at once: accepted exactly once."""
        setup = self.open_url(self.url)
        self.successResultOf(setup.add_user(User("alice", totp_secret="JBSWY3DPEHPK3PXP")))
        accepted = self.race(lambda s: s.mark_totp_step("alice", 4242), calls=10)
        self.assertEqual(accepted.count(True), 1)
        self.assertEqual(accepted.count(False), 8 * 10 - 1)
        user = self.successResultOf(setup.get_user("alice"))
        assert user is not None
        self.assertEqual(user.totp_last_step, 4242)

    def test_refreshConsume(self) -> None:
        """One refresh token presented on two hosts at once: consumed exactly once, every other try a reuse."""
        setup = self.open_url(self.url)
        self.successResultOf(setup.refresh_tokens.add(refresh_token("t1")))
        consumed = self.race(lambda s: s.refresh_tokens.consume("t1", 9.0), calls=10)
        self.assertEqual(consumed.count(True), 1)
        self.assertEqual(consumed.count(False), 8 * 10 - 1)
        self.assertEqual(self.successResultOf(setup.refresh_tokens.get("t1")), refresh_token("t1", used_at=9.0))


class URLTests(PostgresCase):
    def test_passwordInURLRefused(self) -> None:
        """A URL with a password is refused before any connection, and the message does not repeat it."""
        url = self.url.replace(f"{ROLE}@", f"{ROLE}:hunter2-secret@")
        e = self.assertRaises(StoreError, PostgresStore.open, url)
        self.assertIs(type(e), StoreError)
        self.assertEqual(
            str(e),
            "the PostgreSQL URL carries a password: put the password in PGPASSFILE or ~/.pgpass (mode 0600), never in the URL",
        )
        self.assertNotIn("hunter2", str(e))
        self.assertIn(PASSWORD_ADVICE, str(e))
        # Nothing was made in the database.
        self.assertEqual(self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"), [])

    def test_passwordAsParameterRefused(self) -> None:
        e = self.assertRaises(StoreError, check_url, self.url + "?password=hunter2")
        self.assertNotIn("hunter2", str(e))
        self.assertIn(PASSWORD_ADVICE, str(e))

    def test_malformedURLRefused(self) -> None:
        e = self.assertRaises(StoreError, check_url, "postgresql://[bad")
        self.assertEqual(str(e), "cannot parse the PostgreSQL URL (postgresql://USER@HOST:PORT/DBNAME)")

    def test_isPostgresURL(self) -> None:
        self.assertTrue(is_postgres_url("postgresql://u@h/db"))
        self.assertTrue(is_postgres_url("postgres://u@h/db"))
        self.assertFalse(is_postgres_url("var/securenet.db"))
        self.assertFalse(is_postgres_url("sqlite:var/securenet.db"))

    def test_passwordFromPassfile(self) -> None:
        """The password comes from PGPASSFILE (mode 0600): without it the login is refused, naming the database."""
        passfile = os.environ["PGPASSFILE"]
        url = self.url
        self.assertEqual(stat.S_IMODE(os.stat(passfile).st_mode), 0o600)
        os.environ["PGPASSFILE"] = os.devnull
        self.addCleanup(os.environ.__setitem__, "PGPASSFILE", passfile)
        e = self.assertRaises(StoreUnavailable, PostgresStore.open, url, timeout=1)
        self.assertTrue(str(e).startswith(f"postgresql://{ROLE}@127.0.0.1:{self.server.port}/"), str(e))
        self.assertIn("password", str(e))

    def test_wrongDatabaseNamed(self) -> None:
        """A database that does not exist: refused at open, naming it."""
        url = self.url + "_missing"
        e = self.assertRaises(StoreUnavailable, PostgresStore.open, url, timeout=1)
        self.assertIn(url.rsplit("/", 1)[1], str(e))
        self.assertIn("does not exist", str(e))

    def test_nothingSecretLogged(self) -> None:
        """Neither the password nor the passfile's contents reach a log, even when connecting fails."""
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        root = logging.getLogger()
        root.addHandler(handler)
        old_level = root.level
        root.setLevel(logging.DEBUG)
        self.addCleanup(root.setLevel, old_level)
        self.addCleanup(root.removeHandler, handler)
        store = self.open_url(self.url)
        self.successResultOf(store.add_user(User("alice")))
        self.assertRaises(StoreUnavailable, PostgresStore.open, self.url + "_missing", timeout=1)
        with open(os.environ["PGPASSFILE"]) as f:
            passwords = [line.rsplit(":", 1)[1].strip() for line in f if line.strip()]
        logged = stream.getvalue()
        for password in passwords:
            self.assertNotIn(password, logged)


class OutageTests(PostgresCase):
    """The server stops and comes back: calls fail with StoreUnavailable, then work again by themselves."""

    def test_unavailableThenBack(self) -> None:
        """
        While the server is down every call fails with StoreUnavailable,
        logged once (one line, naming the database); when it is back the
        same store works again by itself, and says so once.
        """
        store = self.open_url(self.url, timeout=1)
        self.successResultOf(store.add_user(User("alice")))
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.server.stop_server()
        self.addCleanup(self.server.start_server)
        for call in (store.get_user("alice"), store.record_failure("k", 1.0), store.mark_totp_step("alice", 1)):
            failure = self.failureResultOf(call, StoreUnavailable)
            self.assertEqual(str(failure.value), f"{store.path}: the credential database cannot be reached")
        mine = [e for e in events if e.get("log_namespace") == "securenet.store"]
        self.assertEqual(len(mine), 1, [formatEvent(e) for e in mine])
        self.assertEqual(mine[0]["log_level"], LogLevel.error)
        line = formatEvent(mine[0])
        self.assertTrue(line.startswith(f"{store.path}: the credential database cannot be reached ("), line)
        self.assertTrue(line.endswith("); logins are refused until it is back"), line)
        self.assertNotIn("\n", line)
        self.server.start_server()
        self.assertEqual(self.successResultOf(retry(lambda: store.get_user("alice"))), User("alice"))
        # Nothing was counted while the server was down; the end of the outage is logged once.
        self.assertEqual(self.successResultOf(store.get_failures("k")), (0, 0.0))
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "securenet.store"]
        self.assertEqual(lines[1:], [f"{store.path}: the credential database is reachable again"])

    def test_closedPortRefused(self) -> None:
        """A URL pointing at a closed port: refused at open as unavailable, naming the database and why."""
        url = f"postgresql://{ROLE}@127.0.0.1:{free_port()}/nothing"
        e = self.assertRaises(StoreUnavailable, PostgresStore.open, url, timeout=1)
        self.assertTrue(str(e).startswith(f"{url}: cannot connect to the credential database ("), str(e))
        self.assertIn("Connection refused", str(e))


def retry(call: Callable[[], defer.Deferred[T]], attempts: int = 30) -> defer.Deferred[T]:
    """
    C{call()} again while it fails with StoreUnavailable (the pool
    reconnecting; each failed call waits the store's timeout), at most
    C{attempts} times; the last outcome.
    """
    for _ in range(attempts - 1):
        outcome: list[T | Failure] = []
        call().addBoth(outcome.append)
        if outcome and not (isinstance(outcome[0], Failure) and outcome[0].check(StoreUnavailable)):
            return defer.fail(outcome[0]) if isinstance(outcome[0], Failure) else defer.succeed(outcome[0])
    return call()


class HarnessTests(SynchronousTestCase):
    """The test server itself (tests/support/postgres.py)."""

    def test_unprivilegedAndPrivate(self) -> None:
        """It runs as an unprivileged user, from a directory only that user can enter, on loopback."""
        server = postgres.server()
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        self.assertNotEqual(os.stat(f"/proc/{pid}").st_uid, 0)
        self.assertEqual(stat.S_IMODE(os.stat(server.base).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(server.passfile).st_mode), 0o600)
        self.assertNotIn(":@", server.url("x"))
        self.assertEqual(server.url("x"), f"postgresql://{ROLE}@127.0.0.1:{server.port}/x")

    def test_serverNeverOutlivesTheProcess(self) -> None:
        """A test process killed outright (SIGKILL: no atexit) takes its server and files with it."""
        child = subprocess.Popen(
            [sys.executable, "-c", "from tests.support import postgres; print(postgres.server().base, flush=True); input()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        assert child.stdout is not None
        base = Path(child.stdout.readline().decode().strip())
        self.assertTrue((base / "data" / "postmaster.pid").exists(), base)
        pid = int((base / "data" / "postmaster.pid").read_text().split()[0])
        child.kill()
        child.wait(30)
        for _ in range(600):  # the watchdog stops the server, then removes the directory
            if not base.exists():
                break
            threading.Event().wait(0.1)
        self.assertFalse(base.exists())
        self.assertFalse(running(pid))


def running(pid: int) -> bool:
    """Whether process C{pid} runs (a zombie waiting for a parent that does not reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
