"""
The keys that sign and verify tokens: L{TokenKey} (one key bound to one
algorithm: EdDSA, ES256 or HS256), and reading them from files with the same
rules as every other key file (mode 0600, clear errors naming the file).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Literal, cast

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from securenet._errors import SecurenetError
from securenet.pki._errors import FileCorrupt, PKIError
from securenet.pki._files import check_key_permissions, load_private_key, read_file

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
SigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
#: The longest C{sub}, C{jti} or C{kid} accepted.
MAX_NAME_LENGTH = 256

Algorithm = Literal["EdDSA", "ES256", "HS256"]

#: Every algorithm a key may be configured for.  Never C{none}; no RSA.
ALGORITHMS: tuple[Algorithm, ...] = ("EdDSA", "ES256", "HS256")

#: RFC 7518 section 3.2: an HS256 key must be at least as long as the hash.
MIN_HMAC_KEY_BYTES = 32


# -- errors ------------------------------------------------------------------


class InvalidTokenSettings(SecurenetError, ValueError):
    """A token key or setting was refused at construction (the message says why)."""


class InvalidTokenKey(PKIError):
    """A token key file cannot be used as asked (wrong type, too short, ...)."""


# -- keys and settings ---------------------------------------------------------


def _algorithm_of(key: object) -> Algorithm:
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return "EdDSA"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidTokenSettings(f"ES256 needs a P-256 key, not {key.curve.name}")
        return "ES256"
    raise InvalidTokenSettings(
        f"unsupported token key type {type(key).__name__}; use Ed25519 (EdDSA), P-256 (ES256) or an HS256 secret"
    )


def _public_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_kid(kid: str | None) -> str | None:
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_NAME_LENGTH or not kid.isprintable()):
        raise InvalidTokenSettings(f"invalid kid {kid!r}: a kid is 1-{MAX_NAME_LENGTH} printable characters")
    return kid


@attrs.frozen
class TokenKey:
    """
    One key of the configured key set, bound to exactly one algorithm.

    Use the constructors L{hmac}, L{public} and L{private}; inconsistent
    combinations are refused at construction.

    @ivar algorithm: C{EdDSA} (Ed25519), C{ES256} (P-256) or C{HS256}.
    @ivar verification_key: the public key, or for HS256 the secret.
    @ivar signing_key: the private key (for HS256 the secret again), or None
        for a verify-only key.
    @ivar kid: the name tokens use to select this key, or None for the key
        used by tokens without a C{kid}.
    """

    algorithm: Algorithm
    verification_key: PublicKey | bytes = attrs.field(repr=False)
    signing_key: SigningKey | bytes | None = attrs.field(default=None, repr=False)
    kid: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_kid(self.kid)
        if self.algorithm not in ALGORITHMS:
            raise InvalidTokenSettings(
                f"token algorithm {self.algorithm!r} is not allowed; choose one of {', '.join(ALGORITHMS)}"
            )
        if self.algorithm == "HS256":
            secret = self.verification_key
            if not isinstance(secret, bytes):
                raise InvalidTokenSettings("an HS256 key is a secret (bytes), not a public key")
            if len(secret) < MIN_HMAC_KEY_BYTES:
                raise InvalidTokenSettings(
                    f"HS256 secret is {len(secret)} bytes; it must be at least {MIN_HMAC_KEY_BYTES} (256 bits)"
                )
            if secret.lstrip().startswith(b"-----BEGIN"):
                raise InvalidTokenSettings("HS256 secret is a PEM key; an HS256 secret must not be a public or private key")
            if self.signing_key is not None and self.signing_key != secret:
                raise InvalidTokenSettings("an HS256 key signs and verifies with the same secret")
            return
        public = self.verification_key
        if isinstance(public, bytes) or _algorithm_of(public) != self.algorithm:
            raise InvalidTokenSettings(f"the verification key is not an {self.algorithm} public key")
        if self.signing_key is not None:
            private = self.signing_key
            if isinstance(private, bytes) or _algorithm_of(private) != self.algorithm:
                raise InvalidTokenSettings(f"the signing key is not an {self.algorithm} private key")
            if _public_der(private.public_key()) != _public_der(public):
                raise InvalidTokenSettings("the signing key does not match the verification key")

    @classmethod
    def hmac(cls, secret: bytes, *, kid: str | None = None) -> TokenKey:
        """An HS256 key: C{secret} must be at least 32 bytes."""
        return cls("HS256", secret, secret, kid)

    @classmethod
    def public(cls, key: PublicKey, *, kid: str | None = None) -> TokenKey:
        """A verify-only key; the algorithm follows from the key type."""
        return cls(_algorithm_of(key), key, None, kid)

    @classmethod
    def private(cls, key: SigningKey, *, kid: str | None = None) -> TokenKey:
        """A key that can issue and verify; the algorithm follows from the key type."""
        return cls(_algorithm_of(key), key.public_key(), key, kid)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


#: What an HS256 key id is computed with (see L{key_id}).
_HMAC_KID_LABEL = b"securenet token key id"


def key_id(key: TokenKey) -> str:
    """
    The C{kid} a key goes by when it is named by its content (what a key
    file reloaded with rotation needs: the same file gives the same kid
    after a restart, a new key a new one).

    For EdDSA and ES256 it is the key's RFC 7638 JWK thumbprint (SHA-256,
    base64url), which anyone holding the public key can compute.  For
    HS256 it is an HMAC-SHA256 of a fixed label keyed with the secret: it
    tells nothing about the secret that a token's own HMAC signature does
    not (the JWK thumbprint of an C{oct} key would be a hash of the bare
    secret).
    """
    public = key.verification_key
    if isinstance(public, bytes):
        return _b64(hmac.new(public, _HMAC_KID_LABEL, hashlib.sha256).digest())
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
    else:
        numbers = public.public_numbers()
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")
    return _b64(hashlib.sha256(canonical).digest())


# -- key files -----------------------------------------------------------------


def _choose(algorithm: str | None) -> Algorithm | None:
    if algorithm is None:
        return None
    if algorithm not in ALGORITHMS:
        raise InvalidTokenSettings(f"token algorithm {algorithm!r} is not allowed; choose one of {', '.join(ALGORITHMS)}")
    return algorithm


def _hmac_from_file(path: Path, data: bytes, kid: str | None) -> TokenKey:
    """
    An HS256 secret file: its bytes, surrounding whitespace stripped, are
    the secret.  Checked like a private key: mode 0600.
    """
    check_key_permissions(path)
    try:
        return TokenKey.hmac(data.strip(), kid=kid)
    except InvalidTokenSettings as e:
        raise InvalidTokenKey(path, str(e)) from None


def _kind(algorithm: Algorithm) -> str:
    return {"EdDSA": "an Ed25519 (EdDSA)", "ES256": "a P-256 (ES256)", "HS256": "an HS256"}[algorithm]


def load_verification_key(path: str | os.PathLike[str], algorithm: str | None = None, *, kid: str | None = None) -> TokenKey:
    """
    The key a verifier needs (what C{--auth jwt:key=PATH} names): a PEM
    public key (the algorithm follows from it; C{algorithm}, if given, must
    agree), or with C{algorithm="HS256"} a secret file of mode 0600.  An
    HS256 secret is never guessed from a file that is not a PEM key: HS256
    must be asked for.
    """
    path = Path(path)
    alg = _choose(algorithm)
    data = read_file(path, "token key")
    if alg == "HS256":
        return _hmac_from_file(path, data, kid)
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        if b"PRIVATE KEY-----" in data:
            raise InvalidTokenKey(
                path, "is a private key; a verifier needs only the public key (the .pub file of 'securenet tokens keygen')"
            ) from None
        raise FileCorrupt(path, "not a PEM public key (for an HMAC secret file, say alg=HS256)") from None
    try:
        key = TokenKey.public(cast(PublicKey, public), kid=kid)
    except InvalidTokenSettings as e:
        raise InvalidTokenKey(path, str(e)) from None
    if alg is not None and key.algorithm != alg:
        raise InvalidTokenKey(path, f"holds {_kind(key.algorithm)} key, not {_kind(alg)} key")
    return key


def load_signing_key(path: str | os.PathLike[str], algorithm: str | None = None, *, kid: str | None = None) -> TokenKey:
    """
    The key an issuer needs: a PEM private key (mode 0600, algorithm from
    its type) or an HS256 secret file (mode 0600).
    """
    path = Path(path)
    alg = _choose(algorithm)
    data = read_file(path, "token key")
    if b"-----BEGIN" not in data:
        if alg not in (None, "HS256"):
            raise FileCorrupt(path, f"not a PEM private key ({alg} needs one)")
        return _hmac_from_file(path, data, kid)
    if alg == "HS256":
        raise InvalidTokenKey(path, "is a PEM key, not an HS256 secret")
    if b"-----BEGIN PUBLIC KEY-----" in data:
        raise InvalidTokenKey(path, "is a public key; issuing tokens needs the private key")
    private = load_private_key(path)
    try:
        key = TokenKey.private(cast(SigningKey, private), kid=kid)
    except InvalidTokenSettings as e:
        raise InvalidTokenKey(path, str(e)) from None
    if alg is not None and key.algorithm != alg:
        raise InvalidTokenKey(path, f"holds {_kind(key.algorithm)} key, not {_kind(alg)} key")
    return key


def generate_secret() -> bytes:
    """A fresh HS256 secret as stored in a key file: 384 random bits, URL-safe text."""
    return secrets.token_urlsafe(48).encode("ascii")


def generate_signing_key(algorithm: str) -> SigningKey | bytes:
    """A fresh key for C{algorithm}: an Ed25519 or P-256 private key, or an HS256 secret."""
    alg = _choose(algorithm)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return generate_secret()
