"""
The PKI layer: a small CA, safe loading of keys and certificates, SPKI pins.
"""

from securenet.pki.ca import (
    CertificateAuthority,
    IssuedCertificate,
    generate_private_key,
    load_ca,
    parse_san,
    revoke,
    save_ca,
    write_crl,
)
from securenet.pki.errors import (
    AlreadyExists,
    FileCorrupt,
    FileMissing,
    InsecurePermissions,
    InvalidName,
    KeyMismatch,
    NotIssuedHere,
    PKIError,
)
from securenet.pki.facts import CertificateFacts
from securenet.pki.files import load_certificates, load_crl, load_key_pair, load_private_key
from securenet.pki.pins import InvalidPin, parse_pin, pin_matches, spki_pin

__all__ = [
    "AlreadyExists",
    "CertificateAuthority",
    "CertificateFacts",
    "FileCorrupt",
    "FileMissing",
    "InsecurePermissions",
    "InvalidName",
    "InvalidPin",
    "IssuedCertificate",
    "KeyMismatch",
    "NotIssuedHere",
    "PKIError",
    "generate_private_key",
    "load_ca",
    "load_certificates",
    "load_crl",
    "load_key_pair",
    "load_private_key",
    "parse_pin",
    "parse_san",
    "pin_matches",
    "revoke",
    "save_ca",
    "spki_pin",
    "write_crl",
]
