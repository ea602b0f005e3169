"""
Live reload (L{securenet._reload}), in memory: a listener's files re-read
and checked before they serve, a refusal that changes nothing, the CRL
watch, and one reload at a time.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from securenet import synchronous_runner
from securenet._reload import CRLWatch, ListenerCRL, ListenerMaterial, Reloader, watch_crls
from securenet.interfaces import IReloadable
from securenet.pki._ca import CertificateAuthority, IssuedCertificate, default_server_sans, generate_private_key
from securenet.pki._files import write_private_key
from securenet.pki._pins import spki_pin
from securenet.testing import EphemeralPKI, EventCapture
from securenet.tls._endpoints import SecureServerEndpoint, server_endpoint

DAY = datetime.timedelta(days=1)


class Files:
    """A listener's files in a directory, which a test rewrites as an operator would."""

    def __init__(self, directory: Path, pki: EphemeralPKI) -> None:
        self.dir = directory
        self.pki = pki
        directory.mkdir(parents=True)
        self.cert = directory / "server.pem"
        self.key = directory / "server.key"
        self.ca = directory / "ca.pem"
        self.crl = directory / "crl.pem"
        self.ca.write_bytes(pki.ca.certificate.public_bytes(Encoding.PEM))
        self.serve(pki.server)
        self.write_crl(pki.ca.crl([]))

    def serve(self, issued: IssuedCertificate, key: Any = None) -> None:
        self.cert.write_bytes(issued.certificate.public_bytes(Encoding.PEM))
        write_private_key(self.key, key if key is not None else issued.key, overwrite=True)

    def write_crl(self, crl: x509.CertificateRevocationList) -> None:
        # As an operator's tooling would: a new file renamed over the old one.
        tmp = self.crl.with_suffix(".new")
        tmp.write_bytes(crl.public_bytes(Encoding.PEM))
        os.replace(tmp, self.crl)

    def renewed(self, ca: CertificateAuthority | None = None, **kwargs: Any) -> IssuedCertificate:
        issuer = ca or self.pki.ca
        return issuer.issue("server", "localhost", sans=default_server_sans("localhost"), **kwargs)

    def endpoint(self, clock: Clock, extra: str = "") -> SecureServerEndpoint:
        return server_endpoint(
            clock,
            f"securenet:0:certKey={self.cert}:privateKey={self.key}:trustRoots={self.ca}:clientAuth=required:crl={self.crl}{extra}",
        )


class ReloadTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = EphemeralPKI.create()
        self.files = Files(Path(self.mktemp()).resolve(), self.pki)
        self.clock = Clock()
        self.clock.advance(datetime.datetime.now(datetime.UTC).timestamp())
        self.events = EventCapture(self)
        self.counted: list[tuple[str, str]] = []
        self.endpoint = self.files.endpoint(self.clock)
        self.reloader = Reloader(
            self.clock,
            [ListenerMaterial(self.endpoint, self.clock)],
            runner=synchronous_runner,
            count=lambda what, result: self.counted.append((what, result)),
        )

    def crl(self) -> x509.CertificateRevocationList:
        crl = self.endpoint.policy.crl
        assert crl is not None
        return crl

    def reload(self) -> list[str]:
        result = self.successResultOf(self.reloader.reload("SIGHUP"))
        return result.refused

    def refusal(self) -> str:
        [event] = self.events.of("service.reload", result="refused")
        return str(event["reason"])


class ListenerMaterialTests(ReloadTestCase):
    def test_rotationServesNewCertificate(self) -> None:
        """
        A new certificate and key in place, SIGHUP: new connections get the
        new policy (and its context); the event names the files; the metric counts it.
        """
        before = self.endpoint.creator.context()
        renewed = self.files.renewed()
        self.files.serve(renewed)
        self.assertEqual(self.reload(), [])
        self.assertEqual(self.endpoint.policy.certificate_chain, (renewed.certificate,))
        self.assertIsNot(self.endpoint.creator.context(), before)
        [event] = self.events.of("service.reload", result="ok")
        self.assertEqual(event["what"], "tls")
        self.assertIn(str(self.files.cert), event["source"])
        self.assertEqual(self.counted, [("tls", "ok")])

    def test_prepareChangesNothing(self) -> None:
        """Only the commit swaps: a prepared reload that is not committed leaves the old material serving."""
        self.files.serve(self.files.renewed())
        ListenerMaterial(self.endpoint, self.clock).prepare()
        self.assertEqual(self.endpoint.policy.certificate_chain, (self.pki.server.certificate,))

    def assertRefused(self, reason: str) -> None:
        """The reload was refused with C{reason} in its one line; nothing changed."""
        policy, context = self.endpoint.policy, self.endpoint.creator.context()
        self.assertEqual(self.reload(), ["tls"])
        self.assertIs(self.endpoint.policy, policy)
        self.assertIs(self.endpoint.creator.context(), context)
        self.assertEqual(self.endpoint.policy.certificate_chain, (self.pki.server.certificate,))
        self.assertIn(reason, self.refusal())
        [line] = [e for e in self.events.of("service.reload")]
        self.assertIn("still serving the previous tls", line["log_format"])
        self.assertEqual(self.counted, [("tls", "refused")])

    def test_keyNotMatchingRefused(self) -> None:
        self.files.serve(self.files.renewed(), key=generate_private_key())
        self.assertRefused(f"{self.files.key}: private key does not match the certificate in {self.files.cert}")

    def test_expiredCertificateRefused(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.files.serve(self.files.renewed(not_before=now - 10 * DAY, not_after=now - DAY))
        self.assertRefused("expired at")

    def test_corruptFileRefused(self) -> None:
        self.files.cert.write_bytes(b"-- not a certificate --\n")
        self.assertRefused(f"{self.files.cert}: not a PEM certificate file")

    def test_keyFileTooOpenRefused(self) -> None:
        os.chmod(self.files.key, 0o644)
        self.assertRefused("must not be accessible by group or others")

    def test_corruptCRLRefused(self) -> None:
        self.files.crl.write_bytes(b"garbage")
        self.assertRefused(f"{self.files.crl}: not a PEM certificate revocation list")

    def test_keyOutsideExpectPinsRefused(self) -> None:
        """With expectPins of the CA, a certificate from another CA is refused: pinned clients would refuse it."""
        self.endpoint = self.files.endpoint(self.clock, f":expectPins={spki_pin(self.pki.ca.certificate)}")
        self.reloader.reloadables = [ListenerMaterial(self.endpoint, self.clock)]
        self.files.serve(self.files.renewed(CertificateAuthority.create("another CA")))
        self.assertRefused("are among expectPins")

    def test_expiringSoonWarns(self) -> None:
        """A certificate inside the margin is served, and the reload's line warns."""
        now = datetime.datetime.now(datetime.UTC)
        self.files.serve(self.files.renewed(not_before=now - DAY, not_after=now + 2 * DAY))
        self.assertEqual(self.reload(), [])
        [event] = self.events.of("service.reload", result="ok")
        self.assertEqual(len(event["warnings"]), 1)
        self.assertIn("expires at", event["warnings"][0])

    def test_recoversAfterRefusal(self) -> None:
        """A refused reload, then good files: the next SIGHUP serves them."""
        self.files.cert.write_bytes(b"garbage")
        self.assertEqual(self.reload(), ["tls"])
        renewed = self.files.renewed()
        self.files.serve(renewed)
        self.assertEqual(self.reload(), [])
        self.assertEqual(self.endpoint.policy.certificate_chain, (renewed.certificate,))


class ReloaderTests(SynchronousTestCase):
    def test_oneAtATime(self) -> None:
        """A reload asked for while one runs starts after it, so two prepares never overlap."""
        pending: list[Deferred[Any]] = []

        def runner(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            d.addCallback(lambda _: f(*args))
            return d

        committed: list[int] = []

        @implementer(IReloadable)
        class Counting:
            what = "policy"
            source = "p.toml"

            def prepare(self) -> Callable[[], None]:
                n = len(committed)
                return lambda: committed.append(n)

        reloader = Reloader(Clock(), [Counting()], runner=runner)
        first, second = reloader.reload(), reloader.reload()
        self.assertEqual(len(pending), 1)
        pending[0].callback(None)
        self.assertEqual(committed, [0])
        self.assertEqual(len(pending), 2)
        pending[1].callback(None)
        self.assertEqual(committed, [0, 1])
        self.assertEqual(self.successResultOf(first).done, ["policy"])
        self.assertEqual(self.successResultOf(second).done, ["policy"])

    def test_unexpectedErrorRefusesAndLogs(self) -> None:
        """A bug in a prepare refuses that reload (logged with its traceback) and the others still run."""

        @implementer(IReloadable)
        class Broken:
            what = "checker"
            source = "x"

            def prepare(self) -> Callable[[], None]:
                raise ZeroDivisionError()

        done: list[str] = []

        @implementer(IReloadable)
        class Fine:
            what = "policy"
            source = "p"

            def prepare(self) -> Callable[[], None]:
                return lambda: done.append("policy")

        events = EventCapture(self)
        result = self.successResultOf(Reloader(Clock(), [Broken(), Fine()], runner=synchronous_runner).reload())
        self.assertEqual((result.refused, result.done, done), (["checker"], ["policy"], ["policy"]))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIn("internal error", events.of("service.reload", result="refused")[0]["reason"])


class CRLWatchTests(ReloadTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.endpoint = self.files.endpoint(self.clock, ":crlPoll=5")
        [self.watch] = watch_crls(self.reloader, [self.endpoint])
        self.watch.startService()
        self.addCleanup(self.watch.stopService)

    def test_onlyWithCRLAndPoll(self) -> None:
        """No watch for a listener without a CRL file, or with crlPoll=0."""
        plain = server_endpoint(self.clock, f"securenet:0:certKey={self.files.cert}:privateKey={self.files.key}")
        off = self.files.endpoint(self.clock, ":crlPoll=0")
        self.assertEqual(watch_crls(self.reloader, [plain, off]), [])
        self.assertIsInstance(self.watch, CRLWatch)
        self.assertEqual(self.watch.interval, 5.0)

    def test_newCRLAppliesWithoutSignal(self) -> None:
        """A CRL revoking a client, written while the server runs, is in force after one poll interval."""
        alice = self.pki.client("alice")
        revoked = self.pki.ca.crl([(alice.certificate.serial_number, datetime.datetime.now(datetime.UTC))])
        self.files.write_crl(revoked)
        self.clock.advance(4)
        self.assertIsNone(self.crl().get_revoked_certificate_by_serial_number(alice.certificate.serial_number))
        self.clock.advance(1)
        self.assertIsNotNone(self.crl().get_revoked_certificate_by_serial_number(alice.certificate.serial_number))
        [event] = self.events.of("service.reload", result="ok")
        self.assertEqual((event["what"], event["source"]), ("crl", str(self.files.crl)))
        self.assertEqual(self.counted, [("crl", "ok")])

    def test_unchangedFileDoesNothing(self) -> None:
        policy = self.endpoint.policy
        self.clock.advance(50)
        self.assertIs(self.endpoint.policy, policy)
        self.assertEqual(self.events.of("service.reload"), [])

    def test_staleCRLRecovers(self) -> None:
        """
        Past its next-update the CRL in use fails closed; the watch looks at
        the file at every poll and applies a fresh CRL as soon as it is in
        place, with no signal (the same stale file changes nothing).
        """
        stale_policy = self.endpoint.policy
        self.clock.advance(8 * 86400)
        self.assertTrue(self.watch.stale())
        self.clock.advance(5)
        self.assertIs(self.endpoint.policy, stale_policy)
        now = datetime.datetime.fromtimestamp(int(self.clock.seconds()), datetime.UTC)
        self.files.write_crl(self.pki.ca.crl([], last_update=now - datetime.timedelta(minutes=5), number=2))
        self.clock.advance(5)
        self.assertFalse(self.watch.stale())
        self.assertEqual(self.crl().next_update_utc, now - datetime.timedelta(minutes=5) + 7 * DAY)

    def test_replayedOlderCRLRefused(self) -> None:
        """An older CRL put back in place (it could un-revoke) is refused; the newer one stays in force."""
        now = datetime.datetime.now(datetime.UTC)
        policy = self.endpoint.policy
        self.files.write_crl(self.pki.ca.crl([], last_update=now - 2 * DAY))
        self.clock.advance(5)
        self.assertIs(self.endpoint.policy, policy)
        self.assertIn("before the one in use", self.refusal())

    def test_refusedFileLoggedOnce(self) -> None:
        """A corrupt CRL is refused once, not at every poll; the next good file is applied."""
        self.files.crl.write_bytes(b"garbage")
        policy = self.endpoint.policy
        self.clock.advance(5)
        self.clock.advance(5)
        self.clock.advance(5)
        self.assertIs(self.endpoint.policy, policy)
        self.assertEqual(len(self.events.of("service.reload", result="refused")), 1)
        self.assertEqual(self.counted, [("crl", "refused")])
        self.files.write_crl(self.pki.ca.crl([], number=2))
        self.clock.advance(5)
        self.assertIsNot(self.endpoint.policy, policy)
        self.assertEqual(self.counted, [("crl", "refused"), ("crl", "ok")])


class ListenerCRLTests(ReloadTestCase):
    def test_onlyTheCRLChanges(self) -> None:
        """A CRL reload keeps the certificate in use even if the certificate file changed meanwhile."""
        self.files.serve(self.files.renewed())
        self.files.write_crl(self.pki.ca.crl([(5, datetime.datetime.now(datetime.UTC))], number=2))
        crl = ListenerCRL(self.endpoint, self.clock)
        crl.prepare()()
        self.assertEqual(self.endpoint.policy.certificate_chain, (self.pki.server.certificate,))
        self.assertIsNotNone(self.crl().get_revoked_certificate_by_serial_number(5))
