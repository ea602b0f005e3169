"""
securenet's audit events: one typed function per event, the one place
where their fields and text lines are written.

Every event is a C{twisted.logger} event with C{securenet_event} naming it
and the fields below (the documented schema: README, "Events"); observers
that want structure read the fields, text logs get one line that never
prints Python's C{None} (a missing identity is the name the client claimed,
or C{-}).  The events and their fields::

    tls.handshake      role, result (ok/failed), reason, peer, TLS facts
    tls.tofu_recorded  host, port, pin, store
    auth.decision      result (ok/denied), mechanism, identity, attempted,
                       second_factor, reason, transport (stream/http), peer,
                       TLS facts; HTTP adds method and path
    auth.lockout       key, count, seconds
    auth.unlock        key, count, by
    auth.token         action (issued/refreshed/reuse/revoked/refused), ...
    authz.decision     result, identity, action, resource, permission, rule,
                       rule_location, reason, mechanism, peer
    http.limit         what (body, request-line, header-line, header-block,
                       header-time, body-time), size, limit, peer
    http.admin         action (user.create/user.disable), admin, user, peer
    service.listening  kind (stream/http), endpoint, profile, client_auth, pin
    service.reload     what (tls/crl/policy/token-keys/checker), source,
                       result (ok/refused), reason, warnings
    service.stopped    drained, closed, unfinished, drain (a graceful stop)

This module sits at the bottom of the package (every layer reports
through it) and imports nothing of securenet's but the log machinery.  The
level below which events are dropped before they are built is set here
too (L{set_level}; C{twistd securenet --log-level}).

An audit trail that cannot be written fails closed: L{watch_sink} (which
C{twistd securenet} installs, C{--audit-failure refuse}, the default) notices
a log observer that raises (a full disk, C{--logfile=/dev/full}); from then
on L{recording} is false and the login flow refuses new authentications
(C{NO AUDIT-UNAVAILABLE} on a stream, 503 over HTTP), one line says so on
stderr, and the first audit event written again without an error ends it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO, cast

import attrs
from twisted.logger import ILogObserver, LogLevel, LogPublisher, globalLogPublisher

from securenet import _metrics
from securenet._logs import DEFAULT_LEVEL, LEVELS, SecurenetLogger, enabled, level, literal, set_level

if TYPE_CHECKING:
    from securenet.authz import Decision

_tls = SecurenetLogger(namespace="securenet.tls")
_auth = SecurenetLogger(namespace="securenet.auth")
_authz = SecurenetLogger(namespace="securenet.authz")
_http = SecurenetLogger(namespace="securenet.web")
_service = SecurenetLogger(namespace="securenet.service")

_EMIT = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn}


# -- the sink: fail closed when the audit trail cannot be written ------------------


@attrs.define
class _Sink:
    watching: bool = False
    fail_closed: bool = True
    failed: bool = False
    reason: str | None = None
    #: An observer failed while the current event was being written.
    failed_now: bool = False
    stderr: TextIO | None = None


_sink = _Sink()


def _say(line: str) -> None:
    # The process's real stderr: twistd redirects sys.stderr into the (failing) log.
    stream = _sink.stderr if _sink.stderr is not None else sys.__stderr__
    try:
        print(f"securenet: {line}", file=stream, flush=True)
    except (OSError, ValueError):
        pass  # stderr itself is gone (a daemon): the state still changes


def _observer_failed(event: Mapping[str, Any]) -> None:
    """
    Watches the publisher: C{LogPublisher} catches an observer's exception
    and reports it to the other observers as an event carrying the
    C{observer} and the C{log_failure} (Twisted's OBSERVER_DISABLED); that
    event is how a write error of the log file reaches us.
    """
    failure = event.get("log_failure")
    if failure is None or "observer" not in event or "disabling observer" not in str(event.get("log_format", "")):
        return
    _sink.failed_now = True
    _metrics.audit_sink_failure()
    if not _sink.failed:
        _sink.failed = True
        _sink.reason = f"{type(failure.value).__name__}: {failure.value}"
        if _sink.fail_closed:
            _say(f"the audit log cannot be written ({_sink.reason}): refusing new authentications until it can")
        else:
            _say(f"the audit log cannot be written ({_sink.reason}); --audit-failure continue: authentications go on unrecorded")


def watch_sink(
    publisher: LogPublisher = globalLogPublisher, *, fail_closed: bool = True, stderr: TextIO | None = None
) -> Callable[[], None]:
    """
    Watch C{publisher}'s observers: while one of them cannot write,
    L{recording} is false (with C{fail_closed}) and the login flow refuses
    new authentications.  Returns a function that stops watching.
    """
    observer = cast(ILogObserver, _observer_failed)
    publisher.addObserver(observer)
    _sink.watching, _sink.fail_closed, _sink.failed, _sink.reason, _sink.stderr = True, fail_closed, False, None, stderr

    def stop() -> None:
        publisher.removeObserver(observer)
        _sink.watching, _sink.failed, _sink.reason, _sink.stderr = False, False, None, None

    return stop


def recording() -> bool:
    """Whether authentications may proceed: the audit trail is being written (or failures are tolerated)."""
    return not (_sink.failed and _sink.fail_closed)


def sink_problem() -> str | None:
    """Why the audit trail cannot be written, while it cannot."""
    return _sink.reason if _sink.failed else None


def _emit(logger: SecurenetLogger, level: LogLevel, text: str, **fields: Any) -> None:
    """Emit one audit event; a write that succeeds while the sink was failing ends the failure."""
    if not enabled(level):
        return
    if not _sink.watching:
        logger.emit(level, text, **fields)
        return
    _sink.failed_now = False
    logger.emit(level, text, **fields)
    if _sink.failed and not _sink.failed_now:
        _sink.failed, _sink.reason = False, None
        _say("the audit log is written again: accepting authentications")


def shown(value: object | None) -> str:
    """A field as a text line shows it: C{-} for None."""
    return "-" if value is None else str(value)


# -- tls ------------------------------------------------------------------------


def tls_handshake_ok(role: str, fields: Mapping[str, Any]) -> None:
    """A TLS handshake succeeded; C{fields} are the handshake facts' C{log_fields()}."""
    _emit(
        _tls,
        LogLevel.info,
        literal(
            f"TLS handshake with {shown(fields.get('peer'))} succeeded: {shown(fields.get('tls_version'))}"
            f" {shown(fields.get('cipher'))}, peer {shown(fields.get('peer_subject'))}"
        ),
        securenet_event="tls.handshake",
        role=role,
        result="ok",
        reason=None,
        **fields,
    )


def tls_handshake_failed(role: str, reason: str, error_type: str, fields: Mapping[str, Any]) -> None:
    """A connection ended before its TLS handshake succeeded."""
    _emit(
        _tls,
        LogLevel.warn,
        literal(f"TLS handshake with {shown(fields.get('peer'))} failed: {reason}"),
        securenet_event="tls.handshake",
        role=role,
        result="failed",
        reason=reason,
        error_type=error_type,
        **fields,
    )


def tofu_recorded(host: str, port: int, pin: str, store: str) -> None:
    """Trust on first use recorded a server's pin."""
    _emit(
        _tls,
        LogLevel.info,
        literal(f"trust on first use: recorded {pin} for {host}:{port} in {store}"),
        securenet_event="tls.tofu_recorded",
        pin=pin,
        host=host,
        port=port,
        store=store,
    )


# -- authentication -----------------------------------------------------------------


def auth_decision(
    result: str,
    mechanism: str | None,
    identity: str | None,
    *,
    fields: Mapping[str, Any],
    attempted: str | None = None,
    reason: str | None = None,
    second_factor: str | None = None,
    http: tuple[str, str] | None = None,
    level: str | None = None,
    refusal: str | None = None,
) -> None:
    """
    One authentication decision, on a stream (C{http} None) or an HTTP
    request (C{http} is its method and path).  Counted in the metrics
    whatever the log level.

    @param fields: the connection's facts: the handshake's C{log_fields()},
        or at least C{peer}.
    @param level: C{debug}, C{info} or C{warn}; by default C{info} for ok
        and C{warn} for anything else.
    @param refusal: the kind of a refusal, from a closed set (the login
        flow's C{refused}, C{throttled}, C{unavailable}; the exchange's
        C{malformed}, ...): the metrics' reason label (C{reason} is free text).
    """
    _metrics.authentication(mechanism, result, None if result == "ok" else (refusal or "other"))
    emit_level = _EMIT.get(level or ("info" if result == "ok" else "warn"), LogLevel.warn)
    if not enabled(emit_level):
        return
    reason_text = f" ({reason})" if reason else ""
    who = identity if identity is not None else attempted
    line = f"authentication {result} for {shown(fields.get('peer'))} by {shown(mechanism)}: {shown(who)}{reason_text}"
    extra: dict[str, Any] = {}
    if http is not None:
        method, path = http
        line += f" (HTTP {method} {path})"
        extra = {"transport": "http", "method": method, "path": path}
    else:
        line += f" over {shown(fields.get('tls_version'))} {shown(fields.get('cipher'))}"
        extra = {"transport": "stream"}
    _emit(
        _auth,
        emit_level,
        literal(line),
        securenet_event="auth.decision",
        result=result,
        mechanism=mechanism,
        identity=identity,
        attempted=attempted,
        second_factor=second_factor,
        reason=reason,
        reason_text=reason_text,
        **extra,
        **fields,
    )


def auth_lockout(key: str, count: int, seconds: float) -> None:
    """An account or address reached its lockout threshold."""
    _metrics.lockout()
    _emit(
        _auth,
        LogLevel.warn,
        literal(f"{key} locked out for {seconds:g} s after {count} consecutive failures"),
        securenet_event="auth.lockout",
        key=key,
        count=count,
        seconds=seconds,
    )


def auth_unlock(key: str, count: int, *, by: str) -> None:
    """An operator cleared the failures of an account or address (C{securenet users unlock})."""
    _auth.emit(
        LogLevel.info,
        literal(f"{key} unlocked by {by}: {count} recorded failures cleared"),
        securenet_event="auth.unlock",
        key=key,
        count=count,
        by=by,
    )


def auth_token(action: str, text: str, *, warn: bool = False, **fields: Any) -> None:
    """
    Something happened to the HTTP API's tokens: C{action} is one of
    C{issued}, C{refreshed}, C{reuse}, C{revoked}, C{refused}; C{fields}
    are its facts (C{identity}, C{family}, C{jti}, C{peer}, C{reason}).
    """
    _emit(
        _auth,
        LogLevel.warn if warn else LogLevel.info,
        literal(text),
        securenet_event="auth.token",
        action=action,
        **fields,
    )


# -- authorization --------------------------------------------------------------------


def authz_decision(decision: Decision, allow_level: str = "debug") -> None:
    """An authorization decision: a deny at warn, an allow at C{allow_level} (counted in the metrics whatever the level)."""
    _metrics.authorization(decision.result)
    if decision.allowed:
        emit_level = LogLevel.info if allow_level == "info" else LogLevel.debug
        if not enabled(emit_level):
            return  # below securenet's log level: build nothing (an allow per RPC call adds up)
    else:
        emit_level = LogLevel.warn
    rule = decision.rule
    resource_text = f" {decision.resource}" if decision.resource is not None else ""
    _emit(
        _authz,
        emit_level,
        literal(f"authorization {decision.result} for {decision.identity}: {decision.action}{resource_text} ({decision.reason})"),
        securenet_event="authz.decision",
        result=decision.result,
        identity=decision.identity,
        action=decision.action,
        resource=decision.resource,
        resource_text=resource_text,
        permission=decision.permission,
        rule=rule.label if rule is not None else None,
        rule_location=str(rule.location) if rule is not None else None,
        reason=decision.reason,
        mechanism=decision.mechanism,
        peer=decision.peer,
    )


# -- HTTP ----------------------------------------------------------------------------


def http_limit(text: str, *, size: int, limit: int, peer: str, what: str = "body") -> None:
    """A request exceeded a limit and was refused."""
    _emit(_http, LogLevel.warn, literal(text), securenet_event="http.limit", what=what, size=size, limit=limit, peer=peer)


def http_admin(action: str, text: str, *, admin: str, user: str, peer: str, roles: Sequence[str] | None = None) -> None:
    """An administrator changed a user through the HTTP API."""
    fields: dict[str, Any] = {"roles": list(roles)} if roles is not None else {}
    _emit(
        _http,
        LogLevel.info,
        literal(text),
        securenet_event="http.admin",
        action=action,
        admin=admin,
        user=user,
        peer=peer,
        **fields,
    )


# -- the service ------------------------------------------------------------------------


def service_listening(kind: str, text: str, *, endpoint: str, profile: str, client_auth: str, pin: str, **fields: Any) -> None:
    """A listener is bound and serving (C{kind} C{stream} or C{http})."""
    _emit(
        _service,
        LogLevel.info,
        literal(text),
        securenet_event="service.listening",
        kind=kind,
        endpoint=endpoint,
        profile=profile,
        client_auth=client_auth,
        pin=pin,
        **fields,
    )


def service_reload(what: str, source: str, *, result: str, reason: str | None = None, warnings: Sequence[str] = ()) -> None:
    """
    A reload of C{what} (C{tls}, C{crl}, C{policy}, C{token-keys}, C{checker})
    from C{source} was C{ok} (done) or C{refused} (then C{reason} says why, naming
    the file, and the previous material keeps serving).
    """
    if result == "ok":
        text = f"reloaded {what} ({source})"
        level = LogLevel.warn if warnings else LogLevel.info
        if warnings:
            text += "; warning: " + "; ".join(warnings)
    else:
        text = f"reload refused: {what} ({source}): {reason}; still serving the previous {what}"
        level = LogLevel.warn
    _emit(
        _service,
        level,
        literal(text),
        securenet_event="service.reload",
        what=what,
        source=source,
        result=result,
        reason=reason,
        warnings=list(warnings),
    )


def service_stopped(text: str, *, drained: int, closed: int, unfinished: int, drain: float) -> None:
    """
    The service stopped gracefully: C{drained} connections ended within the
    drain time, C{closed} were closed at its deadline, C{unfinished} (in the
    handshake or authentication) were closed at once.
    """
    _emit(
        _service,
        LogLevel.info,
        literal(text),
        securenet_event="service.stopped",
        drained=drained,
        closed=closed,
        unfinished=unfinished,
        drain=drain,
    )


__all__ = [
    "DEFAULT_LEVEL",
    "LEVELS",
    "auth_decision",
    "auth_lockout",
    "auth_token",
    "auth_unlock",
    "authz_decision",
    "http_admin",
    "http_limit",
    "level",
    "recording",
    "service_listening",
    "service_reload",
    "service_stopped",
    "set_level",
    "shown",
    "sink_problem",
    "tls_handshake_failed",
    "tls_handshake_ok",
    "tofu_recorded",
    "watch_sink",
]
