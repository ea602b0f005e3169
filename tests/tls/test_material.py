"""
What new server material must pass before it serves (L{securenet.tls._material}):
each check refuses with L{MaterialRefused} naming the file and the reason.
"""

from __future__ import annotations

import datetime
import functools

import attrs
from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from securenet.pki._ca import CertificateAuthority, default_server_sans, generate_private_key
from securenet.pki._pins import spki_pin
from securenet.testing import EphemeralPKI
from securenet.tls._errors import MaterialRefused
from securenet.tls._material import (
    DEFAULT_EXPIRY_MARGIN,
    check_crl,
    check_expectations,
    check_policy,
    check_validity,
    rehearse_handshake,
)
from securenet.tls._profiles import MODERN
from securenet.tls._server import ServerTLSFiles, ServerTLSPolicy

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


@functools.cache
def pki() -> EphemeralPKI:
    return EphemeralPKI.create()


FILES = ServerTLSFiles("/etc/svc/server.pem", "/etc/svc/server.key", "/etc/svc/ca.pem", "/etc/svc/crl.pem")


def server(**kwargs: object) -> ServerTLSPolicy:
    kwargs.setdefault("files", FILES)
    return pki().server_policy(**kwargs)


def issued(ca: CertificateAuthority | None = None, **kwargs: object) -> tuple[x509.Certificate, object]:
    ca = ca or pki().ca
    cert = ca.issue("server", "localhost", sans=default_server_sans("localhost"), **kwargs)  # type: ignore[arg-type]
    return cert.certificate, cert.key


class ValidityTests(SynchronousTestCase):
    def test_validNow(self) -> None:
        """A certificate valid for months passes with no warning."""
        self.assertEqual(check_validity(server(), now=NOW), [])

    def test_expiredRefused(self) -> None:
        """An expired certificate is refused naming the file and when it expired."""
        cert, key = issued(not_before=NOW - 10 * DAY, not_after=NOW - DAY)
        with self.assertRaises(MaterialRefused) as caught:
            check_validity(server(certificate_chain=(cert,), private_key=key), now=NOW)
        self.assertEqual(caught.exception.path, FILES.certificate)
        self.assertIn("expired at", str(caught.exception))
        self.assertTrue(str(caught.exception).startswith("/etc/svc/server.pem: "))

    def test_notYetValidRefused(self) -> None:
        cert, key = issued(not_before=NOW + DAY, not_after=NOW + 10 * DAY)
        with self.assertRaises(MaterialRefused) as caught:
            check_validity(server(certificate_chain=(cert,), private_key=key), now=NOW)
        self.assertIn("not valid before", str(caught.exception))

    def test_expiringSoonWarns(self) -> None:
        """A certificate inside the margin passes with one warning naming the file and the days left."""
        cert, key = issued(not_before=NOW - DAY, not_after=NOW + 3 * DAY)
        [warning] = check_validity(server(certificate_chain=(cert,), private_key=key), now=NOW)
        self.assertIn("/etc/svc/server.pem", warning)
        self.assertIn("in 3.0 days", warning)
        self.assertEqual(
            check_validity(server(certificate_chain=(cert,), private_key=key), now=NOW, expiry_margin=DAY.total_seconds()), []
        )
        self.assertEqual(DEFAULT_EXPIRY_MARGIN, 14 * 86400)


class ExpectationTests(SynchronousTestCase):
    def test_pinOfLeafOrCA(self) -> None:
        """The leaf's pin, or its CA's when securenet holds the CA, satisfies expectPins."""
        check_expectations(server(expect_pins=(spki_pin(pki().server.certificate),)), now=NOW)
        check_expectations(
            server(expect_pins=(spki_pin(pki().ca.certificate),), client_auth="optional"),
            now=NOW,
        )

    def test_rotationOutsidePinsRefused(self) -> None:
        """A new key under another CA, with clients pinned to the old CA, is refused: it would strand them."""
        other = CertificateAuthority.create("other CA")
        cert, key = issued(other)
        policy = server(
            certificate_chain=(cert,),
            private_key=key,
            client_auth="optional",
            expect_pins=(spki_pin(pki().ca.certificate),),
        )
        with self.assertRaises(MaterialRefused) as caught:
            check_expectations(policy, now=NOW)
        self.assertIn(spki_pin(cert), str(caught.exception))
        self.assertIn("pinned clients would refuse it", str(caught.exception))

    def test_expectRoots(self) -> None:
        """The chain must verify to expectRoots; one from another CA is refused, naming the file."""
        check_expectations(server(expect_roots=(pki().ca.certificate,)), now=NOW)
        other = CertificateAuthority.create("other CA")
        with self.assertRaises(MaterialRefused) as caught:
            check_expectations(server(expect_roots=(other.certificate,)), now=NOW)
        self.assertEqual(caught.exception.path, FILES.certificate)
        self.assertIn("does not verify to expectRoots", str(caught.exception))


class CRLTests(SynchronousTestCase):
    def policy(self, crl: x509.CertificateRevocationList) -> ServerTLSPolicy:
        return server(client_auth="required", crl=crl)

    def test_signedByTrustRoot(self) -> None:
        check_crl(self.policy(pki().ca.crl([])), now=NOW)

    def test_otherIssuerRefused(self) -> None:
        """A CRL from a CA that is not a trust root is refused naming the CRL file and its issuer."""
        other = CertificateAuthority.create("other CA")
        with self.assertRaises(MaterialRefused) as caught:
            check_crl(self.policy(other.crl([])), now=NOW)
        self.assertEqual(caught.exception.path, FILES.crl)
        self.assertIn("CN=other CA", str(caught.exception))

    def test_forgedSignatureRefused(self) -> None:
        """A CRL that names the trust root as issuer but is signed by another key is refused."""
        impostor = CertificateAuthority(pki().ca.certificate, generate_private_key())
        with self.assertRaises(MaterialRefused) as caught:
            check_crl(self.policy(impostor.crl([])), now=NOW)
        self.assertIn("signature does not verify", str(caught.exception))

    def test_olderThanCurrentRefused(self) -> None:
        """A CRL issued before the one in use (a replay that would un-revoke) is refused."""
        current = self.policy(pki().ca.crl([(1234, NOW)], last_update=NOW - DAY))
        older = self.policy(pki().ca.crl([], last_update=NOW - 2 * DAY))
        with self.assertRaises(MaterialRefused) as caught:
            check_crl(older, now=NOW, current=current)
        self.assertIn("before the one in use", str(caught.exception))
        check_crl(self.policy(pki().ca.crl([], last_update=NOW - DAY)), now=NOW, current=current)

    def test_futureRefused(self) -> None:
        with self.assertRaises(MaterialRefused) as caught:
            check_crl(self.policy(pki().ca.crl([], last_update=NOW + DAY)), now=NOW)
        self.assertIn("in the future", str(caught.exception))


class RehearsalTests(SynchronousTestCase):
    def test_handshakeSucceeds(self) -> None:
        """Every kind of server policy rehearses: no client auth, required (asked as optional), CRL, ALPN, modern."""
        rehearse_handshake(server())
        rehearse_handshake(server(client_auth="required"))
        rehearse_handshake(server(client_auth="required", crl=pki().ca.crl([])))
        rehearse_handshake(server(alpn=(b"h2",)))
        rehearse_handshake(server(profile=MODERN, expect_roots=(pki().ca.certificate,)))

    def test_mismatchedKeyRefused(self) -> None:
        """A policy whose key does not match its certificate fails the rehearsal with MaterialRefused."""
        policy = server(private_key=generate_private_key())
        with self.assertRaises(MaterialRefused) as caught:
            rehearse_handshake(policy)
        self.assertEqual(caught.exception.path, FILES.certificate)
        self.assertIn("test handshake", str(caught.exception))

    def test_checkPolicyRunsEveryCheck(self) -> None:
        """check_policy returns the expiry warnings, and refuses on each kind of fault."""
        cert, key = issued(not_before=NOW - DAY, not_after=NOW + DAY)
        self.assertEqual(len(check_policy(server(certificate_chain=(cert,), private_key=key), now=NOW)), 1)
        bad = [
            server(private_key=generate_private_key()),
            server(expect_roots=(CertificateAuthority.create("x").certificate,)),
            server(client_auth="required", crl=CertificateAuthority.create("y").crl([])),
            attrs.evolve(server(), certificate_chain=(issued(not_after=NOW - DAY, not_before=NOW - 2 * DAY)[0],)),
        ]
        for policy in bad:
            with self.assertRaises(MaterialRefused):
                check_policy(policy, now=NOW)
