"""
The C{--metrics} listener in process, on a fake reactor: C{/metrics} parsed
by prometheus_client's own parser (the certificate and CRL gauges are the
loaded certificates' notAfter and the CRL's nextUpdate, exactly; they
follow the listener's current policy), C{/healthz}, C{/readyz} (503 naming
an expired certificate, a stale CRL, a listener that does not listen, a
credential store that fails or does not answer), and C{--metrics} values
refused with one line.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import attrs
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from securenet import _metrics, tap
from securenet._monitor import metrics_endpoint, metrics_root, metrics_service
from securenet._service import Listener
from securenet.pki._pins import spki_pin
from securenet.store._memory import MemoryStore
from securenet.testing import EphemeralPKI
from securenet.tls._endpoints import SecureServerEndpoint
from securenet.tls._server import ServerTLSPolicy
from securenet.web._site import SecureSite
from tests.support.tls import RecordingFactory
from tests.web.test_api import Response, exchange_plain, parse_response, raw_request

PKI = EphemeralPKI.create()
NOW = datetime.datetime.now(datetime.UTC)


class FailingStore(MemoryStore):
    """A credential store whose queries fail (a database gone away)."""

    def get_failures(self, key: str) -> Deferred[tuple[int, float]]:
        return fail(OSError("unable to open database file"))


class SilentStore(MemoryStore):
    """A credential store that never answers."""

    def get_failures(self, key: str) -> Deferred[tuple[int, float]]:
        return Deferred()


class Monitored:
    """A service with one C{securenet:} listener and the metrics resources over it, on a fake reactor."""

    def __init__(self, policy: ServerTLSPolicy | None = None, store: Any = None, *, start: bool = True) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(NOW.timestamp())
        self.service = MultiService()
        self.endpoint = SecureServerEndpoint(self.reactor, policy or PKI.server_policy(client_auth="required"), 0)
        self.listener = Listener(
            self.endpoint, RecordingFactory(), option="--listen", description="securenet:0:...", reactor=self.reactor
        )
        self.listener.setServiceParent(self.service)
        if start:
            self.listener.privilegedStartService()
        self.site = SecureSite(metrics_root(self.reactor, self.service, store), reactor=self.reactor)

    def get(self, path: str) -> Response:
        data, _ = exchange_plain(self.site, raw_request("GET", path))
        return parse_response(data)

    def gauges(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        response = self.get("/metrics")
        assert response.code == 200, response
        assert response.header("content-type") is not None
        found: dict[tuple[tuple[str, str], ...], float] = {}
        for family in text_string_to_metric_families(response.body.decode("utf-8")):
            for sample in family.samples:
                if sample.name == name:
                    found[tuple(sorted(sample.labels.items()))] = sample.value
        return found


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


class MetricsTests(SynchronousTestCase):
    def test_certificateGauges(self) -> None:
        """Leaf and trust root, labelled by listener, role and pin: their notAfter in seconds since the epoch, exactly."""
        crl = PKI.ca.crl([])
        monitored = Monitored(PKI.server_policy(client_auth="required", crl=crl))
        self.assertEqual(monitored.endpoint.listener, "127.0.0.1:0")
        server, ca = PKI.server.certificate, PKI.ca_certificate
        self.assertEqual(
            monitored.gauges("securenet_certificate_not_after_seconds"),
            {
                labels(listener="127.0.0.1:0", role="leaf", pin=spki_pin(server)): server.not_valid_after_utc.timestamp(),
                labels(listener="127.0.0.1:0", role="trust-root", pin=spki_pin(ca)): ca.not_valid_after_utc.timestamp(),
            },
        )
        assert crl.next_update_utc is not None
        self.assertEqual(
            monitored.gauges("securenet_crl_next_update_seconds"),
            {labels(listener="127.0.0.1:0"): crl.next_update_utc.timestamp()},
        )

    def test_gaugesFollowThePolicy(self) -> None:
        """The gauges are read at each scrape from C{endpoint.creator.policy}: a new policy shows at once."""
        monitored = Monitored()
        other = PKI.ca.issue("server", "other.example", days=3)
        monitored.endpoint.creator.policy = attrs.evolve(
            monitored.endpoint.creator.policy, certificate_chain=(other.certificate,), private_key=other.key
        )
        gauges = monitored.gauges("securenet_certificate_not_after_seconds")
        self.assertEqual(
            gauges[labels(listener="127.0.0.1:0", role="leaf", pin=spki_pin(other.certificate))],
            other.certificate.not_valid_after_utc.timestamp(),
        )
        self.assertNotIn(labels(listener="127.0.0.1:0", role="leaf", pin=spki_pin(PKI.server.certificate)), gauges)

    def test_registryFamilies(self) -> None:
        """Every family of securenet's registry is exposed, with its help text (and nothing of the default registry)."""
        monitored = Monitored()
        response = monitored.get("/metrics")
        self.assertEqual(response.header("content-type"), CONTENT_TYPE_LATEST)
        families = {f.name: f for f in text_string_to_metric_families(response.body.decode())}
        for family in _metrics.FAMILIES:
            self.assertIn(family._name, families)
            self.assertTrue(families[family._name].documentation)
        self.assertEqual([n for n in families if not n.startswith("securenet_")], [])

    def test_healthz(self) -> None:
        response = Monitored(start=False).get("/healthz")
        self.assertEqual((response.code, response.body), (200, b"ok\n"))


class ReadyTests(SynchronousTestCase):
    def assertNotReady(self, response: Response, *fragments: str) -> None:
        self.assertEqual(response.code, 503, response)
        text = response.body.decode()
        self.assertTrue(text.startswith("not ready:\n"), text)
        for fragment in fragments:
            self.assertIn(fragment, text)

    def test_ready(self) -> None:
        response = Monitored(PKI.server_policy(client_auth="required", crl=PKI.ca.crl([])), MemoryStore()).get("/readyz")
        self.assertEqual((response.code, response.body), (200, b"ready\n"))

    def test_notListening(self) -> None:
        self.assertNotReady(Monitored(start=False).get("/readyz"), "--listen 127.0.0.1:0: not listening")

    def test_expiredCertificate(self) -> None:
        expired = PKI.ca.issue(
            "server",
            "localhost",
            not_before=NOW - datetime.timedelta(days=10),
            not_after=NOW - datetime.timedelta(days=1),
        )
        policy = PKI.server_policy(certificate_chain=(expired.certificate,), private_key=expired.key)
        self.assertNotReady(
            Monitored(policy).get("/readyz"), f"127.0.0.1:0: leaf certificate {spki_pin(expired.certificate)} expired "
        )

    def test_staleCRL(self) -> None:
        crl = PKI.ca.crl([], last_update=NOW - datetime.timedelta(days=10), next_update=NOW - datetime.timedelta(days=1))
        self.assertNotReady(Monitored(PKI.server_policy(client_auth="required", crl=crl)).get("/readyz"), "CRL is stale")

    def test_storeFails(self) -> None:
        response = Monitored(store=FailingStore()).get("/readyz")
        self.assertNotReady(response, "credential store: query failed (OSError)")
        self.assertNotIn(b"database file", response.body)

    def test_storeSilent(self) -> None:
        monitored = Monitored(store=SilentStore())
        data, transport = exchange_plain(monitored.site, raw_request("GET", "/readyz"))
        self.assertEqual(data, b"")
        monitored.reactor.advance(5)
        self.assertNotReady(parse_response(transport.value()), "credential store: no answer within 5 s")


class EndpointTests(SynchronousTestCase):
    def test_barePort(self) -> None:
        """A port number is plain HTTP on the loopback interface."""
        endpoint = metrics_endpoint(MemoryReactorClock(), "9100")
        self.assertIsInstance(endpoint, TCP4ServerEndpoint)
        self.assertEqual((endpoint._port, endpoint._interface), (9100, "127.0.0.1"))  # type: ignore[attr-defined]

    def test_refused(self) -> None:
        """Each bad value: one line naming the option, the value and why."""
        certs = PKI.save(Path(self.mktemp()))
        without = f"securenet:0:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        for value, why in (
            ("70000", "--metrics 70000: 70000 is not a TCP port (0-65535)"),
            ("nonsense", "--metrics nonsense: not a server endpoint (Unknown endpoint type: 'nonsense')"),
            ("tcp:http", "--metrics tcp:http: not a server endpoint"),
            ("securenet:0", "--metrics securenet:0: certKey is required"),
            (without, f"--metrics {without}: a securenet: metrics endpoint needs client certificates"),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                metrics_endpoint(MemoryReactorClock(), value)
            message = str(caught.exception)
            self.assertTrue(message.startswith(why), message)
            self.assertNotIn("\n", message)

    def test_serviceEnables(self) -> None:
        """The metrics listener joins the service (option --metrics), and recording starts."""
        self.assertFalse(_metrics.enabled())
        self.addCleanup(_metrics.disable)
        service = MultiService()
        listener = metrics_service(MemoryReactorClock(), "0", service, None)
        self.assertEqual((listener.option, listener.parent), ("--metrics", service))
        self.assertTrue(_metrics.enabled())

    def test_configKey(self) -> None:
        """C{metrics} in the config file is C{--metrics}; it must be a string."""
        config = Path(self.mktemp())
        config.write_text('metrics = "9100"\n')
        options = tap.Options()
        options.parseOptions(["--config", str(config)])
        self.assertEqual(options["metrics"], "9100")
        config.write_text("metrics = 9100\n")
        with self.assertRaises(usage.UsageError) as caught:
            tap.Options().parseOptions(["--config", str(config)])
        self.assertIn("metrics must be a string", str(caught.exception))
