"""
Tests for C{securenet pki ...}: each subcommand's output, and for each bad
input the exact one-line error, exit code 1, and files left as they were.

Most run L{securenet.cli.main} in-process; one runs the installed console
script and checks its work with openssl, as a user would.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

import securenet.pki._ca
from securenet.pki import (
    CertificateAuthority,
    CertificateFacts,
    load_ca,
    load_certificates,
    load_crl,
    load_key_pair,
    parse_pin,
    spki_pin,
)
from securenet.pki._ca import KeyType, generate_private_key
from securenet.pki._files import PrivateKey
from tests.pki import test_ca as test_pki
from tests.support import CLIResult, run_cli
from tests.support.pki import openssl, rsa_key

REPO = Path(__file__).resolve().parent.parent.parent


Result = CLIResult
run = run_cli


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file in C{directory} and its bytes: compared to prove nothing changed."""
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    value = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert isinstance(value, x509.ExtendedKeyUsage)
    return list(value)


class CLITestCase(test_pki.PKITestCase):
    """Helpers: a CA directory, and assertions on results."""

    def ca_dir(self) -> Path:
        directory = Path(self.mktemp())
        self.assertOK(run("pki", "init", "--dir", directory))
        return directory

    def assertOK(self, result: Result) -> Result:
        self.assertEqual((result.code, result.err), (0, ""), result)
        return result

    def assertFails(self, result: Result, message: str) -> None:
        """Exit 1, nothing on stdout, and exactly C{securenet: error: MESSAGE} on stderr."""
        self.assertEqual(result, Result(1, "", f"securenet: error: {message}\n"))

    def use_cached_rsa(self) -> list[KeyType]:
        """
        Make C{--key-type rsa} use the run's one RSA 3072 key (generating one
        per test would be slow); returns the key types asked for.
        """
        asked: list[KeyType] = []

        def generate(key_type: KeyType = "ec") -> PrivateKey:
            asked.append(key_type)
            return rsa_key() if key_type == "rsa" else generate_private_key(key_type)

        self.patch(securenet.pki._ca, "generate_private_key", generate)
        return asked


class InitTests(CLITestCase):
    """C{securenet pki init}."""

    def test_init(self) -> None:
        """Writes ca.pem and ca.key (0600), says so; an EC P-256 CA by default."""
        directory = Path(self.mktemp())
        result = self.assertOK(run("pki", "init", "--dir", directory))
        self.assertEqual(result.out, f"wrote {directory / 'ca.pem'}\nwrote {directory / 'ca.key'}\n")
        self.assertEqual(os.stat(directory / "ca.key").st_mode & 0o777, 0o600)
        ca = load_ca(directory)
        self.assertIsInstance(ca.key, ec.EllipticCurvePrivateKey)
        self.assertEqual(ca.certificate.subject.rfc4514_string(), "CN=securenet development CA")
        self.assertEqual(sorted(snapshot(directory)), ["ca.key", "ca.pem"])

    def test_nameAndDays(self) -> None:
        directory = Path(self.mktemp())
        self.assertOK(run("pki", "init", "--dir", directory, "--name", "Ops Root", "--days", "10"))
        cert = load_ca(directory).certificate
        self.assertEqual(cert.subject.rfc4514_string(), "CN=Ops Root")
        self.assertEqual(
            cert.not_valid_after_utc - cert.not_valid_before_utc,
            datetime.timedelta(days=10, minutes=5),
        )

    def test_rsa(self) -> None:
        """C{--key-type rsa} asks for an RSA key, and ca.key holds it."""
        asked = self.use_cached_rsa()
        directory = Path(self.mktemp())
        self.assertOK(run("pki", "init", "--dir", directory, "--key-type", "rsa"))
        self.assertEqual(asked, ["rsa"])
        key = load_ca(directory).key
        assert isinstance(key, rsa.RSAPrivateKey)
        self.assertEqual(key.key_size, 3072)

    def test_twice(self) -> None:
        """A second init is refused and the first CA is untouched."""
        directory = self.ca_dir()
        before = snapshot(directory)
        self.assertFails(
            run("pki", "init", "--dir", directory),
            f"{directory}: already holds a CA (ca.pem); refusing to overwrite it "
            "(use another --dir, or remove the old CA yourself)",
        )
        self.assertEqual(snapshot(directory), before)

    def test_halfCA(self) -> None:
        """A lone ca.key (or ca.pem) is an existing CA too: no new file beside it."""
        directory = self.ca_dir()
        (directory / "ca.pem").unlink()
        before = snapshot(directory)
        self.assertFails(
            run("pki", "init", "--dir", directory),
            f"{directory}: already holds a CA (ca.key); refusing to overwrite it "
            "(use another --dir, or remove the old CA yourself)",
        )
        self.assertEqual(snapshot(directory), before)

    def test_badDays(self) -> None:
        directory = Path(self.mktemp())
        self.assertFails(run("pki", "init", "--dir", directory, "--days", "0"), "--days must be at least 1, not 0")
        self.assertFalse(directory.exists())

    def test_badName(self) -> None:
        directory = Path(self.mktemp())
        long = "x" * 65
        self.assertFails(
            run("pki", "init", "--dir", directory, "--name", long),
            f"--name {long!r} is 65 characters; a certificate's common name holds at most 64",
        )
        self.assertFails(run("pki", "init", "--dir", directory, "--name", " "), "--name must not be empty")
        self.assertFalse(directory.exists())

    def test_dirIsAFile(self) -> None:
        path = Path(self.mktemp())
        path.write_text("hello")
        self.assertFails(run("pki", "init", "--dir", path), f"{path}: exists and is not a directory")
        self.assertEqual(path.read_text(), "hello")


class IssueTests(CLITestCase):
    """C{securenet pki issue server|client NAME}."""

    def setUp(self) -> None:
        self.dir = self.ca_dir()
        self.ca = load_ca(self.dir)

    def test_server(self) -> None:
        """A serverAuth certificate with the SANs given (lists and repeats), 90 days, and its pin."""
        result = self.assertOK(
            run(
                "pki",
                "issue",
                "server",
                "server",
                "--dir",
                self.dir,
                "--san",
                "DNS:localhost,IP:127.0.0.1",
                "--san",
                "URI:spiffe://example.org/svc",
            )
        )
        cert_path, key_path = self.dir / "server.pem", self.dir / "server.key"
        chain, _ = load_key_pair(cert_path, key_path)
        cert = chain[0]
        self.assertEqual(
            result.out,
            f"wrote {cert_path}\nwrote {key_path}\npin: {spki_pin(cert)}\n",
        )
        cert.verify_directly_issued_by(self.ca.certificate)
        self.assertEqual(eku(cert), [ExtendedKeyUsageOID.SERVER_AUTH])
        self.assertEqual(
            CertificateFacts.of(cert).sans,
            ("DNS:localhost", "IP:127.0.0.1", "URI:spiffe://example.org/svc"),
        )
        self.assertEqual(cert.not_valid_after_utc - cert.not_valid_before_utc, datetime.timedelta(days=90))
        self.assertEqual(os.stat(key_path).st_mode & 0o777, 0o600)

    def test_serverDefaultSAN(self) -> None:
        self.assertOK(run("pki", "issue", "server", "db.internal", "--dir", self.dir))
        cert = load_certificates(self.dir / "db.internal.pem")[0]
        self.assertEqual(CertificateFacts.of(cert).sans, ("DNS:db.internal",))

    def test_client(self) -> None:
        """A clientAuth certificate, 365 days by default, or C{--days}."""
        self.assertOK(run("pki", "issue", "client", "alice", "--dir", self.dir, "--san", "email:alice@example.org"))
        cert = load_key_pair(self.dir / "alice.pem", self.dir / "alice.key")[0][0]
        self.assertEqual(eku(cert), [ExtendedKeyUsageOID.CLIENT_AUTH])
        self.assertEqual(cert.not_valid_after_utc - cert.not_valid_before_utc, datetime.timedelta(days=365))
        self.assertEqual(CertificateFacts.of(cert).sans, ("email:alice@example.org",))

        self.assertOK(run("pki", "issue", "client", "bob", "--dir", self.dir, "--days", "30"))
        cert = load_certificates(self.dir / "bob.pem")[0]
        self.assertEqual(cert.not_valid_after_utc - cert.not_valid_before_utc, datetime.timedelta(days=30))

    def test_rsa(self) -> None:
        asked = self.use_cached_rsa()
        self.assertOK(run("pki", "issue", "server", "big", "--dir", self.dir, "--key-type", "rsa"))
        self.assertEqual(asked, ["rsa"])
        key = load_key_pair(self.dir / "big.pem", self.dir / "big.key")[1]
        assert isinstance(key, rsa.RSAPrivateKey)
        self.assertEqual(key.key_size, 3072)

    def test_noOverwrite(self) -> None:
        """Without --force an existing name is refused, for either kind, and both files are kept."""
        self.assertOK(run("pki", "issue", "server", "server", "--dir", self.dir))
        before = snapshot(self.dir)
        for kind in ("server", "client"):
            self.assertFails(
                run("pki", "issue", kind, "server", "--dir", self.dir),
                f"{self.dir / 'server.pem'}: already exists; refusing to overwrite it (use --force to replace it)",
            )
        self.assertEqual(snapshot(self.dir), before)

        (self.dir / "server.pem").unlink()
        before = snapshot(self.dir)
        self.assertFails(
            run("pki", "issue", "server", "server", "--dir", self.dir),
            f"{self.dir / 'server.key'}: already exists; refusing to overwrite it (use --force to replace it)",
        )
        self.assertEqual(snapshot(self.dir), before)

    def test_force(self) -> None:
        """--force replaces the pair with a new, matching one."""
        first = self.assertOK(run("pki", "issue", "server", "server", "--dir", self.dir))
        second = self.assertOK(run("pki", "issue", "server", "server", "--dir", self.dir, "--force"))
        self.assertNotEqual(first.out, second.out)
        chain, _ = load_key_pair(self.dir / "server.pem", self.dir / "server.key")
        self.assertEqual(second.out.splitlines()[-1], f"pin: {spki_pin(chain[0])}")

    def assertRefusedNothingWritten(self, argv: Sequence[str | Path], message: str) -> None:
        before = snapshot(self.dir)
        self.assertFails(run(*argv), message)
        self.assertEqual(snapshot(self.dir), before)

    def test_badSAN(self) -> None:
        self.assertRefusedNothingWritten(
            ["pki", "issue", "server", "s", "--dir", self.dir, "--san", "DNS:ok.example,bogus"],
            "--san: 'bogus' is not KIND:VALUE (DNS:, IP:, URI:, email:)",
        )
        self.assertRefusedNothingWritten(
            ["pki", "issue", "server", "s", "--dir", self.dir, "--san", "IP:localhost"],
            "--san: 'localhost' is not an IP address",
        )
        self.assertRefusedNothingWritten(
            ["pki", "issue", "client", "s", "--dir", self.dir, "--san", "DNS:a,"],
            "--san: '' is not KIND:VALUE (DNS:, IP:, URI:, email:)",
        )

    def test_badDays(self) -> None:
        for days in ("0", "-3"):
            self.assertRefusedNothingWritten(
                ["pki", "issue", "server", "s", "--dir", self.dir, "--days", days],
                f"--days must be at least 1, not {days}",
            )

    def test_badName(self) -> None:
        """Names that would escape DIR, hide, or replace the CA's files are refused."""
        for name in ("../evil", "sub/dir", ".hidden"):
            self.assertRefusedNothingWritten(
                ["pki", "issue", "server", name, "--dir", self.dir],
                f"certificate name {name!r} must be a plain file name (no '/', '\\', or leading '.')",
            )
        for name in ("ca", "CA", "crl"):
            self.assertRefusedNothingWritten(
                ["pki", "issue", "client", name, "--dir", self.dir, "--force"],
                f"certificate name {name!r} is reserved for the CA's own files",
            )
        long = "n" * 65
        self.assertRefusedNothingWritten(
            ["pki", "issue", "client", long, "--dir", self.dir],
            f"certificate name {long!r} is 65 characters; a certificate's common name holds at most 64",
        )
        self.assertFalse(Path(self.dir.parent, "evil.pem").exists())

    def test_noCA(self) -> None:
        empty = Path(self.mktemp())
        empty.mkdir()
        self.assertFails(
            run("pki", "issue", "server", "s", "--dir", empty),
            f"{empty / 'ca.pem'}: no CA here; create one with 'securenet pki init --dir {empty}'",
        )
        self.assertEqual(list(empty.iterdir()), [])

    def test_insecureCAKey(self) -> None:
        """The CA key's file mode is checked before it is used."""
        os.chmod(self.dir / "ca.key", 0o644)
        key = self.dir / "ca.key"
        self.assertRefusedNothingWritten(
            ["pki", "issue", "server", "s", "--dir", self.dir],
            f"{key}: private key file has mode 0644; it must not be accessible by group or others (chmod 600 {key})",
        )


class PinShowTests(CLITestCase):
    """C{securenet pki pin FILE} and C{securenet pki show FILE}."""

    def setUp(self) -> None:
        self.dir = self.ca_dir()
        self.assertOK(run("pki", "issue", "server", "server", "--dir", self.dir, "--san", "DNS:localhost,IP:127.0.0.1"))
        self.server = load_certificates(self.dir / "server.pem")[0]
        self.ca = load_ca(self.dir).certificate

    def test_pin(self) -> None:
        """Exactly one line: the pin, so a Makefile can capture it."""
        result = self.assertOK(run("pki", "pin", self.dir / "server.pem"))
        self.assertEqual(result.out, spki_pin(self.server) + "\n")
        self.assertTrue(result.out.startswith("sha256/"))

    def test_pinCurl(self) -> None:
        """C{--curl}: one line, curl's C{sha256//...}, which parses to the same digest."""
        result = self.assertOK(run("pki", "pin", "--curl", self.dir / "server.pem"))
        self.assertEqual(result.out, spki_pin(self.server).replace("sha256/", "sha256//") + "\n")
        self.assertEqual(parse_pin(result.out), parse_pin(spki_pin(self.server)))

    def test_pinFirstOfBundle(self) -> None:
        bundle = self.dir / "bundle.pem"
        bundle.write_bytes((self.dir / "server.pem").read_bytes() + (self.dir / "ca.pem").read_bytes())
        self.assertEqual(self.assertOK(run("pki", "pin", bundle)).out, spki_pin(self.server) + "\n")

    def test_pinErrors(self) -> None:
        missing = self.dir / "missing.pem"
        self.assertFails(run("pki", "pin", missing), f"{missing}: certificate file does not exist")
        key = self.dir / "server.key"
        self.assertFails(run("pki", "pin", key), f"{key}: not a PEM certificate file (corrupt or wrong file)")

    def test_show(self) -> None:
        result = self.assertOK(run("pki", "show", self.dir / "server.pem"))
        self.assertEqual(result.out, CertificateFacts.of(self.server).describe() + "\n")
        self.assertIn("SANs:       DNS:localhost, IP:127.0.0.1\n", result.out)
        self.assertIn(f"pin:        {spki_pin(self.server)}\n", result.out)
        self.assertIn("issuer:     CN=securenet development CA\n", result.out)

    def test_showBundle(self) -> None:
        """Each certificate of a bundle, in order, a blank line between."""
        bundle = self.dir / "bundle.pem"
        bundle.write_bytes((self.dir / "server.pem").read_bytes() + (self.dir / "ca.pem").read_bytes())
        result = self.assertOK(run("pki", "show", bundle))
        self.assertEqual(
            result.out,
            CertificateFacts.of(self.server).describe() + "\n\n" + CertificateFacts.of(self.ca).describe() + "\n",
        )

    def test_showErrors(self) -> None:
        missing = self.dir / "missing.pem"
        self.assertFails(run("pki", "show", missing), f"{missing}: certificate file does not exist")
        empty = self.dir / "empty.pem"
        empty.write_text("")
        self.assertFails(run("pki", "show", empty), f"{empty}: not a PEM certificate file (corrupt or wrong file)")


class RevokeCRLTests(CLITestCase):
    """C{securenet pki revoke FILE} and C{securenet pki crl}."""

    def setUp(self) -> None:
        self.dir = self.ca_dir()
        self.assertOK(run("pki", "issue", "client", "alice", "--dir", self.dir))
        self.alice = self.dir / "alice.pem"
        self.serial = load_certificates(self.alice)[0].serial_number

    def test_revoke(self) -> None:
        """Prints the serial (hex, as C{show} does); a second revoke says so."""
        result = self.assertOK(run("pki", "revoke", self.alice, "--dir", self.dir))
        self.assertEqual(
            result.out,
            f"revoked serial {self.serial:x} (recorded in {self.dir / 'revoked.txt'})\n"
            f"publish it with: securenet pki crl --dir {self.dir}\n",
        )
        self.assertIn(f"serial:     {self.serial:x}\n", run("pki", "show", self.alice).out)
        again = self.assertOK(run("pki", "revoke", self.alice, "--dir", self.dir))
        self.assertEqual(again.out.splitlines()[0], f"serial {self.serial:x} was already revoked")
        self.assertEqual(len((self.dir / "revoked.txt").read_text().splitlines()), 1)

    def test_revokeForeign(self) -> None:
        """A certificate from another CA is refused; nothing is recorded."""
        other = Path(self.mktemp())
        other.mkdir()
        stranger, _ = CertificateAuthority.create().issue("client", "alice").save(other, "alice")
        before = snapshot(self.dir)
        self.assertFails(
            run("pki", "revoke", stranger, "--dir", self.dir),
            f"{stranger}: was not issued by the CA in {self.dir}",
        )
        self.assertEqual(snapshot(self.dir), before)

    def test_revokeErrors(self) -> None:
        missing = self.dir / "missing.pem"
        before = snapshot(self.dir)
        self.assertFails(run("pki", "revoke", missing, "--dir", self.dir), f"{missing}: certificate file does not exist")
        ca_pem = self.dir / "ca.pem"
        self.assertFails(
            run("pki", "revoke", ca_pem, "--dir", self.dir),
            f"{ca_pem}: is the CA certificate itself; a CA cannot revoke itself",
        )
        self.assertEqual(snapshot(self.dir), before)
        empty = Path(self.mktemp())
        self.assertFails(
            run("pki", "revoke", self.alice, "--dir", empty),
            f"{empty / 'ca.pem'}: no CA here; create one with 'securenet pki init --dir {empty}'",
        )

    def test_crl(self) -> None:
        """Writes crl.pem listing the revocation; prints its path and next update."""
        self.assertOK(run("pki", "revoke", self.alice, "--dir", self.dir))
        result = self.assertOK(run("pki", "crl", "--dir", self.dir, "--days", "2"))
        crl = load_crl(self.dir / "crl.pem")
        assert crl.next_update_utc is not None and crl.last_update_utc is not None
        self.assertEqual(
            result.out,
            f"wrote {self.dir / 'crl.pem'}\nnext update: {crl.next_update_utc.isoformat()}\n",
        )
        self.assertEqual([r.serial_number for r in crl], [self.serial])
        self.assertEqual(crl.next_update_utc - crl.last_update_utc, datetime.timedelta(days=2))

    def test_crlDefaultDays(self) -> None:
        self.assertOK(run("pki", "crl", "--dir", self.dir))
        crl = load_crl(self.dir / "crl.pem")
        assert crl.next_update_utc is not None and crl.last_update_utc is not None
        self.assertEqual(crl.next_update_utc - crl.last_update_utc, datetime.timedelta(days=7))
        self.assertEqual(list(crl), [])

    def test_crlErrors(self) -> None:
        """Bad --days or a damaged revoked.txt: one line, and no crl.pem."""
        before = snapshot(self.dir)
        self.assertFails(run("pki", "crl", "--dir", self.dir, "--days", "0"), "--days must be at least 1, not 0")
        self.assertEqual(snapshot(self.dir), before)

        revoked = self.dir / "revoked.txt"
        revoked.write_text("zz\n")
        before = snapshot(self.dir)
        self.assertFails(run("pki", "crl", "--dir", self.dir), f"{revoked}: line 1 is not 'SERIAL-HEX ISO-TIME'")
        self.assertEqual(snapshot(self.dir), before)

        empty = Path(self.mktemp())
        self.assertFails(
            run("pki", "crl", "--dir", empty),
            f"{empty / 'ca.pem'}: no CA here; create one with 'securenet pki init --dir {empty}'",
        )
        self.assertFalse(empty.exists())


class UsageTests(CLITestCase):
    """argparse's own refusals: exit 2, no traceback."""

    def test_unknownKind(self) -> None:
        directory = Path(self.mktemp())
        result = run("pki", "issue", "peer", "x", "--dir", directory)
        self.assertEqual(result.code, 2)
        self.assertIn("invalid choice: 'peer'", result.err)
        self.assertFalse(directory.exists())

    def test_noSubcommand(self) -> None:
        result = run("pki")
        self.assertEqual(result.code, 2)
        self.assertIn("PKI_COMMAND", result.err)


class ConsoleScriptTests(test_pki.PKITestCase):
    """The installed C{securenet} command, checked by openssl."""

    def test_initIssuePin(self) -> None:
        script = os.path.join(os.path.dirname(sys.executable), "securenet")
        self.assertTrue(os.access(script, os.X_OK), f"no securenet console script at {script}; install the project")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        directory = Path(self.mktemp()).resolve()

        def securenet(*argv: str) -> str:
            done = subprocess.run([script, *argv], env=env, capture_output=True, text=True, timeout=60)
            self.assertEqual((done.returncode, done.stderr), (0, ""), done)
            return done.stdout

        def tool(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([openssl(), *argv], capture_output=True, text=True, cwd=directory, timeout=60)

        securenet("pki", "init", "--dir", str(directory))
        securenet("pki", "issue", "server", "server", "--dir", str(directory), "--san", "DNS:localhost,IP:127.0.0.1")
        securenet("pki", "issue", "client", "dev-client", "--dir", str(directory))
        pin = securenet("pki", "pin", str(directory / "server.pem"))
        self.assertEqual(pin, spki_pin(load_certificates(directory / "server.pem")[0]) + "\n")

        verified = tool("verify", "-purpose", "sslserver", "-CAfile", "ca.pem", "server.pem")
        self.assertEqual((verified.returncode, verified.stdout), (0, "server.pem: OK\n"), verified)
        verified = tool("verify", "-purpose", "sslclient", "-CAfile", "ca.pem", "dev-client.pem")
        self.assertEqual((verified.returncode, verified.stdout), (0, "dev-client.pem: OK\n"), verified)
        wrong = tool("verify", "-purpose", "sslserver", "-CAfile", "ca.pem", "dev-client.pem")
        self.assertNotEqual(wrong.returncode, 0, wrong)

        server_eku = tool("x509", "-in", "server.pem", "-noout", "-ext", "extendedKeyUsage")
        self.assertEqual(server_eku.returncode, 0, server_eku)
        self.assertIn("TLS Web Server Authentication", server_eku.stdout)
        self.assertNotIn("Client", server_eku.stdout)
        client_eku = tool("x509", "-in", "dev-client.pem", "-noout", "-ext", "extendedKeyUsage")
        self.assertIn("TLS Web Client Authentication", client_eku.stdout)
        self.assertNotIn("Server", client_eku.stdout)

        refused = subprocess.run(
            [script, "pki", "init", "--dir", str(directory)], env=env, capture_output=True, text=True, timeout=60
        )
        self.assertEqual(refused.returncode, 1)
        self.assertEqual(refused.stdout, "")
        self.assertEqual(len(refused.stderr.splitlines()), 1, refused.stderr)
        self.assertTrue(refused.stderr.startswith("securenet: error: "), refused.stderr)
