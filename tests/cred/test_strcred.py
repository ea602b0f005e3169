"""
C{--auth db:PATH_OR_URL} (and C{sqlite:PATH}): which credential database
a checker opens, and the refusals, each one C{--auth} line.  The
PostgreSQL cases run against the test server (L{tests.support.postgres}).
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import securenet.cred._strcred
from securenet._threads import ThreadRunner, synchronous_runner
from securenet.cred._storechecker import StoreChecker
from securenet.cred._strcred import (
    CheckerArgumentError,
    DatabaseCheckerFactory,
    databaseCheckerFactory,
    parse_options,
    sqliteCheckerFactory,
)
from securenet.interfaces import ICredentialStore
from securenet.store import PostgresStore, SQLiteStore, User, open_database
from tests.support import postgres
from tests.support.e2e import free_port
from tests.support.postgres import ROLE


class DatabaseCheckerTests(SynchronousTestCase):
    def opened(self) -> list[tuple[str, str]]:
        """Replace open_store (whose runner needs a running reactor): record the calls, open on the calling thread."""
        calls: list[tuple[str, str]] = []

        def open_store(name: str, auth_type: str) -> ICredentialStore:
            calls.append((name, auth_type))
            store = open_database(name)
            self.addCleanup(store.close)
            return store

        self.patch(securenet.cred._strcred, "open_store", open_store)
        # Nor a hashing thread pool, which would start with the reactor and never stop.
        self.patch(securenet.cred._strcred, "hashing_runner", lambda reactor: synchronous_runner)
        return calls

    def refused(self, factory: DatabaseCheckerFactory, argstring: str) -> str:
        with self.assertRaises(CheckerArgumentError) as e:
            factory.generateChecker(argstring)
        return str(e.exception)

    def test_dbPath(self) -> None:
        """db:PATH is an SQLite file, as sqlite:PATH is."""
        path = Path(self.mktemp())
        SQLiteStore.open(path).close()
        calls = self.opened()
        checker = databaseCheckerFactory.generateChecker(f"{path},scramIterations=4096")
        self.assertIsInstance(checker, StoreChecker)
        self.assertIsInstance(checker.store, SQLiteStore)
        self.assertEqual(calls, [(str(path), "db")])

    def test_dbURL(self) -> None:
        """db:postgresql://... opens a PostgresStore; the URL's colons are not option separators."""
        url = postgres.server().database(self)
        calls = self.opened()
        for argstring in (url, f"{url},scramIterations=4096", f"db={url}", f"db={url}?connect_timeout=5,scramIterations=4096"):
            checker = databaseCheckerFactory.generateChecker(argstring)
            self.assertIsInstance(checker.store, PostgresStore)
        self.assertEqual([name for name, _ in calls], [url, url, url, f"{url}?connect_timeout=5"])

    def test_parseOptionsWithURL(self) -> None:
        self.assertEqual(
            parse_options("db=postgresql://u@h:5432/d,scope=x", {"db", "scope"}, "apikey"),
            {"db": "postgresql://u@h:5432/d", "scope": "x"},
        )
        self.assertEqual(parse_options("db=a.db:scope=x", {"db", "scope"}, "apikey"), {"db": "a.db", "scope": "x"})

    def test_passwordInURLRefused(self) -> None:
        """A password in the URL: one line saying where it goes instead, never the password; nothing opened."""
        calls = self.opened()
        line = self.refused(databaseCheckerFactory, f"postgresql://{ROLE}:s3cret-pw@127.0.0.1:{free_port()}/db")
        self.assertEqual(
            line,
            "--auth db: the PostgreSQL URL carries a password: "
            "put the password in PGPASSFILE or ~/.pgpass (mode 0600), never in the URL",
        )
        self.assertEqual(calls, [])

    def test_unreachableRefused(self) -> None:
        """A server that does not answer at start-up: one line naming the database and why."""
        url = f"postgresql://{ROLE}@127.0.0.1:{free_port()}/nothing"
        line = self.refused(databaseCheckerFactory, url)
        self.assertTrue(line.startswith(f"--auth db: {url}: cannot connect to the credential database ("), line)
        self.assertIn("Connection refused", line)

    def test_sqliteRefusesURL(self) -> None:
        calls = self.opened()
        line = self.refused(sqliteCheckerFactory, "postgresql://u@127.0.0.1/db")
        self.assertEqual(line, "--auth sqlite: a PostgreSQL URL is no SQLite file; use --auth db:postgresql://...")
        self.assertEqual(calls, [])

    def test_missing(self) -> None:
        self.assertEqual(
            self.refused(databaseCheckerFactory, ""),
            "--auth db: the credential database (db:PATH or db:postgresql://USER@HOST:PORT/DBNAME) is required",
        )
        self.assertEqual(
            self.refused(sqliteCheckerFactory, ""), "--auth sqlite: the credential database path (sqlite:PATH) is required"
        )
        path = Path(self.mktemp())
        self.assertEqual(
            self.refused(databaseCheckerFactory, str(path)),
            f"--auth db: {path}: no such credential database (create it with: securenet users add NAME --db {path})",
        )
        self.assertFalse(path.exists())

    def test_openStoreSelectsByName(self) -> None:
        """The server's open_store: a URL gets a PostgresStore on its own threads (one per pooled connection)."""
        url = postgres.server().database(self)
        store = securenet.cred._strcred.open_store(url, "db")
        assert isinstance(store, PostgresStore)
        runner = store._runner
        assert isinstance(runner, ThreadRunner)
        self.addCleanup(store.close)
        self.addCleanup(runner.stop)
        self.assertEqual(runner.pool.max, 4)
        self.assertEqual(runner.pool.name, "securenet-postgres")
        path = Path(self.mktemp())
        SQLiteStore.open(path).close()
        sqlite = securenet.cred._strcred.open_store(str(path), "db")
        assert isinstance(sqlite, SQLiteStore)
        self.addCleanup(sqlite.close)
        assert isinstance(sqlite._runner, ThreadRunner)
        self.addCleanup(sqlite._runner.stop)
        self.assertEqual(sqlite._runner.pool.max, 1)

    def test_startupSecretInPostgres(self) -> None:
        """The fake-salt secret is made at start-up in the database, so every host uses the same one."""
        url = postgres.server().database(self)
        self.opened()
        checker = databaseCheckerFactory.generateChecker(url)
        with PostgresStore.open(url) as store:
            secret = self.successResultOf(store.secret("scram-fake-salt"))
            self.successResultOf(store.add_user(User("alice")))
        self.assertEqual(checker.scram._secret, secret)
        self.assertEqual(os.environ.get("PGPASSFILE"), str(postgres.server().passfile))
