"""
End to end, live reload of a real C{twistd securenet}: certificates, keys
and CRLs replaced as an operator would (the C{securenet pki} CLI, then
C{mv} and C{kill -HUP}) while clients hold connections; bad reloads that
change nothing; a CRL applied without a signal; sessions that resume
across a reload (C{openssl s_client -sess_out}/C{-sess_in}).  Clients are
Python's C{ssl} module and C{openssl s_client}; every wait is bounded.
"""

from __future__ import annotations

import datetime
import functools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from securenet.pki._ca import load_ca
from tests.support import Twistd, run, script
from tests.support.e2e import E2EBase, metrics_base, pin_of, scrape, server_listen


def wait_until(predicate: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class Session:
    """A client connection past the securenet exchange (AUTH EXTERNAL), echoing lines: Python's ssl module."""

    def __init__(self, certs: Path, port: int, client: str = "dev-client") -> None:
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        context.load_cert_chain(str(certs / f"{client}.pem"), str(certs / f"{client}.key"))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.file = self.sock.makefile("rwb")
        greeting = self.file.readline()
        assert greeting.startswith(b"SECURENET 1 AUTH"), greeting
        self.file.write(b"AUTH EXTERNAL =\r\n")
        self.file.flush()
        self.ok = self.file.readline()

    def server_certificate(self) -> x509.Certificate:
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def echo(self, line: bytes) -> bytes:
        self.file.write(line + b"\n")
        self.file.flush()
        return self.file.readline()

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


class ReloadBase(E2EBase):
    def setUp(self) -> None:
        super().setUp()
        # A private copy of the run's PKI: these tests rotate and revoke in it.
        self.pki = self.base / "certs"
        shutil.copytree(self.certs, self.pki)
        self.run_cli("pki", "crl", "--dir", str(self.pki))

    def run_cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        result = run([script("securenet"), *args])
        self.assertEqual(result.returncode, 0, result.stderr)
        return result

    def listen(self, **extra: str) -> str:
        return server_listen(self.pki, crl=str(self.pki / "crl.pem"), **extra)

    def rotate(self, name: str) -> x509.Certificate:
        """The runbook: issue a new server certificate under a new name, then move it (and its key) over the old."""
        self.run_cli("pki", "issue", "server", name, "--dir", str(self.pki), "--san", "DNS:localhost,IP:127.0.0.1")
        os.replace(self.pki / f"{name}.key", self.pki / "server.key")
        os.replace(self.pki / f"{name}.pem", self.pki / "server.pem")
        return x509.load_pem_x509_certificate((self.pki / "server.pem").read_bytes())

    def hangup(self, server: Twistd, line: str, count: int) -> None:
        """SIGHUP, then wait until the log holds C{line} C{count} times."""
        server.process.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: server.logText().count(line) >= count), server.logText())

    def served(self, server: Twistd) -> x509.Certificate:
        session = Session(self.pki, server.port)
        try:
            self.assertTrue(session.ok.startswith(b"OK dev-client"), session.ok)
            return session.server_certificate()
        finally:
            session.close()


class RotationUnderLoadTests(ReloadBase):
    def test_twentyRotationsWhileEchoing(self) -> None:
        """
        A client holds 8 connections and keeps echoing on them while the
        server's certificate, key and CRL are replaced and SIGHUP sent 20
        times: no echo fails, no connection drops, and every new
        connection presents the newest certificate.
        """
        server = self.startServer("--listen", self.listen())
        sessions = [Session(self.pki, server.port) for _ in range(8)]
        for s in sessions:
            self.addCleanup(s.close)
        for s in sessions:
            self.assertTrue(s.ok.startswith(b"OK dev-client"), s.ok)
        first = sessions[0].server_certificate()
        stop = threading.Event()
        echoes = [0] * len(sessions)
        failures: list[str] = []

        def keep_echoing() -> None:
            n = 0
            while not stop.is_set():
                for i, s in enumerate(sessions):
                    line = b"line %d" % n
                    try:
                        answer = s.echo(line)
                    except OSError as e:
                        failures.append(f"connection {i}: {e!r}")
                        return
                    if answer != line + b"\n":
                        failures.append(f"connection {i}: {answer!r} for {line!r}")
                        return
                    echoes[i] += 1
                    n += 1

        echoer = threading.Thread(target=keep_echoing, daemon=True)
        echoer.start()
        self.addCleanup(stop.set)

        def advanced(before: list[int]) -> bool:
            return all(e > b for e, b in zip(echoes, before, strict=True)) or bool(failures)

        for round in range(1, 21):
            new = self.rotate(f"server-{round}")
            self.run_cli("pki", "crl", "--dir", str(self.pki))
            before = list(echoes)
            self.hangup(server, "SIGHUP: reloaded 1, refused 0", round)
            self.assertEqual(self.served(server), new)
            self.assertTrue(wait_until(functools.partial(advanced, before)))
        stop.set()
        echoer.join(10)
        self.assertEqual(failures, [])
        self.assertTrue(all(e >= 20 for e in echoes), echoes)
        # The held connections kept the certificate they started with.
        for s in sessions:
            self.assertEqual(s.server_certificate(), first)
        log = server.logText()
        self.assertEqual(log.count("reloaded tls ("), 20, log)
        self.assertNotIn("reload refused", log)
        self.assertNotIn("Traceback", log)


class BadReloadTests(ReloadBase):
    def test_badReloadsChangeNothing(self) -> None:
        """
        A key that does not match the certificate, an expired certificate, a
        key outside expectPins, a corrupt CRL: each SIGHUP is refused with
        one line naming the file and the reason; the old certificate keeps
        serving and the process stays up; good files then reload.
        """
        server = self.startServer("--listen", self.listen(expectPins=pin_of(self.pki / "ca.pem")), "--metrics", "0")
        metrics = metrics_base(server)
        original = self.served(server)
        good_key = (self.pki / "server.key").read_bytes()
        good_cert = (self.pki / "server.pem").read_bytes()
        good_crl = (self.pki / "crl.pem").read_bytes()
        ca = load_ca(self.pki)
        now = datetime.datetime.now(datetime.UTC)

        def restore() -> None:
            for name, data in (("server.key", good_key), ("server.pem", good_cert), ("crl.pem", good_crl)):
                tmp = self.pki / f".{name}.tmp"
                tmp.write_bytes(data)
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.pki / name)

        def mismatched_key() -> str:
            self.run_cli("pki", "issue", "server", "other", "--dir", str(self.pki))
            os.replace(self.pki / "other.key", self.pki / "server.key")
            return f"{self.pki / 'server.key'}: private key does not match the certificate in {self.pki / 'server.pem'}"

        def expired() -> str:
            issued = ca.issue(
                "server", "localhost", not_before=now - datetime.timedelta(days=9), not_after=now - datetime.timedelta(days=1)
            )
            issued.save(self.pki, "server", overwrite=True)
            return f"{self.pki / 'server.pem'}: the certificate (CN=localhost) expired at"

        def outside_pins() -> str:
            other = self.base / "other-ca"
            self.run_cli("pki", "init", "--dir", str(other))
            self.run_cli("pki", "issue", "server", "server", "--dir", str(other), "--san", "DNS:localhost")
            for name in ("server.pem", "server.key"):
                shutil.copy2(other / name, self.pki / name)
            return "are among expectPins: pinned clients would refuse it"

        def corrupt_crl() -> str:
            (self.pki / "crl.pem").write_bytes(b"-----BEGIN X509 CRL-----\nbroken\n")
            return f"{self.pki / 'crl.pem'}: not a PEM certificate revocation list"

        for n, fault in enumerate((mismatched_key, expired, outside_pins, corrupt_crl), start=1):
            reason = fault()
            self.hangup(server, "SIGHUP: reloaded 0, refused 1", n)
            lines = [line for line in server.logText().splitlines() if "reload refused: tls (" in line]
            self.assertEqual(len(lines), n, lines)
            self.assertIn(reason, lines[-1])
            self.assertIn("still serving the previous tls", lines[-1])
            restore()
            self.assertEqual(self.served(server), original)
            self.assertIsNone(server.process.poll())
        self.hangup(server, "SIGHUP: reloaded 1, refused 0", 1)
        self.assertNotIn("Traceback", server.logText())
        # The reload metric counted each refusal, and the reload that was done.
        counts = scrape(metrics)
        self.assertEqual(counts[("securenet_reloads_total", (("result", "refused"), ("what", "tls")))], 4)
        self.assertEqual(counts[("securenet_reloads_total", (("result", "ok"), ("what", "tls")))], 1)


class PolicyReloadTests(ReloadBase):
    def test_badPolicyChangesNothing(self) -> None:
        """
        A policy with an error is refused on SIGHUP with its file and line,
        the certificates still reload, the process keeps serving; the fixed
        policy then reloads.
        """
        policy = self.base / "policy.toml"
        policy.write_text('[roles.reader]\npermissions = ["echo"]\n')
        server = self.startServer("--listen", self.listen(), "--policy", str(policy))
        policy.write_text('[roles.reader]\npermissions = ["echo"]\ninherits = ["nobody"]\n')
        self.hangup(server, "SIGHUP: reloaded 1, refused 1", 1)
        [line] = [line for line in server.logText().splitlines() if "reload refused: policy (" in line]
        self.assertIn(f"{policy}:3", line)
        self.assertIn("nobody", line)
        self.assertIn("still serving the previous policy", line)
        self.assertEqual(
            self.served(server).subject, x509.load_pem_x509_certificate((self.pki / "server.pem").read_bytes()).subject
        )
        policy.write_text('[roles.reader]\npermissions = ["echo", "other"]\n')
        self.hangup(server, "SIGHUP: reloaded 2, refused 0", 1)
        self.assertIn(f"reloaded policy ({policy})", server.logText())


class CRLWatchTests(ReloadBase):
    def connect(self, port: int) -> subprocess.CompletedProcess[bytes]:  # type: ignore[override]
        from tests.support.e2e import client_endpoint

        return run(
            [script("securenet"), "connect", "--linger", "0.2", "-q", client_endpoint(self.pki, port)], input=b"hi\n", timeout=60
        )

    def test_revokedWhileRunningRefusedWithoutSignal(self) -> None:
        """A client revoked (securenet pki revoke, crl) while the server runs is refused within crlPoll, no SIGHUP."""
        server = self.startServer("--listen", self.listen(crlPoll="1"))
        self.assertEqual(self.connect(server.port).stdout, b"hi\n")
        self.run_cli("pki", "revoke", "--dir", str(self.pki), str(self.pki / "dev-client.pem"))
        self.run_cli("pki", "crl", "--dir", str(self.pki))
        self.assertTrue(wait_until(lambda: "reloaded crl (" in server.logText()), server.logText())
        result = self.connect(server.port)
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stdout, b"")
        self.assertIn(b"revoked", result.stderr)

    def test_staleCRLRecoversWithoutSignal(self) -> None:
        """A CRL past its next-update refuses every client; a fresh file in place lets them in again, no SIGHUP."""
        ca = load_ca(self.pki)
        now = datetime.datetime.now(datetime.UTC)
        stale = ca.crl([], last_update=now - datetime.timedelta(days=8), next_update=now - datetime.timedelta(days=1))
        (self.pki / "crl.pem").write_bytes(stale.public_bytes(Encoding.PEM))
        server = self.startServer("--listen", self.listen(crlPoll="1"))
        refused = self.connect(server.port)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn(b"refused our certificate", refused.stderr)
        self.assertIn("past its next-update", server.logText())
        self.run_cli("pki", "crl", "--dir", str(self.pki))
        self.assertTrue(wait_until(lambda: "reloaded crl (" in server.logText()), server.logText())
        self.assertEqual(self.connect(server.port).stdout, b"hi\n")


class ResumptionTests(ReloadBase):
    def s_client(self, port: int, *session: str) -> str:
        args = [
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
            "-CAfile", str(self.pki / "ca.pem"),
            "-cert", str(self.pki / "dev-client.pem"), "-key", str(self.pki / "dev-client.key"),
            *session,
        ]  # fmt: skip
        # Send the exchange and wait for the answer (and TLS 1.3's session tickets) before closing.
        process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdin is not None
        process.stdin.write(b"AUTH EXTERNAL =\r\n")
        process.stdin.flush()
        time.sleep(1.0)
        process.stdin.close()
        assert process.stdout is not None
        out = process.stdout.read()
        process.wait(30)
        return out.decode("utf-8", "replace")

    def test_sessionResumesAfterReload(self) -> None:
        """
        A session saved before a certificate rotation and SIGHUP resumes after
        it (openssl s_client -sess_in reports Reused), in TLS 1.3 and 1.2.
        """
        server = self.startServer("--listen", self.listen())
        for version in ("-tls1_3", "-tls1_2"):
            saved = self.base / f"session{version}.pem"
            first = self.s_client(server.port, version, "-sess_out", str(saved))
            self.assertIn("OK dev-client", first)
            self.assertIn("New, TLSv1.", first)
            self.rotate(f"server{version}")
            count = 1 if version == "-tls1_3" else 2
            self.hangup(server, "SIGHUP: reloaded 1, refused 0", count)
            second = self.s_client(server.port, version, "-sess_in", str(saved))
            self.assertIn("Reused, TLSv1.", second)
            self.assertIn("OK dev-client", second)
