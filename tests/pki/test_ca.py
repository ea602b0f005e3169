"""
Tests for L{securenet.pki}: the CA, pins, safe loading of keys and
certificates, revocation and CRLs.

Every key is generated at run time.  RSA 3072 generation is slow, so the
suite makes one RSA key (L{rsa_key}) and shares it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial.unittest import SynchronousTestCase

from securenet._errors import SecurenetError
from securenet.pki import (
    AlreadyExists,
    CertificateAuthority,
    CertificateFacts,
    FileCorrupt,
    FileMissing,
    InsecurePermissions,
    InvalidName,
    InvalidPin,
    IssuedCertificate,
    KeyMismatch,
    NotIssuedHere,
    PKIError,
    load_ca,
    load_certificates,
    load_crl,
    load_key_pair,
    load_private_key,
    parse_pin,
    parse_san,
    pin_matches,
    revoke,
    save_ca,
    spki_pin,
    write_crl,
)
from securenet.pki._ca import read_revoked
from securenet.pki._pins import curl_pin, format_pin
from tests.support.pki import openssl, rsa_key


def der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """C{(tag, start of contents, end of element)} of the DER element at C{offset}."""
    tag = data[offset]
    length = data[offset + 1]
    pos = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    return tag, pos, pos + length


def spki_der_from_certificate(der: bytes) -> bytes:
    """
    The SubjectPublicKeyInfo element, cut out of the certificate DER by hand
    (RFC 5280 4.1), so the pin is checked against bytes cryptography did not
    re-encode.
    """
    _, certificate, _ = der_element(der, 0)
    _, field, _ = der_element(der, certificate)  # tbsCertificate's first field
    tag, _, end = der_element(der, field)
    if tag == 0xA0:  # [0] version
        field = end
    for _ in ("serialNumber", "signature", "issuer", "validity", "subject"):
        _, _, field = der_element(der, field)
    tag, _, end = der_element(der, field)
    assert tag == 0x30, "subjectPublicKeyInfo should be a SEQUENCE"
    return der[field:end]


def openssl_pin(pem: Path) -> str:
    """The pin as the usual openssl pipeline computes it."""
    tool = openssl()

    def run(args: list[str], data: bytes | None) -> bytes:
        return subprocess.run([tool, *args], input=data, capture_output=True, check=True).stdout

    public_pem = run(["x509", "-in", str(pem), "-pubkey", "-noout"], None)
    public_der = run(["pkey", "-pubin", "-outform", "der"], public_pem)
    digest = run(["dgst", "-sha256", "-binary"], public_der)
    return "sha256/" + base64.b64encode(digest).decode("ascii")


def extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class PKITestCase(SynchronousTestCase):
    """
    C{mktemp} under the system temporary directory, removed after the test:
    trial's own puts it relative to the working directory, which under pytest
    is the repository root (and these directories hold keys).
    """

    def mktemp(self) -> str:
        base = tempfile.mkdtemp(prefix="securenet-test-")
        self.addCleanup(shutil.rmtree, base, True)
        return os.path.join(base, self._testMethodName)


class CertificateAuthorityCreateTests(PKITestCase):
    """L{CertificateAuthority.create}: a self-signed CA that can sign and only sign."""

    def test_ecDefault(self) -> None:
        """The default CA key is ECDSA P-256, CA:TRUE critical, keyCertSign and cRLSign."""
        ca = CertificateAuthority.create()
        self.assertIsInstance(ca.key, ec.EllipticCurvePrivateKey)
        assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
        self.assertIsInstance(ca.key.curve, ec.SECP256R1)
        self.assertEqual(ca.certificate.public_key(), ca.key.public_key())

        bc = extension(ca.certificate, x509.BasicConstraints)
        self.assertTrue(bc.critical)
        assert isinstance(bc.value, x509.BasicConstraints)
        self.assertTrue(bc.value.ca)

        ku = extension(ca.certificate, x509.KeyUsage).value
        assert isinstance(ku, x509.KeyUsage)
        self.assertTrue(ku.key_cert_sign)
        self.assertTrue(ku.crl_sign)

        self.assertEqual(ca.certificate.subject, ca.certificate.issuer)
        ca.certificate.verify_directly_issued_by(ca.certificate)
        self.assertEqual(
            ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
            "securenet development CA",
        )

    def test_nameAndDays(self) -> None:
        """The common name and validity are the caller's."""
        ca = CertificateAuthority.create("Test Root", days=30)
        cert = ca.certificate
        self.assertEqual(cert.subject.rfc4514_string(), "CN=Test Root")
        now = datetime.datetime.now(datetime.UTC)
        remaining = cert.not_valid_after_utc - now
        self.assertTrue(
            datetime.timedelta(days=30) - datetime.timedelta(minutes=10) < remaining <= datetime.timedelta(days=30),
            remaining,
        )

    def test_rsa(self) -> None:
        """C{key_type="rsa"} means RSA 3072, and an RSA server certificate may encipher keys."""
        ca = CertificateAuthority.create(key_type="rsa")
        self.assertIsInstance(ca.key, rsa.RSAPrivateKey)
        assert isinstance(ca.key, rsa.RSAPrivateKey)
        self.assertEqual(ca.key.key_size, 3072)
        bc = extension(ca.certificate, x509.BasicConstraints).value
        assert isinstance(bc, x509.BasicConstraints)
        self.assertTrue(bc.ca)
        # Reuse the CA's key for the leaf rather than generate a second one.
        leaf = ca.issue("server", "rsa.example", key=ca.key)
        ku = extension(leaf.certificate, x509.KeyUsage).value
        assert isinstance(ku, x509.KeyUsage)
        self.assertTrue(ku.key_encipherment)
        self.assertTrue(ku.digital_signature)
        leaf.certificate.verify_directly_issued_by(ca.certificate)

    def test_badDays(self) -> None:
        """A CA valid for less than a day is refused before any key is made."""
        exc = self.assertRaises(ValueError, CertificateAuthority.create, days=0)
        self.assertEqual(str(exc), "--days must be at least 1, not 0")


class IssueTests(PKITestCase):
    """L{CertificateAuthority.issue}: server and client leaves."""

    def setUp(self) -> None:
        self.ca = CertificateAuthority.create()

    def assertEKU(self, cert: x509.Certificate, oid: x509.ObjectIdentifier) -> None:
        eku = extension(cert, x509.ExtendedKeyUsage).value
        assert isinstance(eku, x509.ExtendedKeyUsage)
        self.assertEqual(list(eku), [oid])

    def assertLeaf(self, cert: x509.Certificate) -> None:
        """Signed by the CA, not a CA, signature-only EC key usage."""
        cert.verify_directly_issued_by(self.ca.certificate)
        bc = extension(cert, x509.BasicConstraints)
        self.assertTrue(bc.critical)
        assert isinstance(bc.value, x509.BasicConstraints)
        self.assertFalse(bc.value.ca)
        ku = extension(cert, x509.KeyUsage)
        self.assertTrue(ku.critical)
        assert isinstance(ku.value, x509.KeyUsage)
        self.assertTrue(ku.value.digital_signature)
        self.assertFalse(ku.value.key_cert_sign)
        self.assertFalse(ku.value.crl_sign)
        self.assertFalse(ku.value.key_encipherment)
        aki = extension(cert, x509.AuthorityKeyIdentifier).value
        ski = extension(self.ca.certificate, x509.SubjectKeyIdentifier).value
        assert isinstance(aki, x509.AuthorityKeyIdentifier)
        assert isinstance(ski, x509.SubjectKeyIdentifier)
        self.assertEqual(aki.key_identifier, ski.digest)

    def test_server(self) -> None:
        """A server certificate: serverAuth only, 90 days, its own EC key."""
        leaf = self.ca.issue("server", "www.example")
        cert = leaf.certificate
        self.assertLeaf(cert)
        self.assertEKU(cert, ExtendedKeyUsageOID.SERVER_AUTH)
        self.assertEqual(cert.not_valid_after_utc - cert.not_valid_before_utc, datetime.timedelta(days=90))
        self.assertEqual(cert.public_key(), leaf.key.public_key())
        self.assertNotEqual(cert.public_key(), self.ca.key.public_key())
        self.assertEqual(leaf.name, "www.example")
        self.assertEqual(cert.issuer, self.ca.certificate.subject)

    def test_client(self) -> None:
        """A client certificate: clientAuth only, 365 days, no SAN unless asked."""
        cert = self.ca.issue("client", "alice").certificate
        self.assertLeaf(cert)
        self.assertEKU(cert, ExtendedKeyUsageOID.CLIENT_AUTH)
        self.assertEqual(cert.not_valid_after_utc - cert.not_valid_before_utc, datetime.timedelta(days=365))
        self.assertRaises(x509.ExtensionNotFound, extension, cert, x509.SubjectAlternativeName)

    def test_days(self) -> None:
        """C{days} overrides the default lifetime."""
        cert = self.ca.issue("server", "short.example", days=7).certificate
        self.assertEqual(cert.not_valid_after_utc - cert.not_valid_before_utc, datetime.timedelta(days=7))

    def test_serverDefaultSAN(self) -> None:
        """A server certificate without SANs is named for C{name}: DNS, or IP for an address."""
        dns = self.ca.issue("server", "db.internal").certificate
        self.assertEqual(CertificateFacts.of(dns).sans, ("DNS:db.internal",))
        ip = self.ca.issue("server", "127.0.0.1").certificate
        self.assertEqual(CertificateFacts.of(ip).sans, ("IP:127.0.0.1",))
        san = extension(ip, x509.SubjectAlternativeName).value
        assert isinstance(san, x509.SubjectAlternativeName)
        self.assertEqual(san.get_values_for_type(x509.IPAddress), [ipaddress.ip_address("127.0.0.1")])

    def test_givenSANs(self) -> None:
        """Parsed SANs of every kind go into the certificate, in order, replacing the default."""
        texts = ["DNS:localhost", "IP:127.0.0.1", "IP:::1", "URI:spiffe://example.org/svc", "email:ops@example.org"]
        cert = self.ca.issue("server", "svc", sans=[parse_san(t) for t in texts]).certificate
        self.assertEqual(
            CertificateFacts.of(cert).sans,
            ("DNS:localhost", "IP:127.0.0.1", "IP:::1", "URI:spiffe://example.org/svc", "email:ops@example.org"),
        )
        client = self.ca.issue("client", "svc", sans=[parse_san("URI:spiffe://example.org/c")]).certificate
        self.assertEqual(CertificateFacts.of(client).sans_of_kind("URI"), ("spiffe://example.org/c",))

    def test_badArguments(self) -> None:
        """Unknown kinds, empty names and lifetimes under a day are refused."""
        exc = self.assertRaises(ValueError, self.ca.issue, "server", "x", days=0)
        self.assertEqual(str(exc), "--days must be at least 1, not 0")
        self.assertRaises(ValueError, self.ca.issue, "peer", "x")
        self.assertRaises(ValueError, self.ca.issue, "client", "")


class ParseSanTests(PKITestCase):
    """L{parse_san}: C{KIND:VALUE}, or L{InvalidName} saying what is wrong."""

    def test_kinds(self) -> None:
        self.assertEqual(parse_san("DNS:example.org"), x509.DNSName("example.org"))
        self.assertEqual(parse_san("dns: example.org "), x509.DNSName("example.org"))
        self.assertEqual(parse_san("IP:10.0.0.1"), x509.IPAddress(ipaddress.ip_address("10.0.0.1")))
        self.assertEqual(parse_san("IP:2001:db8::1"), x509.IPAddress(ipaddress.ip_address("2001:db8::1")))
        self.assertEqual(parse_san("URI:spiffe://example.org/a"), x509.UniformResourceIdentifier("spiffe://example.org/a"))
        self.assertEqual(parse_san("email:a@example.org"), x509.RFC822Name("a@example.org"))

    def test_errors(self) -> None:
        cases = {
            "example.org": "--san: 'example.org' is not KIND:VALUE (DNS:, IP:, URI:, email:)",
            "DNS:": "--san: 'DNS:' is not KIND:VALUE (DNS:, IP:, URI:, email:)",
            "": "--san: '' is not KIND:VALUE (DNS:, IP:, URI:, email:)",
            "IP:300.1.1.1": "--san: '300.1.1.1' is not an IP address",
            "XX:y": "--san: unknown SAN kind 'XX' in 'XX:y' (use DNS:, IP:, URI:, email:)",
            "DNS:bücher.example": "--san: 'DNS:bücher.example' is not ASCII; encode international names as A-labels (xn--...)",
            "email:é@example.org": "--san: 'email:é@example.org' is not ASCII; encode international names as A-labels (xn--...)",
        }
        for text, message in cases.items():
            exc = self.assertRaises(InvalidName, parse_san, text)
            self.assertEqual(str(exc), message)
            self.assertIsInstance(exc, SecurenetError)


class PinTests(PKITestCase):
    """L{spki_pin}, L{parse_pin}, L{pin_matches}."""

    def test_independentComputation(self) -> None:
        """The pin is SHA-256 over the SPKI bytes exactly as they sit in the certificate."""
        ca = CertificateAuthority.create()
        for cert in (ca.certificate, ca.issue("server", "a.example").certificate):
            spki = spki_der_from_certificate(cert.public_bytes(Encoding.DER))
            expected = "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")
            self.assertEqual(spki_pin(cert), expected)

    def test_openssl(self) -> None:
        """The pin is what the openssl pipeline users are told to run gives, for EC and RSA keys."""
        ca = CertificateAuthority.create()
        directory = Path(self.mktemp())
        directory.mkdir()
        for name, leaf in [
            ("ec", ca.issue("server", "ec.example")),
            ("rsa", ca.issue("server", "rsa.example", key=rsa_key())),
        ]:
            cert_path, _ = leaf.save(directory, name)
            self.assertEqual(spki_pin(leaf.certificate), openssl_pin(cert_path))

    def test_pinFollowsKey(self) -> None:
        """A pin names a key: re-issuing for the same key keeps it, a new key changes it."""
        ca = CertificateAuthority.create()
        first = ca.issue("server", "a.example")
        again = ca.issue("server", "a.example", key=first.key)
        other = ca.issue("server", "a.example")
        self.assertEqual(spki_pin(first.certificate), spki_pin(again.certificate))
        self.assertNotEqual(spki_pin(first.certificate), spki_pin(other.certificate))

    def test_parseRoundTrip(self) -> None:
        digest = hashlib.sha256(b"key").digest()
        text = "sha256/" + base64.b64encode(digest).decode("ascii")
        self.assertEqual(parse_pin(text), digest)
        self.assertEqual(parse_pin(f"  {text}\n"), digest)
        cert = CertificateAuthority.create().certificate
        self.assertEqual(len(parse_pin(spki_pin(cert))), 32)

    def test_parseCurlSpelling(self) -> None:
        """curl's C{sha256//<base64>} (C{--pinnedpubkey}) is the same pin as C{sha256/<base64>}."""
        digest = hashlib.sha256(b"key").digest()
        encoded = base64.b64encode(digest).decode("ascii")
        self.assertEqual(parse_pin("sha256//" + encoded), digest)
        self.assertEqual(parse_pin(f" sha256//{encoded}\n"), digest)
        cert = CertificateAuthority.create().certificate
        self.assertEqual(parse_pin(curl_pin(cert)), parse_pin(spki_pin(cert)))
        self.assertEqual(curl_pin(cert), spki_pin(cert).replace("sha256/", "sha256//"))

    def test_parseDigestBeginningWithSlash(self) -> None:
        """A digest whose base64 begins with C{/} is told apart from curl's spelling by its length."""
        digest = next(d for d in (hashlib.sha256(bytes([i])).digest() for i in range(10_000)) if d[0] >> 2 == 63)
        encoded = base64.b64encode(digest).decode("ascii")
        self.assertTrue(encoded.startswith("/"))
        self.assertEqual(parse_pin("sha256/" + encoded), digest)
        self.assertEqual(parse_pin("sha256//" + encoded), digest)
        self.assertEqual(parse_pin(format_pin(digest, curl=True)), digest)

    def test_parseCurlSpellingErrors(self) -> None:
        """A malformed curl-spelled pin is refused like any other, the text quoted whole."""
        short = base64.b64encode(b"\x00" * 20).decode("ascii")
        for text, message in {
            "sha256//" + short: f"pin {'sha256//' + short!r} decodes to 20 bytes, not the 32 of SHA-256",
            "sha256///": "pin 'sha256///' is not valid base64",
        }.items():
            self.assertEqual(str(self.assertRaises(InvalidPin, parse_pin, text)), message)

    def test_parseErrors(self) -> None:
        """Each malformed pin is refused with the reason."""
        good = base64.b64encode(hashlib.sha256(b"key").digest()).decode("ascii")
        short = base64.b64encode(b"\x00" * 20).decode("ascii")
        cases = {
            good: f"pin {good!r} does not start with 'sha256/'",
            "sha1/" + good: f"pin {'sha1/' + good!r} does not start with 'sha256/'",
            "sha256/not*base64!": "pin 'sha256/not*base64!' is not valid base64",
            "sha256/" + good[:-1]: f"pin {'sha256/' + good[:-1]!r} is not valid base64",
            "sha256/" + short: f"pin {'sha256/' + short!r} decodes to 20 bytes, not the 32 of SHA-256",
            "sha256/": "pin 'sha256/' decodes to 0 bytes, not the 32 of SHA-256",
        }
        for text, message in cases.items():
            exc = self.assertRaises(InvalidPin, parse_pin, text)
            self.assertEqual(str(exc), message)

    def test_pinMatches(self) -> None:
        a, b, c = (hashlib.sha256(bytes([i])).digest() for i in range(3))
        self.assertTrue(pin_matches(a, [a]))
        self.assertTrue(pin_matches(b, [a, b, c]))
        self.assertTrue(pin_matches(c, iter([a, b, c])))
        self.assertFalse(pin_matches(c, [a, b]))
        self.assertFalse(pin_matches(a, []))
        self.assertFalse(pin_matches(a[:16], [a]))


class FileTests(PKITestCase):
    """Writing and loading keys and certificates, and what loading refuses."""

    def setUp(self) -> None:
        self.ca = CertificateAuthority.create()
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def saved(self, kind: str = "server", name: str = "server") -> tuple[IssuedCertificate, Path, Path]:
        leaf = self.ca.issue("server" if kind == "server" else "client", name)
        cert_path, key_path = leaf.save(self.dir, name)
        return leaf, cert_path, key_path

    def test_keyMode(self) -> None:
        """Key files are 0600 from creation, whatever the umask; certificates 0644."""
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        _, cert_path, key_path = self.saved()
        ca_dir = self.dir / "ca"
        ca_cert, ca_key = save_ca(self.ca, ca_dir)
        self.assertEqual(file_mode(key_path), 0o600)
        self.assertEqual(file_mode(ca_key), 0o600)
        self.assertEqual(file_mode(cert_path), 0o644)
        self.assertEqual(file_mode(ca_cert), 0o644)
        self.assertEqual((cert_path, key_path), (self.dir / "server.pem", self.dir / "server.key"))
        self.assertEqual((ca_cert, ca_key), (ca_dir / "ca.pem", ca_dir / "ca.key"))
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()), ["ca", "server.key", "server.pem"])

    def test_roundTrip(self) -> None:
        """What was saved loads back: the key pair, and the CA."""
        leaf, cert_path, key_path = self.saved()
        chain, key = load_key_pair(cert_path, key_path)
        self.assertEqual(chain, [leaf.certificate])
        self.assertEqual(key.public_key(), leaf.key.public_key())
        save_ca(self.ca, self.dir / "ca")
        loaded = load_ca(self.dir / "ca")
        self.assertEqual(loaded.certificate, self.ca.certificate)
        self.assertEqual(loaded.key.public_key(), self.ca.key.public_key())

    def test_insecureKey(self) -> None:
        """A key readable by others is refused, naming the file and its mode."""
        _, _, key_path = self.saved()
        os.chmod(key_path, 0o644)
        exc = self.assertRaises(InsecurePermissions, load_private_key, key_path)
        self.assertEqual(exc.path, key_path)
        self.assertEqual(exc.mode, 0o644)
        self.assertEqual(
            str(exc),
            f"{key_path}: private key file has mode 0644; it must not be accessible by group or others (chmod 600 {key_path})",
        )
        os.chmod(key_path, 0o640)
        self.assertEqual(self.assertRaises(InsecurePermissions, load_private_key, key_path).mode, 0o640)
        os.chmod(key_path, 0o600)
        load_private_key(key_path)

    def test_missing(self) -> None:
        """Each loader names the missing file."""
        missing = self.dir / "nope.pem"
        for load, what in [
            (load_private_key, "private key"),
            (load_certificates, "certificate"),
            (load_crl, "CRL"),
        ]:
            exc = self.assertRaises(FileMissing, load, missing)
            self.assertEqual(exc.path, missing)
            self.assertEqual(str(exc), f"{missing}: {what} file does not exist")
        exc = self.assertRaises(FileMissing, load_certificates, self.dir)
        self.assertEqual(str(exc), f"{self.dir}: certificate path is a directory, not a file")

    def test_corrupt(self) -> None:
        """Garbage, or the wrong kind of PEM, is FileCorrupt naming the file."""
        _, cert_path, key_path = self.saved()
        garbage = self.dir / "garbage"
        garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        os.chmod(garbage, 0o600)

        exc = self.assertRaises(FileCorrupt, load_certificates, garbage)
        self.assertEqual(str(exc), f"{garbage}: not a PEM certificate file (corrupt or wrong file)")
        exc = self.assertRaises(FileCorrupt, load_private_key, garbage)
        self.assertEqual(str(exc), f"{garbage}: not a PEM private key (corrupt or wrong file)")
        exc = self.assertRaises(FileCorrupt, load_crl, garbage)
        self.assertEqual(str(exc), f"{garbage}: not a PEM certificate revocation list (corrupt or wrong file)")

        # A key where a certificate belongs, and the other way round.
        exc = self.assertRaises(FileCorrupt, load_certificates, key_path)
        self.assertEqual(exc.path, key_path)
        os.chmod(cert_path, 0o600)
        exc = self.assertRaises(FileCorrupt, load_private_key, cert_path)
        self.assertEqual(exc.path, cert_path)

    def test_keyMismatch(self) -> None:
        """A certificate with someone else's key is refused, naming the key file."""
        _, cert_path, _ = self.saved("server", "server")
        _, _, other_key = self.saved("client", "client")
        exc = self.assertRaises(KeyMismatch, load_key_pair, cert_path, other_key)
        self.assertEqual(exc.path, other_key)
        self.assertEqual(str(exc), f"{other_key}: private key does not match the certificate in {cert_path}")

    def test_noOverwrite(self) -> None:
        """Saving over an existing pair is refused and changes nothing; C{overwrite} replaces both."""
        _, cert_path, key_path = self.saved()
        before = cert_path.read_bytes(), key_path.read_bytes()
        again = self.ca.issue("server", "server")
        exc = self.assertRaises(AlreadyExists, again.save, self.dir, "server")
        self.assertEqual(str(exc), f"{cert_path}: already exists; refusing to overwrite it")
        self.assertEqual((cert_path.read_bytes(), key_path.read_bytes()), before)

        again.save(self.dir, "server", overwrite=True)
        chain, key = load_key_pair(cert_path, key_path)
        self.assertEqual(chain[0], again.certificate)
        self.assertEqual(file_mode(key_path), 0o600)

    def test_noHalfPair(self) -> None:
        """
        With only NAME.pem present, saving writes no NAME.key: a new key
        beside the old certificate would be a mismatched pair.
        """
        _, cert_path, key_path = self.saved()
        key_path.unlink()
        before = cert_path.read_bytes()
        leaf = self.ca.issue("server", "server")
        self.assertRaises(AlreadyExists, leaf.save, self.dir, "server")
        self.assertFalse(key_path.exists())
        self.assertEqual(cert_path.read_bytes(), before)

    def test_saveCARefusesExisting(self) -> None:
        """An existing CA is never replaced, even when only one of its files is there."""
        directory = self.dir / "ca"
        cert_path, key_path = save_ca(self.ca, directory)
        before = cert_path.read_bytes(), key_path.read_bytes()
        other = CertificateAuthority.create()
        exc = self.assertRaises(AlreadyExists, save_ca, other, directory)
        self.assertIsInstance(exc, PKIError)
        self.assertEqual((cert_path.read_bytes(), key_path.read_bytes()), before)

        key_path.unlink()
        exc = self.assertRaises(AlreadyExists, save_ca, other, directory)
        self.assertEqual(exc.path, cert_path)
        self.assertFalse(key_path.exists())


class RevocationTests(PKITestCase):
    """L{revoke}, L{read_revoked} and L{write_crl} on a CA directory."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.ca = CertificateAuthority.create()
        save_ca(self.ca, self.dir)
        self.leaf = self.ca.issue("client", "alice")
        self.cert_path, self.key_path = self.leaf.save(self.dir, "alice")

    def serial_numbers(self, crl: x509.CertificateRevocationList) -> list[int]:
        return [r.serial_number for r in crl]

    def crl_number(self, crl: x509.CertificateRevocationList) -> int:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value
        assert isinstance(number, x509.CRLNumber)
        return number.crl_number

    def test_revokeAndCRL(self) -> None:
        """A revoked serial is listed in the next CRL, which the CA signs."""
        serial = revoke(self.dir, self.cert_path)
        self.assertEqual(serial, self.leaf.certificate.serial_number)
        self.assertEqual([s for s, _ in read_revoked(self.dir)], [serial])

        before = datetime.datetime.now(datetime.UTC)
        path = write_crl(self.dir, days=3)
        self.assertEqual(path, self.dir / "crl.pem")
        crl = load_crl(path)
        self.assertEqual(self.serial_numbers(crl), [serial])
        self.assertTrue(crl.is_signature_valid(self.ca.key.public_key()))
        self.assertEqual(crl.issuer, self.ca.certificate.subject)
        assert crl.next_update_utc is not None
        ahead = crl.next_update_utc - before
        self.assertTrue(
            datetime.timedelta(days=3) - datetime.timedelta(minutes=10) < ahead <= datetime.timedelta(days=3),
            ahead,
        )
        self.assertEqual(self.crl_number(crl), 1)

    def test_defaultDays(self) -> None:
        """Without C{days}, the next update is a week out."""
        crl = load_crl(write_crl(self.dir))
        assert crl.next_update_utc is not None and crl.last_update_utc is not None
        self.assertEqual(crl.next_update_utc - crl.last_update_utc, datetime.timedelta(days=7))
        self.assertEqual(self.serial_numbers(crl), [])

    def test_crlNumberIncrements(self) -> None:
        """Each CRL written gets the next number; revoking twice records once."""
        self.assertEqual(self.crl_number(load_crl(write_crl(self.dir))), 1)
        revoke(self.dir, self.cert_path)
        revoke(self.dir, self.cert_path)
        crl = load_crl(write_crl(self.dir))
        self.assertEqual(self.crl_number(crl), 2)
        self.assertEqual(self.serial_numbers(crl), [self.leaf.certificate.serial_number])
        self.assertEqual(self.crl_number(load_crl(write_crl(self.dir))), 3)

    def test_opensslHonoursCRL(self) -> None:
        """openssl accepts the certificate before revocation and refuses it after."""
        other = self.ca.issue("client", "bob")
        other_path, _ = other.save(self.dir, "bob")
        write_crl(self.dir)

        def verify(path: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    openssl(),
                    "verify",
                    "-crl_check",
                    "-CAfile",
                    str(self.dir / "ca.pem"),
                    "-CRLfile",
                    str(self.dir / "crl.pem"),
                    str(path),
                ],
                capture_output=True,
                text=True,
            )

        self.assertEqual(verify(self.cert_path).returncode, 0)
        revoke(self.dir, self.cert_path)
        write_crl(self.dir)
        refused = verify(self.cert_path)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("certificate revoked", refused.stdout + refused.stderr)
        self.assertEqual(verify(other_path).returncode, 0, verify(other_path).stdout)

    def test_foreignCertificate(self) -> None:
        """A certificate from another CA is refused and nothing is recorded."""
        stranger = CertificateAuthority.create().issue("client", "alice")
        path = Path(self.mktemp())
        path.mkdir()
        stranger_path, _ = stranger.save(path, "alice")
        exc = self.assertRaises(NotIssuedHere, revoke, self.dir, stranger_path)
        self.assertEqual(str(exc), f"{stranger_path}: was not issued by the CA in {self.dir}")
        self.assertFalse((self.dir / "revoked.txt").exists())

    def test_caItself(self) -> None:
        """The CA certificate is self-signed, yet a CA cannot revoke itself."""
        ca_path = self.dir / "ca.pem"
        exc = self.assertRaises(NotIssuedHere, revoke, self.dir, ca_path)
        self.assertEqual(str(exc), f"{ca_path}: is the CA certificate itself; a CA cannot revoke itself")
        self.assertFalse((self.dir / "revoked.txt").exists())

    def test_corruptRevoked(self) -> None:
        """A bad line in revoked.txt is reported by number, and no CRL is written from it."""
        serial = revoke(self.dir, self.cert_path)
        revoked = self.dir / "revoked.txt"
        revoked.write_text(revoked.read_text() + "# a comment\n\nnot-hex 2024-01-01T00:00:00+00:00\n")
        exc = self.assertRaises(FileCorrupt, read_revoked, self.dir)
        self.assertEqual(exc.path, revoked)
        self.assertEqual(str(exc), f"{revoked}: line 4 is not 'SERIAL-HEX ISO-TIME'")
        self.assertRaises(FileCorrupt, write_crl, self.dir)
        self.assertFalse((self.dir / "crl.pem").exists())

        for bad in [f"{serial:x}\n", f"{serial:x} yesterday\n", "-5 2024-01-01T00:00:00+00:00\n"]:
            revoked.write_text(bad)
            exc = self.assertRaises(FileCorrupt, read_revoked, self.dir)
            self.assertEqual(str(exc), f"{revoked}: line 1 is not 'SERIAL-HEX ISO-TIME'")
        revoked.write_bytes(b"\xff\xfe\n")
        exc = self.assertRaises(FileCorrupt, read_revoked, self.dir)
        self.assertEqual(str(exc), f"{revoked}: is not ASCII text ('SERIAL-HEX ISO-TIME' lines)")

    def test_corruptCRLNumber(self) -> None:
        """A damaged crlnumber file stops write_crl rather than restart numbering."""
        write_crl(self.dir)
        before = (self.dir / "crl.pem").read_bytes()
        (self.dir / "crlnumber").write_text("two\n")
        exc = self.assertRaises(FileCorrupt, write_crl, self.dir)
        self.assertEqual(str(exc), f"{self.dir / 'crlnumber'}: is not a CRL number (one decimal integer)")
        self.assertEqual((self.dir / "crl.pem").read_bytes(), before)

    def test_badDays(self) -> None:
        exc = self.assertRaises(ValueError, write_crl, self.dir, days=0)
        self.assertEqual(str(exc), "--days must be at least 1, not 0")
        self.assertFalse((self.dir / "crl.pem").exists())


class CertificateFactsCacheTests(SynchronousTestCase):
    def test_equalCertificatesShareFacts(self) -> None:
        """Facts are computed once per certificate: two parses of the same DER get the same object."""
        from cryptography import x509 as _x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from securenet.pki._ca import CertificateAuthority
        from securenet.pki._facts import CertificateFacts

        ca = CertificateAuthority.create("cache test CA")
        der = ca.issue("client", "cached").certificate.public_bytes(Encoding.DER)
        first, second = _x509.load_der_x509_certificate(der), _x509.load_der_x509_certificate(der)
        self.assertIsNot(first, second)
        self.assertIs(CertificateFacts.of(first), CertificateFacts.of(second))
        self.assertEqual(CertificateFacts.of(first).common_name, "cached")
