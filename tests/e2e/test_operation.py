"""
End to end, operating C{twistd securenet}: a port already in use, SIGHUP (in
the foreground and as a daemon, with a pidfile), a missing or read-only
credential database, Twisted's own password checkers (C{--auth memory},
C{unix}) over the stream and the HTTP API, and C{--help}.  Real C{twistd}
processes on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from securenet.store._records import User
from securenet.store._sqlite import SQLiteStore
from tests.e2e.test_service import dev_pki, server_listen
from tests.support import run, run_twistd_expecting_failure


class CredentialDatabaseTests(SynchronousTestCase):
    """--auth with a credential database that is missing or that the server cannot write: exit 1, one line, no file made."""

    def setUp(self) -> None:
        self.certs = dev_pki(Path(self.mktemp()).resolve())

    def test_missingDatabase(self) -> None:
        """A typo in --auth sqlite:PATH: refused with one line; no database appears (users add makes one)."""
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        db = work / "securnet.db"
        for auth, auth_type in ((f"sqlite:{db}", "sqlite"), (f"apikey:db={db}", "apikey"), (f"totp:db={db}", "totp")):
            try:
                result = run_twistd_expecting_failure(work, ["--listen", server_listen(self.certs), "--auth", auth], timeout=20)
            except subprocess.TimeoutExpired:
                self.fail(f"twistd started with --auth {auth}, a database that does not exist")
            self.assertEqual(result.returncode, 1)
            self.assertEqual(
                result.stderr.decode(),
                f"twistd securenet: error: --auth {auth_type}: {db}: no such credential database"
                f" (create it with: securenet users add NAME --db {db})\n",
            )
            self.assertEqual(result.stdout, b"")
            self.assertEqual(os.listdir(work), [])

    def readOnly(self, path: Path) -> None:
        """
        Make C{path} (the database, or its directory) read-only for the
        server: by its mode, for a user; for root, whom modes do not stop,
        with the immutable attribute (chattr +i), removed when the test ends.
        """
        if os.geteuid() != 0:
            path.chmod(0o500 if path.is_dir() else 0o400)
            self.addCleanup(path.chmod, 0o700 if path.is_dir() else 0o600)
            return
        made = run(["chattr", "+i", str(path)])
        if made.returncode != 0:
            raise SkipTest(f"cannot make {path} immutable, so read-only files cannot be tested as root: {made.stderr!r}")
        self.addCleanup(run, ["chattr", "-i", str(path)])

    def database(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        db = directory / "creds.db"
        with SQLiteStore.open(db) as store:
            store.add_user(User("alice"))
        return db

    def test_readOnlyFile(self) -> None:
        """A database the server cannot write: one line naming it (it was a StoreError, then an IndexError's traceback)."""
        work = Path(self.mktemp()).resolve()
        db = self.database(work)
        self.readOnly(db)
        result = run_twistd_expecting_failure(work, ["--listen", server_listen(self.certs), "--auth", f"sqlite:{db}"])
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(
            result.stderr.decode(),
            f"twistd securenet: error: --auth sqlite: {db}: the credential database cannot be written"
            " (attempt to write a readonly database); the server records failed logins and used TOTP codes in it\n",
        )
        self.assertEqual(result.stdout, b"")

    def test_readOnlyDirectory(self) -> None:
        """A database in a directory the server cannot write (it cannot make the files SQLite keeps beside it): one line naming it."""
        work = Path(self.mktemp()).resolve()
        db = self.database(work / "ro")
        self.readOnly(db.parent)
        result = run_twistd_expecting_failure(work, ["--listen", server_listen(self.certs), "--auth", f"sqlite:{db}"])
        self.assertEqual(result.returncode, 1, result)
        [line] = result.stderr.decode().splitlines()
        self.assertTrue(line.startswith(f"twistd securenet: error: --auth sqlite: {db}: not a usable SQLite database ("), line)
        self.assertEqual(result.stdout, b"")
