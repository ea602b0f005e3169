"""
End to end, a PostgreSQL credential database (L{tests.support.postgres}):
users added with the CLI (C{--db postgresql://...}), a real C{twistd
securenet --auth db:postgresql://...}, logins with the C{securenet connect}
client; the server stopped and started again under it (fail closed, then
service resumes by itself).  The password is only in the C{PGPASSFILE}
the harness made, never in a URL or on a command line.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from securenet.testing import TEST_SCRAM_ITERATIONS
from tests.e2e.test_auth import add_user, securenet
from tests.support import Twistd, postgres, run, script
from tests.support.e2e import dev_pki


class PostgresE2ETests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pg = postgres.server()
        self.url = self.pg.database(self)
        self.certs = dev_pki(Path(self.mktemp()).resolve())
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        (self.work / "alice.pw").write_text("correct horse\n")
        (self.work / "wrong.pw").write_text("incorrect\n")
        add_user("alice", "--db", self.url, "--role", "reader", "--password-file", str(self.work / "alice.pw"))
        listen = f"securenet:0:interface=127.0.0.1:certKey={self.certs / 'server.pem'}:privateKey={self.certs / 'server.key'}"
        self.server = Twistd(self.work, ["--listen", listen, "--auth", f"db:{self.url},scramIterations={TEST_SCRAM_ITERATIONS}"])
        self.addCleanup(self.server.stop)

    def connect(self, password: str = "alice.pw", mechanism: str = "PLAIN") -> tuple[int, bytes, str]:
        endpoint = f"securenet:host=localhost:port={self.server.port}:trustRoots={self.certs / 'ca.pem'}"
        result = run(
            [
                script("securenet"),
                "connect",
                "--linger",
                "0.5",
                "--mechanism",
                mechanism,
                "--user",
                "alice",
                "--password-file",
                str(self.work / password),
                endpoint,
            ],
            input=b"hello\n",
            timeout=60,
        )
        return result.returncode, result.stdout, result.stderr.decode()

    def test_cliThenLogin(self) -> None:
        """A user added by the CLI into PostgreSQL logs in (PLAIN and SCRAM-SHA-256-PLUS); a wrong password is refused."""
        listed = securenet("users", "list", "--db", self.url)
        self.assertIn("alice", listed)
        for mechanism in ("PLAIN", "SCRAM-SHA-256-PLUS"):
            code, out, err = self.connect(mechanism=mechanism)
            self.assertEqual((code, out), (0, b"hello\n"), err)
            self.assertIn("authenticated as alice", err)
        code, out, err = self.connect("wrong.pw")
        self.assertEqual((code, out), (1, b""))
        self.assertEqual(
            err.strip().splitlines()[-1], "securenet: error: authentication failed: AUTH-FAILED authentication failed"
        )
        # The failure was counted in PostgreSQL, where every host of the service sees it.
        name = self.url.rsplit("/", 1)[1]
        with self.pg.admin(name) as c:
            rows = c.execute("SELECT key, count FROM failures ORDER BY key").fetchall()
        self.assertEqual(rows, [("addr:127.0.0.1", 1), ("user:alice", 1)])

    def test_outageFailsClosedThenResumes(self) -> None:
        """
        With the database server stopped a right password is refused with
        DB-UNAVAILABLE and the server logs the outage in one line; started
        again, the same login succeeds without restarting twistd.
        """
        code, out, err = self.connect()
        self.assertEqual(code, 0, err)
        self.pg.stop_server()
        self.addCleanup(self.pg.start_server)
        code, out, err = self.connect()
        self.assertEqual((code, out), (1, b""))
        self.assertEqual(
            err.strip().splitlines()[-1],
            "securenet: error: authentication failed: DB-UNAVAILABLE "
            "the credential database cannot be reached now; try again later",
        )
        code, out, err = self.connect()
        self.assertEqual((code, out), (1, b""))
        log = self.server.waitForLog("logins are refused until it is back")
        outage = [line for line in log.splitlines() if "the credential database cannot be reached (" in line]
        self.assertEqual(len(outage), 1, log)
        self.assertIn(self.url, outage[0])
        self.pg.start_server()
        for _ in range(30):  # the pool reconnects by itself; each refused try waits its timeout
            code, out, err = self.connect()
            if code == 0:
                break
            self.assertIn("DB-UNAVAILABLE", err)
        self.assertEqual((code, out), (0, b"hello\n"), err)
        self.assertIn("the credential database is reachable again", self.server.waitForLog("reachable again"))
