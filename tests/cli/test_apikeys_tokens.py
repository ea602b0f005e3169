"""
Tests for C{securenet apikeys ...} and C{securenet tokens ...}, run
in-process against a real credential database (L{SQLiteStore}) in a
temporary directory: each command's exact output, and for each bad input
the exact one-line error, exit code 1, and the database and files left as
they were.  What the commands make is checked with the library's own
checkers, end to end (a key from C{apikeys create} logs in; a token from
C{tokens issue} passes C{--auth jwt:key=} built on C{tokens keygen}'s
public key).
"""

from __future__ import annotations

import base64
import datetime
import os
import re
import stat
from pathlib import Path
from typing import Any

import jwt
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import securenet.cli._apikeys
import securenet.cli._tokens
from securenet.cred._apikeys import APIKeyChecker, APIKeyRefused, PresentedAPIKey, hash_secret
from securenet.cred._jwt import PresentedToken, TokenChecker, TokenRefused
from securenet.cred._strcred import jwtCheckerFactory
from securenet.pki._tokenkeys import load_verification_key
from securenet.store._records import User
from securenet.store._sqlite import SQLiteStore
from tests.support import CLIResult as Result
from tests.support import run_cli as run

NOW = 1_800_000_000
UTC = datetime.UTC


def snapshot(*paths: Path) -> dict[str, bytes]:
    """The bytes of every file under C{paths} (database, WAL, keys): compared to prove nothing changed."""
    found: dict[str, bytes] = {}
    for path in paths:
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        for p in candidates:
            if p.is_file():
                found[str(p)] = p.read_bytes()
    return found


class CLITestCase(SynchronousTestCase):
    """A directory with a credential database holding alice and bob (disabled); the CLI's clock at NOW."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.db = self.dir / "creds.db"
        with SQLiteStore.open(self.db) as store:
            store.add_user(User("alice"))
            store.add_user(User("bob", disabled=True))
        self.now = float(NOW)
        self.patch(securenet.cli._apikeys, "clock", lambda: self.now)
        self.patch(securenet.cli._tokens, "clock", lambda: self.now)

    def store(self) -> SQLiteStore:
        store = SQLiteStore.open(self.db)
        self.addCleanup(store.close)
        return store

    def cli(self, *argv: str | Path) -> Result:
        return run(*argv)

    def assertOK(self, result: Result, out: str | None = None, err: str = "") -> Result:
        self.assertEqual((result.code, result.err), (0, err), result)
        if out is not None:
            self.assertEqual(result.out, out)
        return result

    def assertFails(self, result: Result, message: str) -> None:
        """Exit 1, nothing on stdout, exactly C{securenet: error: MESSAGE} on stderr."""
        self.assertEqual(result, Result(1, "", f"securenet: error: {message}\n"))


# -- apikeys -------------------------------------------------------------------


class APIKeysCreateTests(CLITestCase):
    def create(self, *extra: str) -> tuple[str, str]:
        result = self.cli("apikeys", "create", "--db", self.db, *extra)
        self.assertEqual(result.code, 0, result)
        key = result.out.rstrip("\n")
        self.assertEqual(result.out, key + "\n")
        return key, result.err

    def test_create(self) -> None:
        """The key alone on stdout; on stderr which key it is and the one-time warning; it logs in."""
        key, err = self.create("--user", "alice", "--scope", "read", "--scope", "write", "--expires", "30")
        match = re.fullmatch(r"sn_([A-Za-z0-9]{12})\.([A-Za-z0-9_-]{43})", key)
        assert match is not None
        key_id, secret = match.groups()
        self.assertEqual(
            err,
            f"created API key {key_id} for user alice (scopes: read,write; expires: 2027-02-14T08:00:00Z)\n"
            "warning: this is the only time the key is shown; store it now (the database keeps only its hash)\n",
        )
        store = self.store()
        record = self.successResultOf(store.get_api_key(key_id))
        assert record is not None
        self.assertEqual(record.secret_hash, hash_secret(secret))
        self.assertEqual(record.scopes, ("read", "write"))
        self.assertEqual(record.expires, datetime.datetime.fromtimestamp(NOW + 30 * 86400, UTC))
        self.assertNotIn(secret.encode(), self.db.read_bytes())
        clock = Clock()
        clock.advance(NOW)
        checker = APIKeyChecker(store, clock)
        self.assertEqual(self.successResultOf(checker.requestAvatarId(PresentedAPIKey(key))), "alice")

    def test_create_without_scopes_or_expiry(self) -> None:
        key, err = self.create("--user", "alice")
        key_id = key[3:15]
        self.assertEqual(err.splitlines()[0], f"created API key {key_id} for user alice (scopes: -; expires: never)")

    def test_each_key_is_new(self) -> None:
        first, _ = self.create("--user", "alice")
        second, _ = self.create("--user", "alice")
        self.assertNotEqual(first, second)
        self.assertEqual(len(self.successResultOf(self.store().list_api_keys("alice"))), 2)

    def test_refusals(self) -> None:
        """Each bad input: one line, exit 1, the database untouched."""
        cases = [
            (["--user", "carol"], f"no user 'carol' in {self.db}"),
            (["--user", ""], "--user must not be empty"),
            (
                ["--user", "alice", "--scope", "has space"],
                "--scope: invalid scope 'has space': a scope is printable ASCII without spaces, quotes or backslashes",
            ),
            (
                ["--user", "alice", "--scope", ""],
                "--scope: invalid scope '': a scope is printable ASCII without spaces, quotes or backslashes",
            ),
            (["--user", "alice", "--expires", "0"], "--expires must be between 1 and 3650 days, not 0"),
            (["--user", "alice", "--expires", "3651"], "--expires must be between 1 and 3650 days, not 3651"),
        ]
        before = snapshot(self.dir)
        for argv, message in cases:
            self.assertFails(self.cli("apikeys", "create", "--db", self.db, *argv), message)
        self.assertEqual(snapshot(self.dir), before)
        self.assertEqual(self.successResultOf(self.store().list_api_keys()), [])

    def test_no_database(self) -> None:
        """A mistyped --db is refused, and no database is created there."""
        missing = self.dir / "typo.db"
        self.assertFails(
            self.cli("apikeys", "create", "--user", "alice", "--db", missing),
            f"{missing}: no credential database here (give --db PATH, or create one with 'securenet users add NAME')",
        )
        self.assertFalse(missing.exists())

    def test_default_database(self) -> None:
        """Without --db, var/securenet.db (relative to the working directory)."""
        self.assertFalse(Path("var/securenet.db").exists())
        self.assertFails(
            self.cli("apikeys", "list"),
            "var/securenet.db: no credential database here (give --db PATH, or create one with 'securenet users add NAME')",
        )
        self.assertFalse(Path("var/securenet.db").exists())

    def test_insecure_database(self) -> None:
        os.chmod(self.db, 0o644)
        self.assertFails(
            self.cli("apikeys", "create", "--user", "alice", "--db", self.db),
            f"{self.db}: credential database has mode 0644; it must not be accessible by group or others (chmod 600 {self.db})",
        )

    def test_argparse_refusals(self) -> None:
        """Syntax errors are argparse's: exit 2 and its usage line."""
        for argv in (["apikeys", "create"], ["apikeys", "create", "--user", "alice", "--expires", "soon"]):
            result = self.cli(*argv)
            self.assertEqual((result.code, result.out), (2, ""))
            self.assertIn("usage: securenet apikeys create", result.err)


class APIKeysListRevokeTests(CLITestCase):
    def create(self, *extra: str) -> str:
        result = self.cli("apikeys", "create", "--db", self.db, *extra)
        self.assertEqual(result.code, 0, result)
        return result.out.strip()

    def test_list(self) -> None:
        a = self.create("--user", "alice", "--scope", "read", "--expires", "1")
        self.now += 3600
        b = self.create("--user", "bob")
        ids = sorted([a[3:15], b[3:15]])
        self.now += 86400
        result = self.assertOK(self.cli("apikeys", "list", "--db", self.db))
        lines = result.out.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "USER", "SCOPES", "CREATED", "EXPIRES", "REVOKED"])
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        self.assertEqual(sorted(rows), ids)
        self.assertEqual(rows[a[3:15]][1:], ["alice", "read", "2027-01-15T08:00:00Z", "2027-01-16T08:00:00Z", "(expired)", "no"])
        self.assertEqual(rows[b[3:15]][1:], ["bob", "-", "2027-01-15T09:00:00Z", "never", "no"])
        column = lines[0].index("USER")
        self.assertEqual(sorted(line[column:].split()[0] for line in lines[1:]), ["alice", "bob"])

    def test_list_never_shows_secrets_or_hashes(self) -> None:
        key = self.create("--user", "alice")
        secret = key.split(".")[1]
        digest = hash_secret(secret)
        out = self.assertOK(self.cli("apikeys", "list", "--db", self.db)).out
        for forbidden in (
            secret,
            digest.hex(),
            base64.b64encode(digest).decode(),
            base64.urlsafe_b64encode(digest).decode().rstrip("="),
        ):
            self.assertNotIn(forbidden, out)

    def test_list_by_user(self) -> None:
        a = self.create("--user", "alice")
        self.create("--user", "bob")
        out = self.assertOK(self.cli("apikeys", "list", "--user", "alice", "--db", self.db)).out
        self.assertEqual([line.split()[0] for line in out.splitlines()[1:]], [a[3:15]])

    def test_list_empty(self) -> None:
        self.assertOK(self.cli("apikeys", "list", "--db", self.db), out="no API keys\n")
        self.assertOK(self.cli("apikeys", "list", "--user", "alice", "--db", self.db), out="no API keys for user alice\n")

    def test_list_unknown_user(self) -> None:
        self.assertFails(self.cli("apikeys", "list", "--user", "carol", "--db", self.db), f"no user 'carol' in {self.db}")

    def test_revoke(self) -> None:
        """Valid before, refused right after, and the listing says so."""
        key = self.create("--user", "alice")
        key_id = key[3:15]
        clock = Clock()
        clock.advance(NOW)
        checker = APIKeyChecker(self.store(), clock)
        self.assertEqual(self.successResultOf(checker.requestAvatarId(PresentedAPIKey(key))), "alice")
        self.assertOK(
            self.cli("apikeys", "revoke", key_id, "--db", self.db),
            out=f"revoked API key {key_id} (user alice); it is refused from its next use\n",
        )
        failure = self.failureResultOf(checker.requestAvatarId(PresentedAPIKey(key)), APIKeyRefused)
        self.assertEqual(failure.value.reason, "key revoked")
        out = self.assertOK(self.cli("apikeys", "list", "--db", self.db)).out
        self.assertEqual(out.splitlines()[1].split()[-1], "yes")
        self.assertOK(
            self.cli("apikeys", "revoke", key_id, "--db", self.db),
            out=f"API key {key_id} (user alice) was already revoked\n",
        )

    def test_revoke_as_copied(self) -> None:
        """sn_ID and the whole key sn_ID.SECRET name the key as its id does; the secret is never echoed."""
        for spelling in ("sn_{id}", "{key}", " {key}\n"):
            key = self.create("--user", "alice")
            key_id, secret = key[3:15], key.split(".")[1]
            result = self.assertOK(
                self.cli("apikeys", "revoke", spelling.format(id=key_id, key=key), "--db", self.db),
                out=f"revoked API key {key_id} (user alice); it is refused from its next use\n",
            )
            self.assertNotIn(secret, result.out + result.err)
            [record] = [k for k in self.successResultOf(self.store().list_api_keys()) if k.key_id == key_id]
            self.assertTrue(record.revoked)

    def test_revoke_malformed(self) -> None:
        """Text that names no key id is refused without repeating it (it may be a secret)."""
        key = self.create("--user", "alice")
        secret = key.split(".")[1]
        before = snapshot(self.dir)
        # A bare secret (its first character made a letter: one starting with "-" is an option to argparse).
        bare = "A" + secret[1:]
        for text in (bare, f"sn_{secret}", f"sn_short.{secret}", "sn_", "", "AAAAAAAAAAA!"):
            result = self.cli("apikeys", "revoke", text, "--db", self.db)
            self.assertFails(
                result,
                "ID is not an API key id: give the 12 letters and digits 'securenet apikeys list' shows, "
                "sn_ID, or the whole key sn_ID.SECRET",
            )
            self.assertNotIn(secret[1:], result.err)
        self.assertEqual(snapshot(self.dir), before)

    def test_revoke_unknown(self) -> None:
        self.create("--user", "alice")
        before = snapshot(self.dir)
        self.assertFails(self.cli("apikeys", "revoke", "AAAAAAAAAAAA", "--db", self.db), "no API key 'AAAAAAAAAAAA'")
        self.assertEqual(snapshot(self.dir), before)
        self.assertFalse(self.successResultOf(self.store().list_api_keys())[0].revoked)


# -- tokens --------------------------------------------------------------------


class TokensKeygenTests(CLITestCase):
    def test_eddsa(self) -> None:
        out = self.dir / "tokens.key"
        self.assertOK(
            self.cli("tokens", "keygen", "--out", out),
            out=(
                f"wrote {out} (the EdDSA private key: keep it secret; only the issuer needs it)\n"
                f"wrote {out}.pub\n"
                f"verify tokens with: --auth jwt:key={out}.pub\n"
            ),
        )
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(f"{out}.pub").st_mode), 0o644)
        self.assertEqual(load_verification_key(f"{out}.pub").algorithm, "EdDSA")

    def test_es256(self) -> None:
        out = self.dir / "es.key"
        self.assertOK(self.cli("tokens", "keygen", "--alg", "ES256", "--out", out))
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
        self.assertEqual(load_verification_key(f"{out}.pub", "ES256").algorithm, "ES256")

    def test_hs256(self) -> None:
        out = self.dir / "hs.key"
        self.assertOK(
            self.cli("tokens", "keygen", "--alg", "HS256", "--out", out),
            out=(
                f"wrote {out} (the HS256 secret: keep it secret; issuer and verifier both need it)\n"
                f"verify tokens with: --auth jwt:key={out},alg=HS256\n"
            ),
        )
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
        self.assertFalse(Path(f"{out}.pub").exists())
        self.assertGreaterEqual(len(out.read_bytes().strip()), 64)
        self.assertEqual(load_verification_key(out, "HS256").algorithm, "HS256")

    def test_refuses_to_overwrite(self) -> None:
        out = self.dir / "tokens.key"
        self.assertOK(self.cli("tokens", "keygen", "--out", out))
        before = snapshot(self.dir)
        self.assertFails(self.cli("tokens", "keygen", "--out", out), f"{out}: already exists; refusing to overwrite it")
        os.unlink(out)
        self.assertFails(self.cli("tokens", "keygen", "--out", out), f"{out}.pub: already exists; refusing to overwrite it")
        self.assertFalse(out.exists())
        self.assertEqual(snapshot(self.dir), {k: v for k, v in before.items() if k != str(out)})

    def test_missing_directory(self) -> None:
        out = self.dir / "nope" / "tokens.key"
        self.assertFails(self.cli("tokens", "keygen", "--out", out), f"{out.parent}: directory does not exist")
        self.assertFalse(out.parent.exists())

    def test_bad_algorithm(self) -> None:
        result = self.cli("tokens", "keygen", "--alg", "none", "--out", self.dir / "k")
        self.assertEqual(result.code, 2)
        self.assertIn("invalid choice: 'none'", result.err)
        self.assertFalse((self.dir / "k").exists())


class TokensIssueTests(CLITestCase):
    def keygen(self, alg: str = "EdDSA") -> Path:
        out = self.dir / f"{alg}.key"
        self.assertOK(self.cli("tokens", "keygen", "--alg", alg, "--out", out))
        return out

    def checker(self, argstring: str, store: Any = None) -> TokenChecker:
        checker = jwtCheckerFactory.generateChecker(argstring)
        clock = Clock()
        clock.advance(self.now)
        checker.clock = clock
        checker.store = store
        return checker

    def issue(self, *argv: str | Path) -> str:
        result = self.assertOK(self.cli("tokens", "issue", *argv))
        token = result.out.strip()
        self.assertEqual(result.out, token + "\n")
        return token

    def test_end_to_end(self) -> None:
        """keygen, then a token from issue passes --auth jwt:key=PATH.pub, for each algorithm."""
        for alg in ("EdDSA", "ES256", "HS256"):
            key = self.keygen(alg)
            token = self.issue("alice", "--key", key, "--scope", "read", "--scope", "write", "--ttl", "120")
            verify_with = f"key={key},alg=HS256" if alg == "HS256" else f"key={key}.pub"
            credentials = PresentedToken(token)
            checker = self.checker(verify_with, self.store())
            self.assertEqual(self.successResultOf(checker.requestAvatarId(credentials)), "alice")
            assert credentials.verified is not None
            self.assertEqual(credentials.verified.scopes, ("read", "write"))
            self.assertEqual((credentials.verified.issued_at, credentials.verified.expires), (NOW, NOW + 120))

    def test_defaults(self) -> None:
        token = self.issue("alice", "--key", self.keygen())
        claims = jwt.decode(token, options={"verify_signature": False})
        self.assertEqual(
            {k: claims[k] for k in ("sub", "aud", "iss", "iat", "exp")},
            {"sub": "alice", "aud": "securenet", "iss": "securenet", "iat": NOW, "exp": NOW + 3600},
        )
        self.assertNotIn("scope", claims)

    def test_audience_and_issuer(self) -> None:
        key = self.keygen()
        token = self.issue("alice", "--key", key, "--audience", "billing", "--issuer", "idp")
        failure = self.failureResultOf(self.checker(f"key={key}.pub").verify(token), TokenRefused)
        self.assertEqual(failure.value.reason, "wrong audience")
        self.successResultOf(self.checker(f"key={key}.pub,audience=billing,issuer=idp").verify(token))

    def test_disabled_user_token_refused_with_db(self) -> None:
        key = self.keygen()
        token = self.issue("bob", "--key", key)
        failure = self.failureResultOf(self.checker(f"key={key}.pub", self.store()).verify(token), TokenRefused)
        self.assertEqual(failure.value.reason, "user disabled")

    def test_refusals(self) -> None:
        ed = self.keygen()
        hs = self.keygen("HS256")
        loose = self.dir / "loose.key"
        loose.write_bytes(b"s" * 40)
        os.chmod(loose, 0o644)
        short = self.dir / "short.key"
        short.write_bytes(b"s" * 20)
        os.chmod(short, 0o600)
        cases: list[tuple[list[str | Path], str]] = [
            (
                ["alice", "--key", loose],
                f"{loose}: private key file has mode 0644; it must not be accessible by group or others (chmod 600 {loose})",
            ),
            (["alice", "--key", short], f"{short}: HS256 secret is 20 bytes; it must be at least 32 (256 bits)"),
            (["alice", "--key", f"{ed}.pub"], f"{ed}.pub: is a public key; issuing tokens needs the private key"),
            (["alice", "--key", ed, "--alg", "ES256"], f"{ed}: holds an Ed25519 (EdDSA) key, not a P-256 (ES256) key"),
            (["alice", "--key", ed, "--alg", "HS256"], f"{ed}: is a PEM key, not an HS256 secret"),
            (["alice", "--key", hs, "--alg", "EdDSA"], f"{hs}: not a PEM private key (EdDSA needs one)"),
            (["alice", "--key", self.dir / "missing.key"], f"{self.dir / 'missing.key'}: token key file does not exist"),
            (["alice", "--key", ed, "--ttl", "0"], "--ttl must be between 1 and 86400 seconds, not 0"),
            (
                ["alice", "--key", ed, "--scope", 'a"b'],
                "--scope: invalid scope 'a\"b': a scope is printable ASCII without spaces, quotes or backslashes",
            ),
            (["", "--key", ed], "the token subject must be 1-256 characters"),
            (["alice", "--key", ed, "--audience", ""], "the token audience must be a non-empty string"),
            (["alice", "--key", ed, "--issuer", ""], "the token issuer must be a non-empty string (or None to not check it)"),
        ]
        for argv, message in cases:
            self.assertFails(self.cli("tokens", "issue", *argv), message)


class TokensRevokeTests(CLITestCase):
    def setUp(self) -> None:
        super().setUp()
        key = self.dir / "tokens.key"
        self.assertOK(self.cli("tokens", "keygen", "--out", key))
        self.key = key
        self.token = self.cli("tokens", "issue", "alice", "--key", key, "--ttl", "600").out.strip()
        self.jti = jwt.decode(self.token, options={"verify_signature": False})["jti"]

    def revoked(self) -> bool:
        result: bool = self.successResultOf(self.store().is_token_revoked(self.jti))
        return result

    def checker(self) -> TokenChecker:
        checker = jwtCheckerFactory.generateChecker(f"key={self.key}.pub")
        clock = Clock()
        clock.advance(NOW)
        checker.clock = clock
        checker.store = self.store()
        return checker

    def test_revoke_token(self) -> None:
        """Accepted before; after 'tokens revoke --token', refused as revoked."""
        self.successResultOf(self.checker().verify(self.token))
        self.assertOK(
            self.cli("tokens", "revoke", "--token", self.token, "--db", self.db),
            out=f"revoked token {self.jti} (kept until it expires at 2027-01-15T08:10:00Z)\n",
        )
        failure = self.failureResultOf(self.checker().verify(self.token), TokenRefused)
        self.assertEqual(failure.value.reason, "token revoked")

    def test_revoke_jti(self) -> None:
        for expires in (str(NOW + 600), "2027-01-15T08:10:00Z", "2027-01-15T08:10:00"):
            self.assertOK(
                self.cli("tokens", "revoke", self.jti, "--expires", expires, "--db", self.db),
                out=f"revoked token {self.jti} (kept until it expires at 2027-01-15T08:10:00Z)\n",
            )
        self.assertTrue(self.revoked())

    def test_jti_like_an_option(self) -> None:
        """Our jti are hex; another issuer's jti starting with '-' goes after '--'."""
        self.assertRegex(self.jti, r"\A[0-9a-f]{32}\Z")
        self.assertOK(
            self.cli("tokens", "revoke", "--db", self.db, "--expires", str(NOW + 60), "--", "-odd-jti"),
            out="revoked token -odd-jti (kept until it expires at 2027-01-15T08:01:00Z)\n",
        )
        self.assertTrue(self.successResultOf(self.store().is_token_revoked("-odd-jti")))

    def test_already_expired(self) -> None:
        self.now += 601
        self.assertOK(
            self.cli("tokens", "revoke", "--token", self.token, "--db", self.db),
            out=f"token {self.jti} expired at 2027-01-15T08:10:00Z; it is refused anyway, nothing to revoke\n",
        )
        self.assertFalse(self.revoked())

    def test_refusals(self) -> None:
        before = snapshot(self.dir)
        no_jti = jwt.encode({"sub": "a", "exp": NOW + 60}, "k" * 32)
        cases = [
            ([], "give either a token id (JTI, with --expires) or --token TOKEN"),
            ([self.jti, "--token", self.token], "give either a token id (JTI, with --expires) or --token TOKEN"),
            (
                ["--token", self.token, "--expires", "1"],
                "--expires comes from the token's exp claim; do not give it with --token",
            ),
            (
                [self.jti],
                "--expires is required with a token id: the token's exp (POSIX seconds) or an ISO 8601 time; the revocation "
                "is kept until then",
            ),
            (
                [self.jti, "--expires", "tomorrow"],
                "--expires 'tomorrow' is not a time: give the token's exp (POSIX seconds) or an ISO 8601 date/time",
            ),
            (["--token", "not-a-token"], "--token is not a JWT"),
            (["--token", no_jti], "--token has no jti claim, so it cannot be revoked (securenet refuses such tokens anyway)"),
            (["", "--expires", "1"], "the token id must be 1-256 characters"),
        ]
        for argv, message in cases:
            self.assertFails(self.cli("tokens", "revoke", "--db", self.db, *argv), message)
        self.assertEqual(snapshot(self.dir), before)
        self.assertFalse(self.revoked())

    def test_no_database(self) -> None:
        missing = self.dir / "typo.db"
        self.assertFails(
            self.cli("tokens", "revoke", "--token", self.token, "--db", missing),
            f"{missing}: no credential database here (give --db PATH, or create one with 'securenet users add NAME')",
        )
        self.assertFalse(missing.exists())
