"""
End to end, authentication: a real C{twistd securenet --auth sqlite:... --auth
jwt:...}, credentials made with the real CLI, and the C{securenet connect}
client for PLAIN, SCRAM-SHA-256-PLUS, bearer tokens, API keys and TOTP
(users are added by the CLI's code in-process, with cheap hashing injected:
the installed command always hashes for production); and
one session driven by hand through C{openssl s_client}, to prove the wire is
what docs/protocol.md says.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyotp
from twisted.trial.unittest import SynchronousTestCase

from securenet.cli import _users as cli_users
from securenet.testing import TEST_SCRAM_ITERATIONS, weak_hasher
from tests.support import Twistd, child_env, converse, run, run_cli, script
from tests.support.e2e import dev_pki

_SETUP: dict[str, object] = {}


def securenet(*args: str, input: bytes | None = None, cwd: Path | None = None) -> str:
    """The installed C{securenet ARGS}; its output."""
    result = run([script("securenet"), *args], input=input, cwd=cwd)
    assert result.returncode == 0, (args, result.stderr.decode())
    return result.stdout.decode()


@contextmanager
def cheap_hashing() -> Iterator[None]:
    """
    In-process C{securenet users ...} hashes with L{weak_hasher} and
    L{TEST_SCRAM_ITERATIONS} SCRAM iterations (the server is told the same
    count, as an operator must), so e2e suites do not pay for production
    hashing at every user they add.
    """
    module = cli_users
    saved = module.password_hasher, module.scram_iterations
    module.password_hasher, module.scram_iterations = weak_hasher, TEST_SCRAM_ITERATIONS
    try:
        yield
    finally:
        module.password_hasher, module.scram_iterations = saved


def add_user(*args: str) -> None:
    """C{securenet users add ARGS}, run in-process with L{cheap_hashing}."""
    with cheap_hashing():
        result = run_cli("users", "add", *args)
    assert result.code == 0, (args, result.err)


def credentials(base: Path) -> dict[str, object]:
    """A credential database and token key, made once per run with the CLI."""
    if _SETUP:
        return _SETUP
    base.mkdir(parents=True, exist_ok=True)
    db = base / "securenet.db"
    (base / "alice.pw").write_text("correct horse\n")
    (base / "bob.pw").write_text("battery staple\n")
    (base / "wrong.pw").write_text("incorrect\n")
    add_user("alice", "--db", str(db), "--role", "reader", "--password-file", str(base / "alice.pw"))
    add_user("bob", "--db", str(db), "--password-file", str(base / "bob.pw"))
    enrolled = securenet("users", "totp-enroll", "bob", "--db", str(db))
    match = re.search(r"secret=([A-Z2-7]+)", enrolled)
    assert match, enrolled
    api_key = securenet("apikeys", "create", "--user", "alice", "--db", str(db), "--scope", "echo").strip()
    (base / "alice.apikey").write_text(api_key + "\n")
    securenet("tokens", "keygen", "--alg", "EdDSA", "--out", str(base / "tokens.key"))
    token = securenet("tokens", "issue", "alice", "--key", str(base / "tokens.key"), "--ttl", "3600").strip()
    (base / "alice.token").write_text(token + "\n")
    _SETUP.update(db=db, base=base, totp_secret=match.group(1), api_key=api_key)
    return _SETUP


class AuthE2ETests(SynchronousTestCase):
    def setUp(self) -> None:
        self.certs = dev_pki(Path(self.mktemp()).resolve())
        self.creds = credentials(Path(self.mktemp()).resolve())
        self.base: Path = self.creds["base"]  # type: ignore[assignment]
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        # Each test gets its own copy of the database: failure counters (all
        # from 127.0.0.1) and used TOTP steps must not leak between tests.
        self.db = work / "securenet.db"
        shutil.copyfile(str(self.creds["db"]), self.db)
        self.db.chmod(0o600)
        listen = f"securenet:0:interface=127.0.0.1:certKey={self.certs / 'server.pem'}:privateKey={self.certs / 'server.key'}"
        self.server = Twistd(
            work,
            [
                "--listen",
                listen,
                "--auth",
                f"sqlite:db={self.db},scramIterations=4096",
                "--auth",
                f"jwt:key={self.base / 'tokens.key.pub'},db={self.db}",
            ],
        )
        self.addCleanup(self.server.stop)

    def endpoint(self) -> str:
        return f"securenet:host=localhost:port={self.server.port}:trustRoots={self.certs / 'ca.pem'}"

    def connect(self, *options: str, data: bytes = b"hello\n") -> tuple[int, bytes, str]:
        result = run(
            [script("securenet"), "connect", "--linger", "0.5", *options, self.endpoint()],
            input=data,
            timeout=60,
        )
        return result.returncode, result.stdout, result.stderr.decode()

    def assertLoggedIn(self, mechanism: str, identity: str, *options: str) -> str:
        code, out, err = self.connect(*options)
        self.assertEqual((code, out), (0, b"hello\n"), err)
        self.assertIn(f"authenticated as {identity}", err)
        return self.server.waitForLog(f"by {mechanism}: {identity}")

    def test_greetingOffersTheDatabaseMechanisms(self) -> None:
        out, _ = converse(["openssl", "s_client", "-connect", f"127.0.0.1:{self.server.port}", "-quiet"], b"", b"PLAIN\r\n")
        self.assertIn(b"SECURENET 1 AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256 OAUTHBEARER APIKEY PLAIN\r\n", out)

    def test_plain(self) -> None:
        log = self.assertLoggedIn(
            "PLAIN", "alice", "--mechanism", "PLAIN", "--user", "alice", "--password-file", str(self.base / "alice.pw")
        )
        self.assertIn("authentication ok for 127.0.0.1", log)

    def test_scramPlusByDefault(self) -> None:
        """With --user and no --mechanism the client picks SCRAM-SHA-256-PLUS (bound to this TLS channel)."""
        self.assertLoggedIn("SCRAM-SHA-256-PLUS", "alice", "--user", "alice", "--password-file", str(self.base / "alice.pw"))

    def test_wrongPassword(self) -> None:
        """A wrong password: exit 1, the generic failure, nothing echoed; the log has the reason."""
        for mechanism in ("PLAIN", "SCRAM-SHA-256-PLUS"):
            code, out, err = self.connect(
                "--mechanism", mechanism, "--user", "alice", "--password-file", str(self.base / "wrong.pw")
            )
            self.assertEqual((code, out), (1, b""))
            self.assertEqual(
                err.strip().splitlines()[-1], "securenet: error: authentication failed: AUTH-FAILED authentication failed"
            )
        log = self.server.waitForLog("wrong SCRAM proof")
        self.assertIn("authentication denied for 127.0.0.1", log)

    def test_unknownUserLooksTheSame(self) -> None:
        """An unknown user gets exactly what a wrong password gets, on the wire."""
        (self.base / "mallory.pw").write_text("whatever\n")
        code, out, err = self.connect(
            "--mechanism", "PLAIN", "--user", "mallory", "--password-file", str(self.base / "mallory.pw")
        )
        self.assertEqual((code, out), (1, b""))
        self.assertEqual(
            err.strip().splitlines()[-1], "securenet: error: authentication failed: AUTH-FAILED authentication failed"
        )

    def test_token(self) -> None:
        self.assertLoggedIn("OAUTHBEARER", "alice", "--token-file", str(self.base / "alice.token"))

    def test_apiKey(self) -> None:
        self.assertLoggedIn("APIKEY", "alice", "--api-key-file", str(self.base / "alice.apikey"))

    def test_totp(self) -> None:
        """bob enrolled TOTP: password then code; the same code is refused the second time."""
        code = pyotp.TOTP(str(self.creds["totp_secret"])).now()
        options = ("--mechanism", "PLAIN", "--user", "bob", "--password-file", str(self.base / "bob.pw"), "--totp", code)
        self.assertLoggedIn("PLAIN", "bob", *options)
        again, out, err = self.connect(*options)
        self.assertEqual((again, out), (1, b""))
        self.assertIn("authentication failed: AUTH-FAILED", err)
        self.assertIn("TOTP:", self.server.waitForLog("TOTP:"))

    def test_totpRequiredWithoutCode(self) -> None:
        """Without --totp and without a terminal to prompt on, the client says why, names --totp, and exits 1."""
        code, out, err = self.connect("--mechanism", "PLAIN", "--user", "bob", "--password-file", str(self.base / "bob.pw"))
        self.assertEqual((code, out), (1, b""))
        self.assertIn("no TOTP code: give --totp CODE (there is no terminal to prompt on)", err)

    def test_noCredentials(self) -> None:
        """No credentials for a server that needs some: one line naming the options that give them."""
        code, out, err = self.connect()
        self.assertEqual((code, out), (1, b""))
        self.assertEqual(
            err.strip().splitlines()[-1],
            "securenet: error: authentication failed: NO-MECHANISM the server needs credentials "
            "(it offers SCRAM-SHA-256-PLUS SCRAM-SHA-256 OAUTHBEARER APIKEY PLAIN); give --user NAME "
            "(with --password-file FILE, or type the password at the prompt), --token-file FILE, --api-key-file FILE, "
            "or a client certificate in ENDPOINT (certificate=FILE:privateKey=FILE)",
        )

    def test_scramDowngradeRefused(self) -> None:
        """--mechanism SCRAM-SHA-256 where -PLUS is offered: refused before sending, saying what to give instead."""
        code, out, err = self.connect(
            "--mechanism", "SCRAM-SHA-256", "--user", "alice", "--password-file", str(self.base / "alice.pw")
        )
        self.assertEqual((code, out), (1, b""))
        self.assertEqual(
            err.strip().splitlines()[-1],
            "securenet: error: authentication failed: CLIENT cannot authenticate: the server offers SCRAM-SHA-256-PLUS "
            "(bound to this TLS connection) and this client can bind, so it will not downgrade to SCRAM-SHA-256: "
            "leave out --mechanism, or give --mechanism SCRAM-SHA-256-PLUS",
        )

    def test_readerOfOutputGone(self) -> None:
        """C{securenet connect ... | head}: when the reader of stdout is gone, the client ends quietly (exit 141)."""
        reader, writer = os.pipe()
        os.close(reader)
        try:
            done = subprocess.run(
                [script("securenet"), "connect", "-q", "--linger", "0.5", "--api-key-file", str(self.base / "alice.apikey")]
                + [self.endpoint()],
                input=b"hello\n",
                stdout=writer,
                stderr=subprocess.PIPE,
                env=child_env(),
                timeout=60,
            )
        finally:
            os.close(writer)
        self.assertEqual((done.returncode, done.stderr), (141, b""))

    def test_plainByHandThroughOpenSSL(self) -> None:
        """docs/protocol.md, typed by hand into openssl s_client: AUTH PLAIN, then the application."""
        initial = base64.b64encode(b"\0alice\0correct horse").decode()
        out, _ = converse(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{self.server.port}", "-CAfile", str(self.certs / "ca.pem"), "-quiet"],
            f"AUTH PLAIN {initial}\r\nhello by hand\n".encode(),
            b"hello by hand\n",
        )
        self.assertIn(b"OK alice\r\nhello by hand\n", out)


class CredentialDatabaseStartupTests(SynchronousTestCase):
    def test_corruptDatabaseRefusedAtStartup(self) -> None:
        """A corrupt credential database stops twistd at start-up with one line naming it."""
        from tests.support import run_twistd_expecting_failure

        certs = dev_pki(Path(self.mktemp()).resolve())
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        db = work / "broken.db"
        db.write_bytes(b"this is not a database" * 100)
        db.chmod(0o600)
        listen = f"securenet:0:interface=127.0.0.1:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        result = run_twistd_expecting_failure(work, ["--listen", listen, "--auth", f"sqlite:{db}"])
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode().strip(),
            f"twistd securenet: error: --auth sqlite: {db}: not an SQLite database (corrupt or wrong file)",
        )
        self.assertNotIn(b"Traceback", result.stdout)
