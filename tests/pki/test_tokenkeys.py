"""
Tests for L{securenet.pki.key_id}: the kid a token key goes by when it is
named by its content.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from twisted.trial.unittest import SynchronousTestCase

from securenet.pki import TokenKey, key_id


def thumbprint(jwk: dict[str, str], members: tuple[str, ...]) -> str:
    """RFC 7638 section 3, from a JWK PyJWT wrote: the required members, sorted, no whitespace, SHA-256, base64url."""
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


class KeyIdTests(SynchronousTestCase):
    def test_eddsa_is_the_jwk_thumbprint(self) -> None:
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
        expected = thumbprint(jwk, ("crv", "kty", "x"))
        self.assertEqual(key_id(TokenKey.private(private)), expected)
        self.assertEqual(key_id(TokenKey.public(private.public_key())), expected)

    def test_es256_is_the_jwk_thumbprint(self) -> None:
        for _ in range(8):  # coordinates with leading zero bytes keep their 32 bytes
            private = ec.generate_private_key(ec.SECP256R1())
            jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
            self.assertEqual(key_id(TokenKey.private(private)), thumbprint(jwk, ("crv", "kty", "x", "y")))

    def test_hs256_is_keyed(self) -> None:
        """An HS256 kid is stable, differs between secrets, and is not a bare hash of the secret."""
        secret = b"s" * 40
        kid = key_id(TokenKey.hmac(secret))
        self.assertEqual(kid, key_id(TokenKey.hmac(secret)))
        self.assertNotEqual(kid, key_id(TokenKey.hmac(b"t" * 40)))
        self.assertNotEqual(
            kid, thumbprint({"k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode(), "kty": "oct"}, ("k", "kty"))
        )

    def test_different_keys_different_ids(self) -> None:
        ids = {key_id(TokenKey.private(ed25519.Ed25519PrivateKey.generate())) for _ in range(16)}
        self.assertEqual(len(ids), 16)
