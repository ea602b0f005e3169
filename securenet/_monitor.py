"""
C{twistd securenet --metrics ENDPOINT}: the metrics and health listener::

    GET /metrics   securenet's metrics (Prometheus text format)
    GET /healthz   200 "ok": the process is up
    GET /readyz    200 "ready", or 503 with one line per thing not ready

C{ENDPOINT} is a Twisted server endpoint string; a bare port number is
C{tcp:PORT:interface=127.0.0.1} (plain HTTP on the loopback interface), and
a C{securenet:} endpoint serves over TLS with client certificates (it must
say C{clientAuth=required}).

The certificate and CRL gauges are read when Prometheus scrapes
(L{CertificateCollector}), from each C{securenet:} listener's current
policy (C{endpoint.creator.policy}), so they follow reloads by themselves.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from twisted.application.service import IServiceCollection, MultiService
from twisted.internet.defer import Deferred, TimeoutError, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python import usage
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from securenet import _metrics, audit
from securenet._errors import SecurenetError
from securenet._service import Listener
from securenet.interfaces import ICredentialStore
from securenet.pki._pins import spki_pin
from securenet.tls._endpoints import SecureServerEndpoint, server_endpoint
from securenet.tls._server import ServerTLSPolicy
from securenet.web._guard import JSONRouter
from securenet.web._site import SecureSite

#: Seconds C{/readyz} waits for the credential store's answer.
STORE_TIMEOUT = 5.0

_metrics.allow("route", ("/metrics", "/healthz", "/readyz"))


def _epoch(when: datetime.datetime) -> float:
    return when.timestamp()


def secure_endpoint(endpoint: object) -> SecureServerEndpoint | None:
    """The L{SecureServerEndpoint} a listener's endpoint is (or wraps, as the HTTP API's announcing one does), if any."""
    for _ in range(4):
        if isinstance(endpoint, SecureServerEndpoint):
            return endpoint
        endpoint = getattr(endpoint, "endpoint", None)
    return None


def listeners(service: object) -> list[Listener]:
    """Every L{Listener} in C{service}'s tree."""
    found: list[Listener] = []
    if isinstance(service, Listener):
        found.append(service)
    if IServiceCollection.providedBy(service):
        for child in service:
            found.extend(listeners(child))
    return found


def tls_policies(service: object) -> Iterator[tuple[str, ServerTLSPolicy]]:
    """(listener label, current policy) of every C{securenet:} listener of C{service}."""
    for listener in listeners(service):
        endpoint = secure_endpoint(listener.endpoint)
        if endpoint is not None:
            yield endpoint.listener, endpoint.creator.policy


def certificates(policy: ServerTLSPolicy) -> Iterator[tuple[str, x509.Certificate]]:
    """(role, certificate) of every certificate C{policy} loaded: C{leaf}, C{chain}, C{trust-root}."""
    for index, certificate in enumerate(policy.certificate_chain):
        yield ("leaf" if index == 0 else "chain"), certificate
    for certificate in policy.trust_roots:
        yield "trust-root", certificate


class CertificateCollector:
    """
    The C{securenet_certificate_not_after_seconds} and
    C{securenet_crl_next_update_seconds} gauges, read from the listeners'
    policies at each scrape.
    """

    def __init__(self, policies: Callable[[], Iterable[tuple[str, ServerTLSPolicy]]]) -> None:
        self.policies = policies

    def collect(self) -> Iterator[Metric]:
        name, text = _metrics.CERTIFICATE_NOT_AFTER
        not_after = GaugeMetricFamily(name, text, labels=["listener", "role", "pin"])
        name, text = _metrics.CRL_NEXT_UPDATE
        next_update = GaugeMetricFamily(name, text, labels=["listener"])
        seen: set[tuple[str, str, str]] = set()
        for listener, policy in self.policies():
            for role, certificate in certificates(policy):
                key = (listener, role, spki_pin(certificate))
                if key not in seen:
                    seen.add(key)
                    not_after.add_metric(list(key), _epoch(certificate.not_valid_after_utc))
            crl = policy.crl
            if crl is not None and crl.next_update_utc is not None and (listener, "crl", "") not in seen:
                seen.add((listener, "crl", ""))
                next_update.add_metric([listener], _epoch(crl.next_update_utc))
        yield not_after
        yield next_update


class Exposition:
    """What C{/metrics} exposes: securenet's registry and the certificate gauges."""

    def __init__(self, collector: CertificateCollector) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        yield from _metrics.REGISTRY.collect()
        yield from self.collector.collect()


class MetricsResource(Resource):
    """C{/metrics}: prometheus_client's exposition of L{Exposition}."""

    isLeaf = True
    route = "/metrics"

    def __init__(self, exposition: Exposition) -> None:
        super().__init__()
        self.exposition = exposition

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.exposition)


class HealthResource(Resource):
    """C{/healthz}: the process is up."""

    isLeaf = True
    route = "/healthz"

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"ok\n"


class Readiness:
    """
    What C{/readyz} checks: every listener listens, the credential store
    answers a cheap query, every loaded certificate is valid now and every
    CRL's nextUpdate is in the future.

    @param service: the service whose listeners are checked.
    @param store: the credential store, or None.
    """

    def __init__(self, reactor: Any, service: object, store: ICredentialStore | None) -> None:
        self.reactor = reactor
        self.service = service
        self.store = store

    async def problems(self) -> list[str]:
        """One line per thing not ready (empty: ready)."""
        found: list[str] = []
        for listener in listeners(self.service):
            if listener.port is None:
                found.append(f"{listener.option} {_label(listener)}: not listening")
        now = self.reactor.seconds()
        for label, policy in tls_policies(self.service):
            for role, certificate in certificates(policy):
                if _epoch(certificate.not_valid_after_utc) <= now:
                    found.append(
                        f"{label}: {role} certificate {spki_pin(certificate)} expired {_when(certificate.not_valid_after_utc)}"
                    )
                elif _epoch(certificate.not_valid_before_utc) > now:
                    found.append(
                        f"{label}: {role} certificate {spki_pin(certificate)} not valid before"
                        f" {_when(certificate.not_valid_before_utc)}"
                    )
            crl = policy.crl
            if crl is not None and (crl.next_update_utc is None or _epoch(crl.next_update_utc) <= now):
                stale = _when(crl.next_update_utc) if crl.next_update_utc is not None else "(none)"
                found.append(f"{label}: CRL is stale (nextUpdate {stale})")
        if self.store is not None:
            problem = await self._store()
            if problem is not None:
                found.append(f"credential store: {problem}")
        return found

    async def _store(self) -> str | None:
        query: Deferred[Any] = self.store.get_failures("securenet-readyz")  # type: ignore[union-attr]
        query.addTimeout(STORE_TIMEOUT, self.reactor)
        try:
            await query
        except TimeoutError:
            return f"no answer within {STORE_TIMEOUT:g} s"
        except Exception as e:
            return f"query failed ({type(e).__name__})"
        return None


def _label(listener: Listener) -> str:
    endpoint = secure_endpoint(listener.endpoint)
    return endpoint.listener if endpoint is not None else listener.description


def _when(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class ReadyResource(Resource):
    """C{/readyz}: 200 C{ready}, or 503 with one line per problem."""

    isLeaf = True
    route = "/readyz"

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self.readiness = readiness

    def render_GET(self, request: IRequest) -> object:
        def answer(problems: list[str]) -> None:
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            if problems:
                request.setResponseCode(503)
                body = "not ready:\n" + "".join(f"{p}\n" for p in problems)
            else:
                body = "ready\n"
            if not getattr(request, "_disconnected", False):
                request.write(body.encode("utf-8"))
                request.finish()

        ensureDeferred(self.readiness.problems()).addCallback(answer)
        return NOT_DONE_YET


def metrics_root(reactor: Any, service: object, store: ICredentialStore | None) -> Resource:
    """The resource tree of the metrics listener."""
    root = JSONRouter()
    root.putChild(b"metrics", MetricsResource(Exposition(CertificateCollector(lambda: tls_policies(service)))))
    root.putChild(b"healthz", HealthResource())
    root.putChild(b"readyz", ReadyResource(Readiness(reactor, service, store)))
    return root


def metrics_endpoint(reactor: Any, value: str) -> IStreamServerEndpoint:
    """
    Parse C{--metrics}: a bare port (C{tcp:PORT:interface=127.0.0.1}), a
    C{securenet:} endpoint with C{clientAuth=required}, or another Twisted
    server endpoint string.

    @raise usage.UsageError: one line naming what is wrong.
    """
    text = value.strip()
    if text.isdigit():
        port = int(text)
        if port > 65535:
            raise usage.UsageError(f"--metrics {value}: {port} is not a TCP port (0-65535)")
        text = f"tcp:{port}:interface=127.0.0.1"
    if text.startswith("securenet:"):
        try:
            secure = server_endpoint(reactor, text)
        except SecurenetError as e:
            raise usage.UsageError(f"--metrics {value}: {e}") from None
        if secure.policy.client_auth != "required":
            raise usage.UsageError(
                f"--metrics {value}: a securenet: metrics endpoint needs client certificates"
                " (trustRoots=... and clientAuth=required)"
            )
        return secure
    try:
        return serverFromString(reactor, text)  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise usage.UsageError(
            f"--metrics {value}: not a server endpoint ({e}); use a port number or an endpoint string"
        ) from None


def _announcer(endpoint: IStreamServerEndpoint, description: str) -> Callable[[IListeningPort], None]:
    """The one line the metrics listener logs once it listens."""

    def announce(port: IListeningPort) -> None:
        address = port.getHost()
        host = getattr(address, "host", None)
        port_number = getattr(address, "port", None)
        secure = secure_endpoint(endpoint)
        scheme = "https" if secure is not None else "http"
        if host is None:
            where = str(getattr(address, "name", address))
        else:
            where = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port_number}/metrics"
        if secure is not None:
            policy = secure.policy
            profile, client_auth, pin = policy.profile.name, policy.client_auth, spki_pin(policy.certificate_chain[0])
            extra = f": profile {profile}, clientAuth {client_auth}, server pin {pin}"
        else:
            profile, client_auth, pin, extra = "-", "none", "-", ": plain HTTP"
        audit.service_listening(
            "metrics",
            f"securenet metrics listening on {where} ({description}){extra}",
            endpoint=description,
            profile=profile,
            client_auth=client_auth,
            pin=pin,
            address=host if host is not None else where,
            port=port_number,
        )

    return announce


def metrics_service(reactor: Any, value: str, service: MultiService, store: ICredentialStore | None) -> Listener:
    """
    The C{--metrics} listener of C{service} (added to it), and recording
    turned on.

    @raise usage.UsageError: C{value} is not a usable endpoint.
    """
    endpoint = metrics_endpoint(reactor, value)
    site = SecureSite(metrics_root(reactor, service, store), reactor=reactor)
    listener = Listener(
        endpoint, site, option="--metrics", description=value, reactor=reactor, announce=_announcer(endpoint, value)
    )
    listener.setServiceParent(service)
    _metrics.enable()
    return listener


__all__ = [
    "STORE_TIMEOUT",
    "CertificateCollector",
    "Exposition",
    "HealthResource",
    "MetricsResource",
    "Readiness",
    "ReadyResource",
    "certificates",
    "listeners",
    "metrics_endpoint",
    "metrics_root",
    "metrics_service",
    "secure_endpoint",
    "tls_policies",
]
