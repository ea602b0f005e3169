"""
SPKI pins in the RFC 7469 / OkHttp form: C{sha256/<base64 of the SHA-256 of
the SubjectPublicKeyInfo DER>}.  curl's C{--pinnedpubkey} spells the same
pin C{sha256//<base64>}; L{parse_pin} accepts both, L{curl_pin} writes
curl's.

A pin names a public key, not a certificate, so it survives re-issuing a
certificate for the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PIN_PREFIX = "sha256/"

#: curl's spelling of the prefix (C{--pinnedpubkey sha256//<base64>}).
CURL_PIN_PREFIX = "sha256//"

#: The length of a SHA-256 digest in base64 (with its one C{=}).
_DIGEST_BASE64_LENGTH = 44


class InvalidPin(ValueError):
    """A string is not a well-formed C{sha256/...} pin."""


def spki_digest(certificate: x509.Certificate) -> bytes:
    """The SHA-256 digest of C{certificate}'s SubjectPublicKeyInfo DER."""
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def format_pin(digest: bytes, *, curl: bool = False) -> str:
    """C{sha256/<base64>}, or with C{curl} C{sha256//<base64>}."""
    return (CURL_PIN_PREFIX if curl else PIN_PREFIX) + base64.b64encode(digest).decode("ascii")


def spki_pin(certificate: x509.Certificate) -> str:
    """The pin of C{certificate}'s public key, as C{sha256/...}."""
    return format_pin(spki_digest(certificate))


def curl_pin(certificate: x509.Certificate) -> str:
    """The pin of C{certificate}'s public key as curl's C{--pinnedpubkey} wants it, C{sha256//...}."""
    return format_pin(spki_digest(certificate), curl=True)


def parse_pin(text: str) -> bytes:
    """
    Parse C{sha256/<base64>} (or curl's C{sha256//<base64>}) into the
    32-byte digest.

    The two spellings cannot be confused: a digest is 44 base64 characters,
    so 45 characters after C{sha256/} that begin with C{/} are curl's
    spelling, and 44 are a digest (whose base64 may itself begin with C{/}).

    @raise InvalidPin: with the reason, for any other input.
    """
    text = text.strip()
    if not text.startswith(PIN_PREFIX):
        raise InvalidPin(f"pin {text!r} does not start with {PIN_PREFIX!r}")
    encoded = text[len(PIN_PREFIX) :]
    if text.startswith(CURL_PIN_PREFIX) and len(encoded) != _DIGEST_BASE64_LENGTH:
        encoded = encoded[1:]
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPin(f"pin {text!r} is not valid base64") from None
    if len(digest) != 32:
        raise InvalidPin(f"pin {text!r} decodes to {len(digest)} bytes, not the 32 of SHA-256")
    return digest


def pin_matches(digest: bytes, pins: Iterable[bytes]) -> bool:
    """
    Whether C{digest} is one of C{pins}, comparing each in constant time and
    always comparing against every pin (no early exit that leaks which one).
    """
    found = False
    for pin in pins:
        found |= hmac.compare_digest(digest, pin)
    return found
