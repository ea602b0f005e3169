"""
C{twistd securenet --metrics} as a process: the metrics listener logs where
it listens; C{/metrics} (parsed by prometheus_client's parser) counts a known
sequence of connections exactly, shows the served certificate's notAfter,
and never a label a peer chose; C{/healthz} and C{/readyz}; over TLS with
client certificates; and bad values stop twistd with one line.
"""

from __future__ import annotations

import re
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from securenet.pki._pins import spki_pin
from securenet.testing import EphemeralPKI
from tests.support import Twistd, run_twistd_expecting_failure
from tests.support.e2e import E2EBase, client_endpoint, free_port, server_listen

LISTENING = re.compile(r"securenet metrics listening on (https?)://127\.0\.0\.1:(\d+)/metrics")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


class MetricsProcessTests(E2EBase):
    def start(self, metrics: str) -> tuple[Twistd, str]:
        server = self.startServer("--listen", server_listen(self.certs), "--metrics", metrics)
        found = LISTENING.search(server.waitForLog("securenet metrics listening on"))
        assert found is not None, server.logText()
        return server, f"{found.group(1)}://127.0.0.1:{found.group(2)}"

    def get(self, url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=10, context=context) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def test_knownSequence(self) -> None:
        """One good connection, one with a certificate of another CA, one random path: each counted exactly once."""
        server, base = self.start("0")
        listener = f"127.0.0.1:{server.port}"
        before = samples(self.get(base + "/metrics")[1].decode())

        good = self.connect(client_endpoint(self.certs, server.port), b"hello\n")
        self.assertEqual(good.returncode, 0, good.stderr)
        stranger = EphemeralPKI.create()
        stranger.client("mallory-evil")
        other = stranger.save(Path(self.mktemp()))
        bad = self.connect(
            client_endpoint(
                self.certs,
                server.port,
                certificate=str(other / "mallory-evil.pem"),
                privateKey=str(other / "mallory-evil.key"),
            )
        )
        self.assertNotEqual(bad.returncode, 0)
        self.assertEqual(self.get(base + "/zz-evil-path")[0], 404)
        server.waitForLog("TLS handshake with")
        status, body = self.get(base + "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        after = samples(text)

        def moved(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        handshakes = {k: v - before.get(k, 0.0) for k, v in after.items() if k[0] == "securenet_tls_handshakes_total"}
        moved_handshakes = {k: v for k, v in handshakes.items() if v}
        self.assertEqual(sorted(moved_handshakes.values()), [1.0, 1.0], moved_handshakes)
        results = {dict(labels)["result"]: dict(labels) for _, labels in moved_handshakes}
        self.assertEqual(results["ok"]["listener"], listener)
        self.assertEqual(results["failed"]["reason"], "UntrustedCertificate")
        self.assertEqual(moved("securenet_authentications_total", mechanism="EXTERNAL", result="ok", reason="-"), 1)
        self.assertEqual(moved("securenet_http_requests_total", route="other", status="404"), 1)
        self.assertEqual(moved("securenet_http_requests_total", route="/metrics", status="200"), 1)
        self.assertEqual(after[("securenet_open_connections", (("listener", listener),))], 0)

        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for value in sample.labels.values():
                    self.assertNotIn("mallory", value)
                    self.assertNotIn("evil", value)

        leaf = x509.load_pem_x509_certificate((self.certs / "server.pem").read_bytes())
        self.assertEqual(
            after[
                (
                    "securenet_certificate_not_after_seconds",
                    (("listener", listener), ("pin", spki_pin(leaf)), ("role", "leaf")),
                )
            ],
            leaf.not_valid_after_utc.timestamp(),
        )
        self.assertEqual(self.get(base + "/healthz"), (200, b"ok\n"))
        self.assertEqual(self.get(base + "/readyz"), (200, b"ready\n"))

    def test_overTLS(self) -> None:
        """A securenet: metrics endpoint: served to a client with a certificate of the trust roots, refused without one."""
        server, base = self.start(server_listen(self.certs))
        self.assertTrue(base.startswith("https://"), base)
        context = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        context.load_cert_chain(str(self.certs / "dev-client.pem"), str(self.certs / "dev-client.key"))
        status, body = self.get(base + "/metrics", context)
        self.assertEqual(status, 200)
        self.assertIn(b"securenet_certificate_not_after_seconds", body)
        anonymous = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        with self.assertRaises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(base + "/metrics", timeout=10, context=anonymous).read()
        del server


class MetricsStartupTests(E2EBase):
    def assertOneLine(self, args: list[str], expected: bytes) -> None:
        result = run_twistd_expecting_failure(self.base, ["--listen", server_listen(self.certs), *args])
        self.assertEqual(result.returncode, 1)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn(expected, lines[0])
        self.assertNotIn(b"Traceback", result.stderr + result.stdout)

    def test_notAPort(self) -> None:
        self.assertOneLine(["--metrics", "70000"], b"twistd securenet: error: --metrics 70000: 70000 is not a TCP port")

    def test_notAnEndpoint(self) -> None:
        self.assertOneLine(["--metrics", "bogus:1"], b"--metrics bogus:1: not a server endpoint")

    def test_securenetWithoutClientCertificates(self) -> None:
        listen = server_listen(self.certs, trustRoots="", clientAuth="none")
        self.assertOneLine(["--metrics", listen], b"needs client certificates")

    def test_portInUse(self) -> None:
        port = free_port()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            taken.listen()
            self.assertOneLine(
                ["--metrics", str(port)], f"cannot listen on 127.0.0.1:{port}: Address already in use (--metrics {port})".encode()
            )
