"""
L{open_database}: one name for a credential database -- a path or C{sqlite:PATH}
(SQLite), a C{postgresql://} URL (PostgreSQL, on the test server).
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from securenet.store import PostgresStore, SQLiteStore, StoreError, database_exists, open_database, parse_database
from tests.support import postgres


class ParseTests(SynchronousTestCase):
    def test_paths(self) -> None:
        self.assertEqual(parse_database("var/securenet.db"), Path("var/securenet.db"))
        self.assertEqual(parse_database("sqlite:var/securenet.db"), Path("var/securenet.db"))
        self.assertEqual(parse_database(Path("x.db")), Path("x.db"))

    def test_urls(self) -> None:
        for url in ("postgresql://u@db.example/creds", "postgres://u@db.example:5433/creds?sslmode=verify-full"):
            self.assertEqual(parse_database(url), url)

    def test_passwordRefused(self) -> None:
        for url in ("postgresql://u:pw-in-url@h/db", "postgresql://u@h/db?password=pw-in-url"):
            with self.assertRaises(StoreError) as e:
                parse_database(url)
            self.assertNotIn("pw-in-url", str(e.exception))
            self.assertIn("put the password in PGPASSFILE or ~/.pgpass", str(e.exception))

    def test_exists(self) -> None:
        path = Path(self.mktemp())
        self.assertFalse(database_exists(path))
        path.write_bytes(b"")
        self.assertTrue(database_exists(path))
        self.assertTrue(database_exists("postgresql://u@h/db"))  # the server says, when connecting


class OpenTests(SynchronousTestCase):
    def test_sqlite(self) -> None:
        path = Path(self.mktemp())
        for name in (str(path), f"sqlite:{path}"):
            store = open_database(name)
            self.addCleanup(store.close)
            self.assertIsInstance(store, SQLiteStore)
            self.assertEqual(store.path, path)

    def test_postgres(self) -> None:
        url = postgres.server().database(self)
        store = open_database(url)
        self.addCleanup(store.close)
        self.assertIsInstance(store, PostgresStore)
        self.assertEqual(store.path, url)
