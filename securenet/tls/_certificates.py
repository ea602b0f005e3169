"""
pyOpenSSL's certificates as C{cryptography} certificates, converted once.

pyOpenSSL gives verification callbacks and handshake queries its own
C{X509} objects.  Converting one (DER out, parse in) on every connection was
a visible share of a server's CPU per new connection in the benchmark, and
gave every connection its own copy of the same client certificate.  Here a
conversion is looked up by the certificate's exact DER bytes, so the same
certificate is parsed once and shared (certificates are immutable); the
cache is bounded.
"""

from __future__ import annotations

import functools

from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_ASN1, X509, dump_certificate


@functools.lru_cache(maxsize=1024)
def _from_der(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def as_cryptography(certificate: X509) -> x509.Certificate:
    """C{certificate} as a C{cryptography} certificate (one shared object per DER encoding)."""
    return _from_der(dump_certificate(FILETYPE_ASN1, certificate))


def peer_certificate(connection: SSL.Connection) -> x509.Certificate | None:
    """The certificate the peer of C{connection} presented, if any."""
    certificate = connection.get_peer_certificate()
    return as_cryptography(certificate) if certificate is not None else None


def own_certificate(connection: SSL.Connection) -> x509.Certificate | None:
    """The certificate this end of C{connection} presented, if any."""
    certificate = connection.get_certificate()
    return as_cryptography(certificate) if certificate is not None else None


def verified_chain(connection: SSL.Connection) -> tuple[x509.Certificate, ...]:
    """The peer's chain as verification built it (leaf first), or () if none."""
    chain = connection.get_verified_chain()
    return tuple(as_cryptography(c) for c in chain) if chain else ()
