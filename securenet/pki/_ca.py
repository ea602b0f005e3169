"""
A small certificate authority: the development PKI behind C{securenet pki}
and the ephemeral PKI that tests build per run.

In memory, L{CertificateAuthority} creates and signs; L{save_ca},
L{load_ca}, L{IssuedCertificate.save}, L{revoke} and L{write_crl} put it on
disk in a directory laid out as::

    DIR/ca.pem  DIR/ca.key  DIR/NAME.pem  DIR/NAME.key  DIR/revoked.txt  DIR/crl.pem
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securenet.pki._errors import AlreadyExists, FileCorrupt, InvalidName, NotIssuedHere
from securenet.pki._files import PrivateKey, load_certificates, load_key_pair, write_certificates, write_private_key

KeyType = Literal["ec", "rsa"]
Kind = Literal["server", "client"]

#: Mozilla's recommendation for server certificates (and the "modern"
#: profile's maximum lifespan).
DEFAULT_SERVER_DAYS = 90
DEFAULT_CLIENT_DAYS = 365
DEFAULT_CA_DAYS = 3650
DEFAULT_CRL_DAYS = 7


def generate_private_key(key_type: KeyType = "ec") -> PrivateKey:
    """ECDSA P-256 (the default) or RSA 3072."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unknown key type {key_type!r}; use 'ec' or 'rsa'")


def parse_san(text: str) -> x509.GeneralName:
    """
    Parse one subject alternative name: C{DNS:name}, C{IP:addr},
    C{URI:spiffe://...} or C{email:addr}.
    """
    kind, sep, value = text.partition(":")
    kind = kind.strip().upper()
    value = value.strip()
    if not sep or not value:
        raise InvalidName(Path("--san"), f"{text!r} is not KIND:VALUE (DNS:, IP:, URI:, email:)")
    if kind == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            raise InvalidName(Path("--san"), f"{value!r} is not an IP address") from None
    text_kinds: dict[str, type[x509.DNSName | x509.UniformResourceIdentifier | x509.RFC822Name]] = {
        "DNS": x509.DNSName,
        "URI": x509.UniformResourceIdentifier,
        "EMAIL": x509.RFC822Name,
    }
    if kind in text_kinds:
        try:
            return text_kinds[kind](value)
        except ValueError:
            # cryptography refuses non-ASCII (U-label) values.
            raise InvalidName(Path("--san"), f"{text!r} is not ASCII; encode international names as A-labels (xn--...)") from None
    raise InvalidName(Path("--san"), f"unknown SAN kind {kind!r} in {text!r} (use DNS:, IP:, URI:, email:)")


def default_server_sans(name: str) -> list[x509.GeneralName]:
    """A server named C{name} gets C{IP:name} if it is an address, else C{DNS:name}."""
    try:
        return [x509.IPAddress(ipaddress.ip_address(name))]
    except ValueError:
        return [x509.DNSName(name)]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _sign_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise AlreadyExists(path, "already exists; refusing to overwrite it")


@attrs.frozen
class IssuedCertificate:
    """A leaf certificate, its key, and the chain up to (not including) the root."""

    certificate: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def name(self) -> str:
        cns = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(cns[0].value) if cns else ""

    def save(self, directory: Path, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
        """Write C{DIR/NAME.pem} (leaf + chain) and C{DIR/NAME.key} (mode 0600)."""
        cert_path = directory / f"{name}.pem"
        key_path = directory / f"{name}.key"
        if not overwrite:
            # Check both before writing either: a new key beside an old
            # certificate would be a mismatched pair.
            _refuse_existing(cert_path, key_path)
        write_private_key(key_path, self.key, overwrite=overwrite)
        write_certificates(cert_path, [self.certificate, *self.chain], overwrite=overwrite)
        return cert_path, key_path


@attrs.frozen
class CertificateAuthority:
    """A CA certificate and its key, able to issue leaves and CRLs."""

    certificate: x509.Certificate
    key: PrivateKey

    @classmethod
    def create(
        cls,
        common_name: str = "securenet development CA",
        *,
        key_type: KeyType = "ec",
        days: int = DEFAULT_CA_DAYS,
    ) -> CertificateAuthority:
        if days < 1:
            raise ValueError(f"--days must be at least 1, not {days}")
        key = generate_private_key(key_type)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, _sign_hash(key))
        )
        return cls(cert, key)

    def issue(
        self,
        kind: Kind,
        name: str,
        *,
        sans: Sequence[x509.GeneralName] | None = None,
        days: int | None = None,
        key_type: KeyType = "ec",
        key: PrivateKey | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> IssuedCertificate:
        """
        Issue a server or client certificate for C{name} (its subject CN).

        Server certificates get C{serverAuth} and at least one SAN (derived from
        C{name} when none is given); client certificates get C{clientAuth}.
        C{not_before}/C{not_after} override C{days} (tests use them to make
        expired and not-yet-valid certificates).
        """
        if kind not in ("server", "client"):
            raise ValueError(f"unknown certificate kind {kind!r}; use 'server' or 'client'")
        if not name:
            raise ValueError("a certificate needs a non-empty name")
        if key is None:
            key = generate_private_key(key_type)
        if days is None:
            days = DEFAULT_SERVER_DAYS if kind == "server" else DEFAULT_CLIENT_DAYS
        if days < 1:
            raise ValueError(f"--days must be at least 1, not {days}")
        san_list = list(sans or [])
        if kind == "server" and not san_list:
            san_list = default_server_sans(name)
        start = not_before if not_before is not None else _now() - datetime.timedelta(minutes=5)
        end = not_after if not_after is not None else start + datetime.timedelta(days=days)
        is_rsa = isinstance(key, rsa.RSAPrivateKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=is_rsa and kind == "server",
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if san_list:
            builder = builder.add_extension(x509.SubjectAlternativeName(san_list), critical=False)
        cert = builder.sign(self.key, _sign_hash(self.key))
        return IssuedCertificate(cert, key)

    def issued(self, certificate: x509.Certificate) -> bool:
        """Whether C{certificate} carries this CA's signature."""
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, Exception):
            return False
        return True

    def crl(
        self,
        revoked: Sequence[tuple[int, datetime.datetime]],
        *,
        days: int = DEFAULT_CRL_DAYS,
        number: int = 1,
        last_update: datetime.datetime | None = None,
        next_update: datetime.datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL listing C{(serial, revoked_at)} pairs, valid for C{days}."""
        last = last_update if last_update is not None else _now() - datetime.timedelta(minutes=5)
        nxt = next_update if next_update is not None else last + datetime.timedelta(days=days)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(last)
            .next_update(nxt)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(self.key, _sign_hash(self.key))


# -- on disk -----------------------------------------------------------------


def save_ca(ca: CertificateAuthority, directory: Path) -> tuple[Path, Path]:
    """Write C{DIR/ca.pem} and C{DIR/ca.key}; refuses to overwrite an existing CA."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "ca.key"
    cert_path = directory / "ca.pem"
    _refuse_existing(cert_path, key_path)
    write_private_key(key_path, ca.key)
    write_certificates(cert_path, [ca.certificate])
    return cert_path, key_path


def load_ca(directory: Path) -> CertificateAuthority:
    chain, key = load_key_pair(directory / "ca.pem", directory / "ca.key")
    return CertificateAuthority(chain[0], key)


REVOKED_FILE = "revoked.txt"
CRL_FILE = "crl.pem"
CRL_NUMBER_FILE = "crlnumber"


def read_revoked(directory: Path) -> list[tuple[int, datetime.datetime]]:
    """The revocations recorded in C{DIR/revoked.txt} (C{serial-hex ISO-time} lines)."""
    path = directory / REVOKED_FILE
    if not path.exists():
        return []
    try:
        text = path.read_text("ascii")
    except UnicodeDecodeError:
        raise FileCorrupt(path, "is not ASCII text ('SERIAL-HEX ISO-TIME' lines)") from None
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            serial_hex, when = line.split()
            serial = int(serial_hex, 16)
            if serial < 1:
                raise ValueError(serial)
            entries.append((serial, datetime.datetime.fromisoformat(when)))
        except ValueError:
            raise FileCorrupt(path, f"line {lineno} is not 'SERIAL-HEX ISO-TIME'") from None
    return entries


def revoke(directory: Path, certificate_path: Path) -> int:
    """
    Record the revocation of the certificate in C{certificate_path}.

    @return: its serial number.
    @raise NotIssuedHere: if this CA did not issue it.
    """
    ca = load_ca(directory)
    cert = load_certificates(certificate_path)[0]
    if cert == ca.certificate:
        # Self-signed, so issued() says yes; but a CA listing itself in its own
        # CRL means nothing to a verifier.
        raise NotIssuedHere(certificate_path, "is the CA certificate itself; a CA cannot revoke itself")
    if not ca.issued(cert):
        raise NotIssuedHere(certificate_path, f"was not issued by the CA in {directory}")
    if any(serial == cert.serial_number for serial, _ in read_revoked(directory)):
        return cert.serial_number
    with open(directory / REVOKED_FILE, "a", encoding="ascii") as f:
        f.write(f"{cert.serial_number:x} {_now().isoformat()}\n")
    return cert.serial_number


def _read_crl_number(path: Path) -> int:
    """The number of the last CRL written (0 if none)."""
    if not path.exists():
        return 0
    try:
        number = int(path.read_text("ascii").strip() or "0")
    except (ValueError, UnicodeDecodeError):
        raise FileCorrupt(path, "is not a CRL number (one decimal integer)") from None
    if number < 0:
        raise FileCorrupt(path, "is not a CRL number (one decimal integer)")
    return number


def write_crl(directory: Path, *, days: int = DEFAULT_CRL_DAYS) -> Path:
    """Write C{DIR/crl.pem} listing every recorded revocation, with a next-update."""
    if days < 1:
        raise ValueError(f"--days must be at least 1, not {days}")
    ca = load_ca(directory)
    number_path = directory / CRL_NUMBER_FILE
    number = _read_crl_number(number_path) + 1
    crl = ca.crl(read_revoked(directory), days=days, number=number)
    path = directory / CRL_FILE
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(crl.public_bytes(Encoding.PEM))
    os.replace(tmp, path)
    number_path.write_text(f"{number}\n")
    return path
