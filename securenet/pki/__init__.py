"""
The PKI layer: a small CA, safe loading of keys and certificates (also
the keys that sign and verify tokens), SPKI pins.
"""

from securenet.pki._ca import (
    CertificateAuthority,
    IssuedCertificate,
    generate_private_key,
    load_ca,
    parse_san,
    revoke,
    save_ca,
    write_crl,
)
from securenet.pki._errors import (
    AlreadyExists,
    FileCorrupt,
    FileMissing,
    InsecurePermissions,
    InvalidName,
    KeyMismatch,
    NotIssuedHere,
    PKIError,
)
from securenet.pki._facts import CertificateFacts
from securenet.pki._files import load_certificates, load_crl, load_key_pair, load_private_key
from securenet.pki._pins import InvalidPin, parse_pin, pin_matches, spki_pin
from securenet.pki._tokenkeys import (
    ALGORITHMS,
    InvalidTokenKey,
    InvalidTokenSettings,
    TokenKey,
    generate_secret,
    generate_signing_key,
    key_id,
    load_signing_key,
    load_verification_key,
)

__all__ = [
    "ALGORITHMS",
    "InvalidTokenKey",
    "InvalidTokenSettings",
    "TokenKey",
    "generate_secret",
    "generate_signing_key",
    "key_id",
    "load_signing_key",
    "load_verification_key",
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
