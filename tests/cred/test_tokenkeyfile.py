"""
Tests for L{securenet.cred.TokenKeyFile} and L{securenet.cred.ReloadableTokenChecker}
(C{--auth jwt:key=PATH}): a reload reads the key file again and rotates the
key set; every bad file is refused, naming it, and changes nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from securenet._errors import SecurenetError
from securenet.cred import ReloadableTokenChecker, TokenKeyFile
from securenet.cred._jwt import DEFAULT_MAX_LIFETIME, TokenRefused, TokenSettings, VerifiedToken, _short
from securenet.cred._strcred import CheckerArgumentError, jwtCheckerFactory
from securenet.interfaces import IReloadable
from securenet.pki import TokenKey, key_id
from securenet.store._memory import MemoryStore
from securenet.store._records import User

NOW = 1_800_000_000


def pem_public(private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def pem_private(private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class KeyFileTestCase(SynchronousTestCase):
    """An external issuer's Ed25519 key, its public key in a file, and a clock at L{NOW}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryStore()
        self.store.users["alice"] = User("alice")
        self.old = ed25519.Ed25519PrivateKey.generate()
        self.path = Path(self.mktemp())
        self.write(pem_public(self.old), 0o644)

    def write(self, data: bytes, mode: int = 0o644) -> None:
        if self.path.is_dir():
            self.path.rmdir()
        self.path.write_bytes(data)
        os.chmod(self.path, mode)

    def sign(self, private: Any, *, kid: str | None | bool = True, ttl: int = 3600) -> str:
        """A token for alice signed with C{private}, naming it by its key id (C{kid=True}), by C{kid}, or with no kid."""
        key = TokenKey.private(private)
        headers = {"kid": key_id(key)} if kid is True else ({"kid": kid} if isinstance(kid, str) else None)
        now = int(self.clock.seconds())
        claims = {
            "sub": "alice",
            "jti": os.urandom(8).hex(),
            "iat": now,
            "exp": now + ttl,
            "aud": "securenet",
            "iss": "securenet",
        }
        return jwt.PyJWS().encode(json.dumps(claims).encode(), private, algorithm=key.algorithm, headers=headers)

    def accepted(self, checker: Any, token: str) -> VerifiedToken:
        result: VerifiedToken = self.successResultOf(checker.verify(token))
        return result

    def refused(self, checker: Any, token: str) -> str:
        return str(self.failureResultOf(checker.verify(token), TokenRefused).value.reason)


class TokenKeyFileTests(KeyFileTestCase):
    def test_open(self) -> None:
        """The key is named by its content and the algorithm is pinned to the file's."""
        key_file, key = TokenKeyFile.open(str(self.path), signing=False, overlap=60)
        self.assertEqual(key.kid, key_id(TokenKey.public(self.old.public_key())))
        self.assertEqual((key_file.algorithm, key_file.signing, key_file.overlap), ("EdDSA", False, 60.0))
        self.assertEqual(key_file.read(), key)

    def test_overlap_bounds(self) -> None:
        for bad in (-1, float("inf"), True):
            with self.assertRaises(SecurenetError) as e:
                TokenKeyFile.open(str(self.path), signing=False, overlap=bad)
            self.assertEqual(str(e.exception), f"the key overlap must be between 0 and 3.16224e+07 seconds, not {bad!r}")

    def test_rotate_names_the_file(self) -> None:
        """A rotation the settings refuse is an error naming the file."""
        key_file, key = TokenKeyFile.open(str(self.path), signing=False, overlap=60)
        with self.assertRaises(SecurenetError) as e:
            key_file.rotate(TokenSettings([TokenKey.public(self.old.public_key())]), NOW)
        self.assertEqual(str(e.exception), f"{self.path}: only settings with a default kid rotate their keys")


class ReloadableTokenCheckerTests(KeyFileTestCase):
    def setUp(self) -> None:
        super().setUp()
        key_file, key = TokenKeyFile.open(str(self.path), signing=False, overlap=600)
        self.checker = ReloadableTokenChecker(
            TokenSettings([key], default_kid=key.kid), self.store, self.clock, key_file=key_file
        )
        self.new = ed25519.Ed25519PrivateKey.generate()

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IReloadable, self.checker))
        self.assertEqual((self.checker.what, self.checker.source), ("checker", str(self.path)))

    def test_factory(self) -> None:
        """--auth jwt makes a reloadable checker; overlap= defaults to max_lifetime."""
        checker = jwtCheckerFactory.generateChecker(f"key={self.path}")
        self.assertIsInstance(checker, ReloadableTokenChecker)
        self.assertEqual(checker.key_file.overlap, DEFAULT_MAX_LIFETIME)
        self.assertEqual(jwtCheckerFactory.generateChecker(f"key={self.path},max_lifetime=900").key_file.overlap, 900)
        self.assertEqual(jwtCheckerFactory.generateChecker(f"key={self.path},overlap=0").key_file.overlap, 0)
        for argstring, message in (
            (f"key={self.path},overlap=soon", "--auth jwt: overlap='soon' is not a number of seconds"),
            (f"key={self.path},overlap=-1", "--auth jwt: the key overlap must be between 0 and 3.16224e+07 seconds, not -1.0"),
        ):
            with self.assertRaises(CheckerArgumentError) as e:
                jwtCheckerFactory.generateChecker(argstring)
            self.assertEqual(str(e.exception), message)

    def test_tokens_without_kid_still_verify(self) -> None:
        """As before reloads existed: a token without a kid is verified with the configured key."""
        self.accepted(self.checker, self.sign(self.old, kid=None))
        self.accepted(self.checker, self.sign(self.old))
        self.assertEqual(self.refused(self.checker, self.sign(self.old, kid="other")), "unknown kid 'other'")

    def test_reload(self) -> None:
        """Prepare alone changes nothing; after the commit the new key verifies, the old one within the overlap."""
        by_old, old_no_kid = self.sign(self.old), self.sign(self.old, kid=None)
        by_new, new_no_kid = self.sign(self.new), self.sign(self.new, kid=None)
        self.write(pem_public(self.new))
        before = self.checker.settings
        commit = self.checker.prepare()
        self.assertIs(self.checker.settings, before)
        self.assertIn("unknown kid", self.refused(self.checker, by_new))
        commit()
        self.accepted(self.checker, by_new)
        self.accepted(self.checker, new_no_kid)
        self.accepted(self.checker, by_old)
        self.assertEqual(self.refused(self.checker, old_no_kid), "bad signature")  # no kid: the current key only
        self.clock.advance(600 + 29)  # the overlap, and the leeway as for exp
        self.accepted(self.checker, by_old)
        self.clock.advance(1)
        old_kid = key_id(TokenKey.private(self.old))
        self.assertEqual(self.refused(self.checker, by_old), f"unknown kid {_short(old_kid)}")
        self.accepted(self.checker, by_new)

    def test_several_reloads(self) -> None:
        """Every key still inside its overlap keeps verifying."""
        third = ed25519.Ed25519PrivateKey.generate()
        by_old = self.sign(self.old)
        self.write(pem_public(self.new))
        self.checker.prepare()()
        by_new = self.sign(self.new)
        self.clock.advance(100)
        self.write(pem_public(third))
        self.checker.prepare()()
        for token in (by_old, by_new, self.sign(third), self.sign(third, kid=None)):
            self.accepted(self.checker, token)
        self.clock.advance(500 + 30)  # the first key's overlap is over, not the second's
        self.assertIn("unknown kid", self.refused(self.checker, by_old))
        self.accepted(self.checker, by_new)

    def test_unchanged_file(self) -> None:
        """A reload of the same file keeps the same key set."""
        before = self.checker.settings
        self.checker.prepare()()
        self.assertEqual(self.checker.settings, before)

    def assertRefused(self, message: str, data: bytes | None = None, mode: int = 0o644) -> None:
        """Replace the file (None: by a directory); prepare refuses with C{message}; the old key set is untouched."""
        by_old = self.sign(self.old)
        if data is None:
            self.path.unlink()
            self.path.mkdir()
        else:
            self.write(data, mode)
        before = self.checker.settings
        with self.assertRaises(SecurenetError) as e:
            self.checker.prepare()
        self.assertEqual(str(e.exception), message.format(path=self.path))
        self.assertIs(self.checker.settings, before)
        self.accepted(self.checker, by_old)
        self.accepted(self.checker, self.sign(self.old, kid=None))

    def test_missing(self) -> None:
        self.path.unlink()
        by_old = self.sign(self.old)
        with self.assertRaises(SecurenetError) as e:
            self.checker.prepare()
        self.assertEqual(str(e.exception), f"{self.path}: token key file does not exist")
        self.accepted(self.checker, by_old)

    def test_unreadable(self) -> None:
        self.assertRefused("{path}: token key path is a directory, not a file")

    def test_corrupt(self) -> None:
        self.assertRefused("{path}: not a PEM public key (for an HMAC secret file, say alg=HS256)", b"-----BEGIN nonsense")

    def test_other_algorithm(self) -> None:
        """A reload may not change the algorithm."""
        es256 = ec.generate_private_key(ec.SECP256R1())
        self.assertRefused("{path}: holds a P-256 (ES256) key, not an Ed25519 (EdDSA) key", pem_public(es256))

    def test_private_key(self) -> None:
        self.assertRefused(
            "{path}: is a private key; a verifier needs only the public key (the .pub file of 'securenet tokens keygen')",
            pem_private(self.new),
            0o600,
        )


class HS256CheckerTests(KeyFileTestCase):
    """alg=HS256: the secret file is checked like a private key on every reload."""

    def setUp(self) -> None:
        super().setUp()
        self.write(b"a" * 40 + b"\n", 0o600)
        self.checker = jwtCheckerFactory.generateChecker(f"key={self.path},alg=HS256,overlap=60")
        self.checker.clock = self.clock

    def token(self, secret: bytes, kid: str | None) -> str:
        now = int(self.clock.seconds())
        claims = {"sub": "alice", "jti": "j", "iat": now, "exp": now + 600, "aud": "securenet", "iss": "securenet"}
        return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid} if kid else None)

    def test_reload(self) -> None:
        old_kid = key_id(TokenKey.hmac(b"a" * 40))
        by_old = self.token(b"a" * 40, old_kid)
        self.write(b"b" * 40 + b"\n", 0o600)
        self.checker.prepare()()
        self.accepted(self.checker, self.token(b"b" * 40, None))
        self.accepted(self.checker, by_old)
        self.clock.advance(90)
        self.assertEqual(self.refused(self.checker, by_old), f"unknown kid {_short(old_kid)}")

    def test_refusals(self) -> None:
        by_old = self.token(b"a" * 40, None)
        cases = [
            (b"b" * 40, 0o644, "private key file has mode 0644; it must not be accessible by group or others"),
            (b"b" * 31, 0o600, "HS256 secret is 31 bytes; it must be at least 32 (256 bits)"),
            (pem_public(self.old), 0o600, "HS256 secret is a PEM key; an HS256 secret must not be a public or private key"),
        ]
        for data, mode, problem in cases:
            self.write(data, mode)
            before = self.checker.settings
            with self.assertRaises(SecurenetError) as e:
                self.checker.prepare()
            self.assertTrue(str(e.exception).startswith(f"{self.path}: {problem}"), str(e.exception))
            self.assertIs(self.checker.settings, before)
            self.accepted(self.checker, by_old)
