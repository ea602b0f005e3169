"""
securenet's Prometheus metrics: its own registry (L{REGISTRY}, never
prometheus_client's global one), every metric family (L{FAMILIES}), and one
small typed recording function per fact.

Recording is off until L{enable} is called (C{twistd securenet --metrics}):
while it is off every recording function returns at once, after one check
of a module global, so a service without C{--metrics} pays nothing.

Label values come from closed sets only: no user name, address, path or
other text a network peer chooses ever becomes a label.  Each recording
function clamps its labels: a value outside its set becomes C{other}
(C{-} stands for "none", e.g. no TLS version was negotiated).  The sets
that belong to a higher layer (the TLS error classes, the TLS 1.2 cipher
suites of the profiles, the route templates of the HTTP API) are declared
by that layer with L{allow}; the listener label is configuration
(C{interface:port} of a C{securenet:} listener).

This module sits at the bottom of the package: it imports nothing of
securenet's, so every layer may record through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

#: securenet's registry: what C{/metrics} exposes.
REGISTRY = CollectorRegistry(auto_describe=True)

#: A label value outside its closed set.
OTHER = "other"
#: A label that has no value here (no TLS version negotiated, no refusal reason).
NONE = "-"

_on = False


def enable() -> None:
    """Start recording (C{twistd securenet --metrics})."""
    global _on
    _on = True


def disable() -> None:
    """Stop recording (tests; the values recorded so far stay)."""
    global _on
    _on = False


def enabled() -> bool:
    """Whether the recording functions record."""
    return _on


# -- the closed sets ---------------------------------------------------------------

#: Every label's closed set of values (besides C{other} and C{-}); L{allow} extends the declared ones.
VALUES: dict[str, set[str]] = {
    "tls_result": {"ok", "failed"},
    # the TLS error class names (securenet.tls declares them)
    "tls_reason": set(),
    "tls_version": {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"},
    # TLS 1.3 suites here; the profiles' TLS 1.2 suites are declared by securenet.tls
    "cipher": {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    },
    "mechanism": {
        "PLAIN",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256-PLUS",
        "OAUTHBEARER",
        "APIKEY",
        "EXTERNAL",
        "ANONYMOUS",
    },
    "auth_result": {"ok", "denied"},
    # the login flow's refusal kinds (refused, throttled, unavailable) and the exchange's protocol refusals
    "auth_reason": {
        "refused",
        "throttled",
        "unavailable",
        "malformed",
        "unknown-mechanism",
        "bad-state",
        "aborted",
        "timeout",
        "too-much-data",
        "line-too-long",
        "missing",
        "unsupported",
    },
    "authz_result": {"allow", "deny"},
    # the route templates of the HTTP API (securenet.web declares them)
    "route": set(),
    "status": {
        "200",
        "201",
        "204",
        "301",
        "302",
        "304",
        "400",
        "401",
        "403",
        "404",
        "405",
        "408",
        "409",
        "413",
        "414",
        "415",
        "429",
        "431",
        "500",
        "501",
        "502",
        "503",
        "504",
    },
    "reload_what": {"tls", "crl", "policy", "token-keys", "checker"},
    "reload_result": {"ok", "refused"},
    "role": {"leaf", "chain", "trust-root"},
}


def allow(label: str, values: Iterable[str]) -> None:
    """Declare more values of C{label}'s closed set (the layer that owns them does, at import)."""
    VALUES[label].update(values)
    for cache in _CACHES:
        cache.clear()


def clamp(label: str, value: object) -> str:
    """C{value} if it is in C{label}'s closed set, C{-} for None, else C{other}."""
    if value is None:
        return NONE
    if isinstance(value, str) and value in VALUES[label]:
        return value
    return OTHER


def status_label(code: object) -> str:
    """An HTTP status: the code if it is in the fixed list, else its class (C{4xx}), else C{other}."""
    if isinstance(code, int) and not isinstance(code, bool):
        text = str(code)
        if text in VALUES["status"]:
            return text
        if 100 <= code <= 599:
            return f"{code // 100}xx"
    return OTHER


# -- the families ----------------------------------------------------------------------

#: Handshake durations: from the TCP connection to the end of the TLS handshake.
HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Authentication durations: the portal's checkers (password hashing dominates).
AUTHENTICATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

TLS_HANDSHAKES = Counter(
    "securenet_tls_handshakes",
    "TLS handshakes, by listener, result (ok, failed), failure reason (the TLS error class), TLS version and cipher.",
    ["listener", "result", "reason", "version", "cipher"],
    registry=REGISTRY,
)
TLS_HANDSHAKE_SECONDS = Histogram(
    "securenet_tls_handshake_seconds",
    "Seconds from a connection's start to the end of its TLS handshake (or its failure), by listener and result.",
    ["listener", "result"],
    buckets=HANDSHAKE_BUCKETS,
    registry=REGISTRY,
)
AUTHENTICATIONS = Counter(
    "securenet_authentications",
    "Authentication decisions (stream and HTTP), by mechanism, result (ok, denied) and refusal reason.",
    ["mechanism", "result", "reason"],
    registry=REGISTRY,
)
AUTHENTICATION_SECONDS = Histogram(
    "securenet_authentication_seconds",
    "Seconds the portal's checkers took to decide a login, by mechanism and result.",
    ["mechanism", "result"],
    buckets=AUTHENTICATION_BUCKETS,
    registry=REGISTRY,
)
THROTTLED = Counter(
    "securenet_throttled_attempts",
    "Login attempts refused without a check because the account or address is throttled.",
    registry=REGISTRY,
)
LOCKOUTS = Counter(
    "securenet_lockouts",
    "Times an account or address reached its lockout threshold.",
    registry=REGISTRY,
)
AUTHORIZATIONS = Counter(
    "securenet_authorizations",
    "Authorization decisions, by result (allow, deny).",
    ["result"],
    registry=REGISTRY,
)
OPEN_CONNECTIONS = Gauge(
    "securenet_open_connections",
    "TLS connections open now, by listener.",
    ["listener"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "securenet_http_requests",
    "HTTP requests answered, by route template and status.",
    ["route", "status"],
    registry=REGISTRY,
)
RELOADS = Counter(
    "securenet_reloads",
    "Reloads, by what was reloaded (tls, crl, policy, token-keys, checker) and result (ok, refused).",
    ["what", "result"],
    registry=REGISTRY,
)
AUDIT_SINK_FAILURES = Counter(
    "securenet_audit_sink_failures",
    "Audit events a log observer failed to write.",
    registry=REGISTRY,
)

#: The names, types and help of the families collected at scrape time (their collector lives with the service).
CERTIFICATE_NOT_AFTER = (
    "securenet_certificate_not_after_seconds",
    "The notAfter of every certificate a listener loaded (leaf, chain, trust roots), in seconds since the epoch.",
)
CRL_NEXT_UPDATE = (
    "securenet_crl_next_update_seconds",
    "The nextUpdate of every CRL a listener loaded, in seconds since the epoch.",
)

#: Every family securenet records, in one list.
FAMILIES: tuple[MetricWrapperBase, ...] = (
    TLS_HANDSHAKES,
    TLS_HANDSHAKE_SECONDS,
    AUTHENTICATIONS,
    AUTHENTICATION_SECONDS,
    THROTTLED,
    LOCKOUTS,
    AUTHORIZATIONS,
    OPEN_CONNECTIONS,
    HTTP_REQUESTS,
    RELOADS,
    AUDIT_SINK_FAILURES,
)


# -- recording ----------------------------------------------------------------------------

#: The children (labelled series) already looked up, by the recording function's raw arguments:
#: one dict lookup instead of clamping and prometheus_client's labels() on every connection.
#: The raw arguments come from bounded sets (configuration, OpenSSL's names, the code's own
#: constants); the caches stop growing at L{_CACHE_LIMIT} entries all the same.
_CACHES: list[dict[Any, Any]] = []
_CACHE_LIMIT = 4096


def _cache() -> dict[Any, Any]:
    cache: dict[Any, Any] = {}
    _CACHES.append(cache)
    return cache


_handshakes = _cache()
_authentications = _cache()
_authentication_times = _cache()
_connections = _cache()
_requests = _cache()


def _remember(cache: dict[Any, Any], key: Any, child: Any) -> Any:
    if len(cache) < _CACHE_LIMIT:
        cache[key] = child
    return child


def handshake(listener: str, result: str, reason: str | None, version: str | None, cipher: str | None, seconds: float) -> None:
    """One TLS handshake ended: C{result} C{ok} or C{failed} with C{reason} the TLS error class name."""
    if not _on:
        return
    key = (listener, result, reason, version, cipher)
    children = _handshakes.get(key)
    if children is None:
        clamped = clamp("tls_result", result)
        children = _remember(
            _handshakes,
            key,
            (
                TLS_HANDSHAKES.labels(
                    listener, clamped, clamp("tls_reason", reason), clamp("tls_version", version), clamp("cipher", cipher)
                ),
                TLS_HANDSHAKE_SECONDS.labels(listener, clamped),
            ),
        )
    children[0].inc()
    children[1].observe(seconds)


def authentication(mechanism: str | None, result: str, reason: str | None) -> None:
    """One authentication decision (C{reason} a refusal kind, None when it succeeded)."""
    if not _on:
        return
    key = (mechanism, result, reason)
    child = _authentications.get(key)
    if child is None:
        child = _remember(
            _authentications,
            key,
            AUTHENTICATIONS.labels(clamp("mechanism", mechanism), clamp("auth_result", result), clamp("auth_reason", reason)),
        )
    child.inc()


def authentication_time(mechanism: str | None, result: str, seconds: float) -> None:
    """The portal's checkers took C{seconds} to decide a login."""
    if not _on:
        return
    key = (mechanism, result)
    child = _authentication_times.get(key)
    if child is None:
        child = _remember(
            _authentication_times, key, AUTHENTICATION_SECONDS.labels(clamp("mechanism", mechanism), clamp("auth_result", result))
        )
    child.observe(seconds)


def throttled() -> None:
    """A login attempt was refused unchecked: its account or address is throttled."""
    if not _on:
        return
    THROTTLED.inc()


def lockout() -> None:
    """An account or address reached its lockout threshold."""
    if not _on:
        return
    LOCKOUTS.inc()


def authorization(result: str) -> None:
    """One authorization decision, C{allow} or C{deny}."""
    if not _on:
        return
    AUTHORIZATIONS.labels(clamp("authz_result", result)).inc()


def _connections_of(listener: str) -> Any:
    child = _connections.get(listener)
    if child is None:
        child = _remember(_connections, listener, OPEN_CONNECTIONS.labels(listener))
    return child


def connection_opened(listener: str) -> None:
    """A connection of C{listener} opened."""
    if not _on:
        return
    _connections_of(listener).inc()


def connection_closed(listener: str) -> None:
    """A connection of C{listener} closed (one that L{connection_opened} counted)."""
    if not _on:
        return
    _connections_of(listener).dec()


def http_request(route: str | None, status: int) -> None:
    """An HTTP request was answered: C{route} its route template (None: no route matched)."""
    if not _on:
        return
    key = (route, status)
    child = _requests.get(key)
    if child is None:
        child = _remember(
            _requests, key, HTTP_REQUESTS.labels(clamp("route", route) if route is not None else OTHER, status_label(status))
        )
    child.inc()


def audit_sink_failure() -> None:
    """A log observer failed to write an audit event."""
    if not _on:
        return
    AUDIT_SINK_FAILURES.inc()


def record_reload(what: str, result: str) -> None:
    """
    A reload of C{what} (C{tls}, C{crl}, C{policy}, C{token-keys},
    C{checker}) ended with C{result} (C{ok}, C{refused}).
    """
    if not _on:
        return
    RELOADS.labels(clamp("reload_what", what), clamp("reload_result", result)).inc()


__all__ = [
    "FAMILIES",
    "NONE",
    "OTHER",
    "REGISTRY",
    "VALUES",
    "allow",
    "audit_sink_failure",
    "authentication",
    "authentication_time",
    "authorization",
    "clamp",
    "connection_closed",
    "connection_opened",
    "disable",
    "enable",
    "enabled",
    "handshake",
    "http_request",
    "lockout",
    "record_reload",
    "status_label",
    "throttled",
]
