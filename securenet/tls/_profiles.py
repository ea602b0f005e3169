"""
Named TLS profiles, after Mozilla's server-side TLS recommendations (v5.7).

C{intermediate} (the default): TLS 1.2 and 1.3, ECDHE key exchange with AEAD
suites only, groups X25519 / P-256 / P-384.  C{modern}: TLS 1.3 only.

Twisted's C{CertificateOptions} defaults fail "intermediate" (CBC and CCM
suites, X448 and secp521r1 groups) and allow client renegotiation; these
profiles are what we use instead.
"""

from __future__ import annotations

import attrs
from OpenSSL import SSL

from securenet import _metrics
from securenet.tls._errors import TLSConfigurationError

# TLS 1.2 suites of Mozilla "intermediate", less the DHE ones: we never
# configure finite-field DH parameters, so only ECDHE suites are offered.
_INTERMEDIATE_TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)

_GROUPS = ("X25519", "P-256", "P-384")

# The metrics' closed set of ciphers: these and the TLS 1.3 suites.
_metrics.allow("cipher", _INTERMEDIATE_TLS12_CIPHERS.split(":"))


@attrs.frozen
class TLSProfile:
    """A named set of protocol versions, cipher suites and groups."""

    name: str
    min_version: int
    max_version: int
    tls12_ciphers: str
    groups: tuple[str, ...]


INTERMEDIATE = TLSProfile(
    name="intermediate",
    min_version=SSL.TLS1_2_VERSION,
    max_version=SSL.TLS1_3_VERSION,
    tls12_ciphers=_INTERMEDIATE_TLS12_CIPHERS,
    groups=_GROUPS,
)

MODERN = TLSProfile(
    name="modern",
    min_version=SSL.TLS1_3_VERSION,
    max_version=SSL.TLS1_3_VERSION,
    # TLS 1.2 is disabled; the list only matters if it were enabled.
    tls12_ciphers=_INTERMEDIATE_TLS12_CIPHERS,
    groups=_GROUPS,
)

PROFILES: dict[str, TLSProfile] = {p.name: p for p in (INTERMEDIATE, MODERN)}


def profile_named(name: str) -> TLSProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise TLSConfigurationError(f"unknown TLS profile {name!r}; choose one of: {', '.join(PROFILES)}") from None
