"""
securenet's metrics, in memory: nothing is recorded until L{enable}; every
label is clamped to its closed set, so what a peer sends (a mechanism name,
a user name, a path, a certificate) never becomes a label value; and the
counters move by exactly the expected amount for known sequences of
handshakes, logins, refusals, authorization decisions and HTTP requests,
whatever the log level.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from securenet import _metrics, audit
from securenet.authz import AuthorizationDenied, Policy
from securenet.cred._identity import Identity
from securenet.cred._throttle import Throttle, ThrottlePolicy
from securenet.session._exchange import ExchangeSettings
from securenet.session._server import SessionFactory
from securenet.testing import EphemeralPKI, EventCapture, MemoryConnection, connect_in_memory, memory_portal
from securenet.tls._guard import TLSGuard, TLSGuardFactory
from tests.support.audit import failing_sink
from tests.support.tls import RecordingFactory, transport_of
from tests.web.test_api import Events, Service

PKI = EphemeralPKI.create()
OTHER_PKI = EphemeralPKI.create()
LISTENER = "127.0.0.1:8443"

#: What attackers send in these tests: none of it may ever appear in a label value.
HOSTILE = ("EVIL-MECH", "nosuchuser-evil", "zz-evil-path", "mallory-evil", "evil-name")


def recording(case: SynchronousTestCase) -> None:
    """Record metrics until the test ends."""
    _metrics.enable()
    case.addCleanup(_metrics.disable)


def value(name: str, **labels: str) -> float:
    """The current value of one sample of securenet's registry (0 if absent)."""
    found = _metrics.REGISTRY.get_sample_value(name, labels)
    return found if found is not None else 0.0


def samples() -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample of securenet's registry but the creation times."""
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in _metrics.REGISTRY.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    )


def label_values() -> Iterator[str]:
    for family in _metrics.REGISTRY.collect():
        for s in family.samples:
            yield from s.labels.values()


class Deltas:
    """The change of chosen samples since construction."""

    def __init__(self, *keys: tuple[str, dict[str, str]]) -> None:
        self.keys = keys
        self.before = [value(name, **labels) for name, labels in keys]

    def __call__(self) -> list[float]:
        return [value(name, **labels) - old for (name, labels), old in zip(self.keys, self.before, strict=True)]


def tls_connection(
    clock: Clock, *, client: str | None = None, client_pki: EphemeralPKI = PKI, client_auth: str = "optional"
) -> tuple[MemoryConnection, TLSGuard]:
    """A TLS connection in memory to a guard whose listener label is L{LISTENER}, run until nothing moves; and that guard."""
    factory = TLSGuardFactory(RecordingFactory(), clock)
    factory.listener = LISTENER
    conn = connect_in_memory(
        server_policy=PKI.server_policy(client_auth=client_auth),
        client_policy=client_pki.client_policy(client=client, trust_roots=(PKI.ca_certificate,)),
        server_factory=factory,
        client_factory=RecordingFactory(),
        clock=clock,
    )
    conn.client_ready.addErrback(lambda _: None)
    guard = conn.server_guard  # TLS lets go of it once the connection is lost
    conn.pump.flush()
    return conn, guard


class OffTests(SynchronousTestCase):
    def test_offByDefault(self) -> None:
        """Without L{_metrics.enable} a handshake, a refused login, an authorization and an HTTP request record nothing."""
        self.assertFalse(_metrics.enabled())
        before = samples()
        tls_connection(Clock(), client="alice")
        service = Service()
        self.assertEqual(service.login("alice", "wrong").code, 401)
        self.assertEqual(service.request("GET", "/healthz").code, 200)
        _metrics.record_reload("tls", "ok")
        self.assertEqual(samples(), before)

    def test_enableRecords(self) -> None:
        """The same handshake, once enabled, is counted (so the test above can fail)."""
        recording(self)
        before = sum(
            v for n, labels, v in samples() if n == "securenet_tls_handshakes_total" and dict(labels)["listener"] == LISTENER
        )
        tls_connection(Clock(), client="alice")
        after = sum(
            v for n, labels, v in samples() if n == "securenet_tls_handshakes_total" and dict(labels)["listener"] == LISTENER
        )
        self.assertEqual(after - before, 1)


class ClampTests(SynchronousTestCase):
    def setUp(self) -> None:
        recording(self)

    def test_mechanism(self) -> None:
        self.assertEqual(_metrics.clamp("mechanism", "PLAIN"), "PLAIN")
        self.assertEqual(_metrics.clamp("mechanism", "EVIL-MECH"), "other")
        self.assertEqual(_metrics.clamp("mechanism", None), "-")
        self.assertEqual(_metrics.clamp("mechanism", b"PLAIN"), "other")

    def test_status(self) -> None:
        self.assertEqual(
            [_metrics.status_label(c) for c in (200, 404, 418, 599, 99, 1000, True)], ["200", "404", "4xx", "5xx"] + ["other"] * 3
        )

    def test_declaredSets(self) -> None:
        """The TLS layer declared its error classes and TLS 1.2 suites; the web layer its routes."""
        self.assertEqual(_metrics.clamp("tls_reason", "UntrustedCertificate"), "UntrustedCertificate")
        self.assertEqual(_metrics.clamp("tls_reason", "ConnectionClosedDuringHandshake"), "ConnectionClosedDuringHandshake")
        self.assertEqual(_metrics.clamp("tls_reason", "ValueError"), "other")
        self.assertEqual(_metrics.clamp("cipher", "ECDHE-RSA-AES128-GCM-SHA256"), "ECDHE-RSA-AES128-GCM-SHA256")
        self.assertEqual(_metrics.clamp("cipher", "NULL-MD5"), "other")
        Service()
        self.assertEqual(_metrics.clamp("route", "/admin/users/{name}/disable"), "/admin/users/{name}/disable")
        self.assertEqual(_metrics.clamp("route", "/admin/users/alice/disable"), "other")

    def test_allowAfterUse(self) -> None:
        """A value declared after it was first recorded (and remembered as C{other}) is its own label from then on."""
        delta = Deltas(
            ("securenet_http_requests_total", {"route": "other", "status": "200"}),
            ("securenet_http_requests_total", {"route": "/declared-late", "status": "200"}),
        )
        _metrics.http_request("/declared-late", 200)
        _metrics.allow("route", ["/declared-late"])
        _metrics.http_request("/declared-late", 200)
        self.assertEqual(delta(), [1, 1])

    def test_reload(self) -> None:
        """C{record_reload(what, result)}: the lead's reload code calls it; unknown values are C{other}."""
        delta = Deltas(
            ("securenet_reloads_total", {"what": "crl", "result": "refused"}),
            ("securenet_reloads_total", {"what": "other", "result": "other"}),
        )
        _metrics.record_reload("crl", "refused")
        _metrics.record_reload("crl", "refused")
        _metrics.record_reload("everything", "maybe")
        self.assertEqual(delta(), [2, 1])


class HandshakeTests(SynchronousTestCase):
    def setUp(self) -> None:
        recording(self)
        self.clock = Clock()

    def test_okAndOpenConnections(self) -> None:
        """One handshake: one count with its version and cipher, one duration; the connection is open until it closes."""
        open_ = ("securenet_open_connections", {"listener": LISTENER})
        seconds = ("securenet_tls_handshake_seconds_count", {"listener": LISTENER, "result": "ok"})
        before_open, before_seconds = value(*open_[:1], **open_[1]), value(seconds[0], **seconds[1])
        conn, guard = tls_connection(self.clock, client="alice")
        facts = guard.handshake
        assert facts is not None
        ok = {"listener": LISTENER, "result": "ok", "reason": "-", "version": facts.tls_version, "cipher": str(facts.cipher)}
        self.assertIn(facts.tls_version, ("TLSv1.2", "TLSv1.3"))
        self.assertGreaterEqual(value("securenet_tls_handshakes_total", **ok), 1)
        self.assertEqual(value(open_[0], **open_[1]) - before_open, 1)
        self.assertEqual(value(seconds[0], **seconds[1]) - before_seconds, 1)
        count = value("securenet_tls_handshakes_total", **ok)
        tls_connection(self.clock, client="alice")
        self.assertEqual(value("securenet_tls_handshakes_total", **ok) - count, 1)
        transport_of(guard).loseConnection()
        conn.pump.flush()
        self.assertEqual(value(open_[0], **open_[1]) - before_open, 1)  # the second connection is still open

    def test_badClientCertificate(self) -> None:
        """A certificate of another CA: counted as failed with its error class; neither its name nor the peer is a label."""
        failed = [
            (n, dict(labels))
            for n, labels, _ in samples()
            if n == "securenet_tls_handshakes_total" and dict(labels)["result"] == "failed"
        ]
        before = {tuple(sorted(labels.items())): value(n, **labels) for n, labels in failed}
        _, guard = tls_connection(self.clock, client="mallory-evil", client_pki=OTHER_PKI, client_auth="required")
        self.assertIsNone(guard.handshake)
        self.assertFalse(guard.connected)
        changed = [
            (dict(labels), v - before.get(labels, 0))
            for n, labels, v in samples()
            if n == "securenet_tls_handshakes_total" and dict(labels)["result"] == "failed" and v != before.get(labels, 0)
        ]
        self.assertEqual(len(changed), 1, changed)
        labels, moved = changed[0]
        self.assertEqual(moved, 1)
        self.assertEqual(labels["listener"], LISTENER)
        self.assertEqual(labels["reason"], "UntrustedCertificate")
        for label in label_values():
            self.assertNotIn("mallory", label)
            self.assertNotIn("54321", label)  # the client's port


class AuthenticationTests(SynchronousTestCase):
    """Stream sessions, the exchange driven by hand."""

    def setUp(self) -> None:
        recording(self)
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.portal = memory_portal({"alice": ["reader"]}, passwords={"alice": "alice-pw"}, clock=self.clock)
        self.client_apps = RecordingFactory()

    def connect(self, throttle: Throttle | None = None) -> MemoryConnection:
        factory = SessionFactory(
            RecordingFactory(b"app\r\n"),
            self.portal,
            self.clock,
            throttle=throttle,
            settings=ExchangeSettings(max_attempts=50, deadline=100_000),
        )
        factory.listener = LISTENER
        conn = connect_in_memory(
            server_policy=PKI.server_policy(client_auth="optional"),
            client_policy=PKI.client_policy(),
            server_factory=factory,
            client_factory=self.client_apps,
            clock=self.clock,
            raw_client=True,
        )
        self.guard = conn.server_guard
        conn.pump.flush()
        self.conn = conn
        return conn

    def send(self, line: str) -> None:
        transport_of(self.client_apps.built[-1]).write(line.encode() + b"\r\n")
        self.conn.pump.flush()

    def plain(self, user: str, password: str) -> str:
        return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()

    def test_knownSequence(self) -> None:
        """An unknown mechanism, a wrong user name, a wrong password, a success: each counted once, by its kind."""
        delta = Deltas(
            ("securenet_authentications_total", {"mechanism": "-", "result": "denied", "reason": "unknown-mechanism"}),
            ("securenet_authentications_total", {"mechanism": "PLAIN", "result": "denied", "reason": "refused"}),
            ("securenet_authentications_total", {"mechanism": "PLAIN", "result": "ok", "reason": "-"}),
            ("securenet_authentication_seconds_count", {"mechanism": "PLAIN", "result": "denied"}),
            ("securenet_authentication_seconds_count", {"mechanism": "PLAIN", "result": "ok"}),
        )
        self.connect()
        self.send("AUTH EVIL-MECH-xyz")
        self.send(self.plain("nosuchuser-evil", "pw"))
        self.send(self.plain("alice", "wrong"))
        self.send(self.plain("alice", "alice-pw"))
        self.assertIn(b"OK alice", b"".join(self.client_apps.built[-1].received))
        self.assertEqual(delta(), [1, 2, 1, 2, 1])
        for label in label_values():
            for hostile in HOSTILE:
                self.assertNotIn(hostile.lower(), label.lower())

    def test_belowTheLogLevel(self) -> None:
        """Decisions are counted even when their events are dropped (log level warn drops the ok)."""
        previous = audit.level()
        audit.set_level("warn")
        self.addCleanup(audit.set_level, previous)
        log = Events(self)
        delta = Deltas(("securenet_authentications_total", {"mechanism": "PLAIN", "result": "ok", "reason": "-"}))
        self.connect()
        self.send(self.plain("alice", "alice-pw"))
        self.assertEqual(log.of("auth.decision"), [])
        self.assertEqual(delta(), [1])

    def test_throttledAndLockouts(self) -> None:
        """Failures up to the lockout, then a refused unchecked attempt: lockouts as the events say, one throttled."""
        log = EventCapture(self)
        store: Any = self.portal.realm.store  # type: ignore[attr-defined]
        throttle = Throttle(store, self.clock, ThrottlePolicy(free_failures=1, account_lockout=3))
        delta = Deltas(
            ("securenet_lockouts_total", {}),
            ("securenet_throttled_attempts_total", {}),
            ("securenet_authentications_total", {"mechanism": "PLAIN", "result": "denied", "reason": "throttled"}),
        )
        self.connect(throttle)
        for _ in range(3):
            self.send(self.plain("alice", "wrong"))
            self.clock.advance(61)  # past every delay, short of the lockout
        self.assertEqual(len(log.of("auth.lockout")), 1)
        self.assertTrue(self.guard.connected)
        self.send(self.plain("alice", "alice-pw"))
        received = b"".join(self.client_apps.built[-1].received)
        self.assertEqual(received.count(b"NO THROTTLED"), 1)
        self.assertEqual(delta(), [1, 1, 1])


class AuthorizationTests(SynchronousTestCase):
    def test_everyDecision(self) -> None:
        """An allow (a debug event, dropped at the default level) and a deny: each counted once."""
        recording(self)
        log = Events(self)
        policy = Policy.parse('[roles.reader]\npermissions = ["kv.read"]\n', source="policy.toml")
        alice = Identity(avatar_id="alice", mechanism="EXTERNAL", peer="127.0.0.1:1", roles=("reader",))
        delta = Deltas(
            ("securenet_authorizations_total", {"result": "allow"}), ("securenet_authorizations_total", {"result": "deny"})
        )
        policy.require(alice, "kv.read")
        self.assertRaises(AuthorizationDenied, policy.require, alice, "kv.write")
        self.assertEqual(len(log.of("authz.decision")), 1)
        self.assertEqual(delta(), [1, 1])


class HTTPTests(SynchronousTestCase):
    def setUp(self) -> None:
        recording(self)
        self.service = Service()

    def test_routesAndStatuses(self) -> None:
        """Requests are labelled by the matched route template, or C{other}: never by their path."""
        delta = Deltas(
            ("securenet_http_requests_total", {"route": "/healthz", "status": "200"}),
            ("securenet_http_requests_total", {"route": "other", "status": "404"}),
            ("securenet_http_requests_total", {"route": "/admin/users/{name}/disable", "status": "405"}),
            ("securenet_http_requests_total", {"route": "/auth/login", "status": "401"}),
            ("securenet_authentications_total", {"mechanism": "PLAIN", "result": "denied", "reason": "refused"}),
        )
        self.assertEqual(self.service.request("GET", "/healthz").code, 200)
        self.assertEqual(self.service.request("GET", "/zz-evil-path/x").code, 404)
        self.assertEqual(self.service.request("GET", "/admin/users/evil-name/disable").code, 405)
        self.assertEqual(self.service.login("nosuchuser-evil", "pw").code, 401)
        self.assertEqual(delta(), [1, 1, 1, 1, 1])
        for label in label_values():
            for hostile in HOSTILE:
                self.assertNotIn(hostile.lower(), label.lower())

    def test_refusedBeforeARequest(self) -> None:
        """A header block too large is answered 431 at once: counted under C{other}."""
        delta = Deltas(("securenet_http_requests_total", {"route": "other", "status": "431"}))
        response = self.service.request("GET", "/healthz", *[(f"X-Pad-{i}", "a" * 8000) for i in range(6)])
        self.assertEqual(response.code, 431)
        self.assertEqual(delta(), [1])


class AuditSinkTests(SynchronousTestCase):
    def test_writeFailures(self) -> None:
        """Each audit event the failing observer could not write is one failure."""
        recording(self)
        failing_sink(self)
        delta = Deltas(("securenet_audit_sink_failures_total", {}))
        audit.auth_lockout("user:alice", 5, 60)
        audit.auth_lockout("user:alice", 6, 60)
        self.assertEqual(delta(), [2])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)
