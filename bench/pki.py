"""The benchmark's certificates: one EphemeralPKI, written to a temporary directory."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from securenet.testing import EphemeralPKI

#: The client certificate's name (its CN is the EXTERNAL identity).
CLIENT = "bench"


def _self_signed(key, name: str) -> bytes:  # type: ignore[no-untyped-def]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def write_pki(directory: Path) -> Path:
    """
    DIR/ca.pem, server.pem/.key (localhost, 127.0.0.1), bench.pem/.key (the
    client); ECDSA P-256.  Foolscap pins self-signed certificates (its TubID is
    the certificate's digest): foolscap-server.pem and foolscap-client.pem are
    self-signed certificates of the same two keys.
    """
    pki = EphemeralPKI.create()
    client = pki.client(CLIENT)
    pki.save(directory)
    for name, issued in (("foolscap-server", pki.server), ("foolscap-client", client)):
        key_pem = issued.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = directory / f"{name}.pem"
        path.touch(mode=0o600)
        path.write_bytes(_self_signed(issued.key, name) + key_pem)
    return directory
