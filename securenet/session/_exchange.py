"""
The authentication exchange (docs/protocol.md), server side.

L{ServerExchange} runs between the TLS handshake and the application: it
greets, parses lines within a length limit, runs the chosen SASL mechanism
step by step, checks credentials through the portal (so the decision is
always a checker's), asks for TOTP when a second factor is due, applies
throttling and the per-connection limits, and emits one C{auth.decision}
event per decision.  It knows nothing of TLS beyond the handshake facts and
channel bindings it is given.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import attrs
from twisted.cred.credentials import Anonymous
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from securenet import audit
from securenet._logs import SecurenetLogger
from securenet.cred._credentials import CertificateCredentials
from securenet.cred._identity import AuthenticationContext, Identity
from securenet.cred._login import Attempt, LoginFailure, LoginFlow
from securenet.cred._throttle import Throttle
from securenet.interfaces import IServerMechanism
from securenet.sasl._mechanism import Challenge, ChannelBindings, Complete, MechanismError
from securenet.sasl._offer import BindingsSource, BuiltinMechanism, offered_mechanisms
from securenet.tls._facts import HandshakeFacts

if TYPE_CHECKING:
    from securenet.session._server import ServerSession

log = SecurenetLogger(namespace="securenet.auth")

PROTOCOL_VERSION = "1"
MAX_LINE = 8192
DEFAULT_DEADLINE = 30.0
DEFAULT_MAX_ATTEMPTS = 3

_IDENTITY_SAFE = "-._~:@/+=,"
_TOTP_CODE = re.compile("[0-9]{6,8}")


def encode_identity(avatar_id: str) -> str:
    """The identity as it appears in C{OK}: percent-encoded, never containing spaces or CR/LF."""
    return urllib.parse.quote(avatar_id, safe=_IDENTITY_SAFE)


def decode_identity(text: str) -> str:
    return urllib.parse.unquote(text, errors="strict")


def b64decode(text: str) -> bytes:
    """Decode a payload (C{=} is empty); raise L{MechanismError} if it is not base64."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MechanismError("payload is not valid base64") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") if data else "="


@attrs.frozen
class ExchangeSettings:
    """Limits of the exchange (see docs/protocol.md)."""

    max_line: int = MAX_LINE
    deadline: float = DEFAULT_DEADLINE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: Bytes buffered before authentication (a client must wait for each answer).
    max_buffer: int = 8 * MAX_LINE


def _refusal(failure: LoginFailure) -> _Refused:
    """The exchange's answer to a refused login."""
    if failure.kind == "unavailable" and failure.cause == "db":
        return _Refused(
            "DB-UNAVAILABLE",
            "the credential database cannot be reached now; try again later",
            failure.reason,
            failure.attempted,
        )
    if failure.kind == "unavailable":
        return _Refused(
            "AUDIT-UNAVAILABLE",
            "the service cannot record authentications now; try again later",
            failure.reason,
            failure.attempted,
        )
    if failure.kind == "throttled":
        return _Refused(
            "THROTTLED", f"too many recent failures; try again in {failure.retry_after} s", failure.reason, failure.attempted
        )
    return _Refused("AUTH-FAILED", "authentication failed", failure.reason, failure.attempted)


#: The metrics' reason of a refusal answered with a code (any other code, lower-cased).
_REFUSAL_KINDS = {"AUTH-FAILED": "refused", "THROTTLED": "throttled", "AUDIT-UNAVAILABLE": "unavailable"}


class _Refused(Exception):
    """
    An attempt ends with C{NO code text}; C{reason} is for the audit log.
    With C{counts} False the line was no attempt (a wrong pipelined guess,
    see docs/protocol.md): answered, but neither counted nor logged.
    """

    def __init__(self, code: str, text: str, reason: str, attempted: str | None = None, counts: bool = True) -> None:
        super().__init__(reason)
        self.code = code
        self.text = text
        self.reason = reason
        self.attempted = attempted
        self.counts = counts


class ServerExchange:
    """
    One connection's exchange.  Fed with bytes by the session; calls
    C{session.authenticated(identity, leftover_bytes)} on success, and closes
    the connection when the limits say so.
    """

    def __init__(
        self,
        session: ServerSession,
        portal: Portal,
        reactor: IReactorTime,
        *,
        bindings: BindingsSource,
        throttle: Throttle | None,
        settings: ExchangeSettings,
    ) -> None:
        self.session = session
        self.portal = portal
        self.reactor = reactor
        self._bindings = bindings
        self.throttle = throttle
        self.login = LoginFlow(portal, throttle)
        self.settings = settings
        assert session.handshake is not None
        self.facts: HandshakeFacts = session.handshake
        self.peer = session.peerDescription()
        self.address = getattr(session.addr, "host", self.peer)
        self.mechanisms = offered_mechanisms(portal, bool(self.facts.peer_chain), self._bindingsOnce)
        self.attempts = 0
        #: Lines received so far, and auth.decision events emitted.
        self.lines = 0
        self.decisions = 0
        self.state = "READY"
        #: The client announced early application data (docs/protocol.md,
        #: "Early application data"): any answer but OK closes the connection.
        self.early = False
        self.buffer = b""
        self.busy = False
        self.done = False
        self.current: tuple[Any, IServerMechanism | None] | None = None
        #: After the first factor, while a TOTP code is due: its identity,
        #: attempt and context, and how many codes were tried.
        self.pending: tuple[Identity, Attempt, AuthenticationContext] | None = None
        self.totp_tries = 0
        self.pending_success: Callable[[], bytes | None] | None = None
        self.deadline: IDelayedCall | None = None

    def _bindingsOnce(self) -> ChannelBindings:
        if not isinstance(self._bindings, ChannelBindings):
            self._bindings = self._bindings()
        return self._bindings

    @property
    def bindings(self) -> ChannelBindings:
        """The connection's channel bindings (computed when first needed)."""
        return self._bindingsOnce()

    # -- plumbing ---------------------------------------------------------------

    def start(self) -> None:
        self.deadline = self.reactor.callLater(self.settings.deadline, self._timedOut)
        self.send(" ".join(["SECURENET", PROTOCOL_VERSION, "AUTH", *self.mechanisms]))

    def send(self, line: str) -> None:
        self.session.transport.write(line.encode("ascii") + b"\r\n")

    def stop(self) -> None:
        self.done = True
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        self.deadline = None

    def close(self, code: str, text: str) -> None:
        self.send(f"NO {code} {text}")
        self.stop()
        self.session.transport.loseConnection()

    def _timedOut(self) -> None:
        self.deadline = None
        self._log(
            "denied", None, None, f"the exchange did not finish within {self.settings.deadline:g} s", None, refusal="timeout"
        )
        self.close("TIMEOUT", "authentication took too long")

    def dataReceived(self, data: bytes) -> None:
        if self.done:
            return
        self.buffer += data
        if len(self.buffer) > self.settings.max_buffer:
            self.buffer = b""
            self._log(
                "denied",
                None,
                None,
                f"more than {self.settings.max_buffer} bytes sent before authentication",
                None,
                refusal="too-much-data",
            )
            self.close("TOO-MUCH-DATA", "wait for each answer before sending more")
            return
        self._processLines()

    def _processLines(self) -> None:
        while not self.busy and not self.done:
            index = self.buffer.find(b"\n")
            if index < 0:
                # max_line bytes without a LF can only end as a longer line.
                if len(self.buffer) >= self.settings.max_line:
                    self._lineTooLong()
                return
            if index + 1 > self.settings.max_line:
                self._lineTooLong()
                return
            line, self.buffer = self.buffer[:index], self.buffer[index + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            self._lineReceived(line)

    def _lineTooLong(self) -> None:
        self.buffer = b""
        self._log("denied", None, None, f"a line exceeded {self.settings.max_line} bytes", None, refusal="line-too-long")
        self.close("LINE-TOO-LONG", f"lines are limited to {self.settings.max_line} bytes")

    # -- the state machine -----------------------------------------------------

    def _lineReceived(self, raw: bytes) -> None:
        self.lines += 1
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            self._refuse(_Refused("MALFORMED", "lines must be ASCII", "non-ASCII line"))
            return
        self.busy = True
        d: defer.Deferred[Any] = defer.maybeDeferred(self._dispatch, line)
        d.addErrback(self._attemptFailed)
        d.addErrback(self._internalError)
        d.addBoth(self._resume)

    def _resume(self, _: object) -> None:
        self.busy = False
        if not self.done and self.session.connected:
            self._processLines()

    def _dispatch(self, line: str) -> Any:
        if self.state == "READY":
            verb, _, rest = line.partition(" ")
            if verb != "AUTH":
                raise _Refused("BAD-STATE", "expected AUTH <mechanism> [initial-response]", f"unexpected command {verb[:20]!r}")
            name, _, arguments = rest.partition(" ")
            initial_text, _, flag = arguments.partition(" ")
            if flag:
                self._startEarly(name, initial_text, flag)
            factory = self.mechanisms.get(name)
            if factory is None:
                # A client may send AUTH EXTERNAL before it has read the
                # greeting (docs/protocol.md, "Pipelining EXTERNAL"): that
                # first guess, if wrong, is not held against it.
                raise _Refused(
                    "UNKNOWN-MECHANISM",
                    f"mechanism not offered; use one of {' '.join(self.mechanisms)}",
                    f"mechanism {name[:40]!r} not offered",
                    counts=not (name == "EXTERNAL" and self.lines == 1),
                )
            initial = self._decode(initial_text) if initial_text else None
            return self._begin(name, factory, initial)
        if self.state == "MECHANISM":
            if line == "*":
                raise _Refused("ABORTED", "authentication cancelled", "client cancelled")
            assert self.current is not None
            factory, mechanism = self.current
            assert mechanism is not None
            return mechanism.step(self._decode(line)).addCallback(self._stepped, factory)
        if self.state == "TOTP":
            verb, _, code = line.partition(" ")
            if verb != "TOTP":
                raise _Refused("BAD-STATE", "expected TOTP <code>", f"unexpected command {verb[:20]!r} instead of TOTP")
            if not _TOTP_CODE.fullmatch(code):
                raise _Refused("MALFORMED", "expected TOTP and 6 to 8 digits", "malformed TOTP code")
            return self._secondFactor(code)
        raise _Refused("BAD-STATE", "no command is valid now", f"line in state {self.state}")

    def _startEarly(self, name: str, initial_text: str, flag: str) -> None:
        """
        C{AUTH EXTERNAL <initial-response> EARLY}: application bytes follow
        the line.  Valid only as the first line, for EXTERNAL (the one
        mechanism that completes without a challenge, and never asks for a
        second factor); from here on any refusal closes the connection and
        the buffered bytes are discarded.
        """
        # Whatever follows this line may be application data: never parse it
        # as exchange lines, even when the flag itself is refused.
        self.early = True
        if flag != "EARLY":
            raise _Refused(
                "MALFORMED", "expected AUTH <mechanism> [initial-response] [EARLY]", f"unknown AUTH flag {flag[:20]!r}"
            )
        if name != "EXTERNAL" or self.lines != 1 or not initial_text:
            raise _Refused(
                "MALFORMED",
                "EARLY is valid only on the first line, AUTH EXTERNAL <authzid or => EARLY",
                "EARLY on a line other than a first AUTH EXTERNAL",
            )

    def _decode(self, text: str) -> bytes:
        try:
            return b64decode(text)
        except MechanismError:
            raise _Refused("MALFORMED", "payload is not valid base64", "payload is not valid base64") from None

    def _begin(self, name: str, factory: Any, initial: bytes | None) -> Any:
        if isinstance(factory, BuiltinMechanism):
            self.current = (factory, None)
            if name == "EXTERNAL":
                credentials: Any = CertificateCredentials(
                    self.facts.peer_chain, verified=True, known_facts=self.facts.peer_certificate
                )
                authzid = (initial or b"").decode("utf-8", "replace")
                return self._checkCredentials(Complete(credentials), authzid=authzid)
            return self._checkCredentials(Complete(Anonymous()))
        mechanism: IServerMechanism = factory(self.bindings, self.peer)
        self.current = (factory, mechanism)
        return mechanism.step(initial).addCallback(self._stepped, factory)

    def _stepped(self, step: Challenge | Complete, factory: Any) -> Any:
        if isinstance(step, Challenge):
            self.state = "MECHANISM"
            self.send(f"+ {b64encode(step.data)}")
            return None
        return self._checkCredentials(step)

    @property
    def mechanismName(self) -> str:
        return self.current[0].name if self.current is not None else "?"

    def _checkCredentials(self, complete: Complete, authzid: str = "") -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._firstFactor(complete, authzid))

    async def _firstFactor(self, complete: Complete, authzid: str) -> None:
        self.state = "CHECKING"
        attempted = getattr(complete.credentials, "username", None)
        if isinstance(attempted, bytes):
            attempted = attempted.decode("utf-8", "replace")
        context = AuthenticationContext(
            mechanism=self.mechanismName,
            peer=self.peer,
            certificate=self.facts.peer_certificate,
        )
        try:
            # ANONYMOUS proves nothing: it is neither held back nor forgives anyone.
            attempt = await self.login.admit(attempted, self.address, throttled=self.mechanismName != "ANONYMOUS")
            identity = await self.login.check(complete.credentials, context, attempted)
        except LoginFailure as e:
            raise _refusal(e) from None
        if authzid and authzid != identity.avatar_id:
            raise _Refused(
                "AUTH-FAILED", "authentication failed", f"authorization id {authzid!r} is not {identity.avatar_id!r}", attempted
            )
        self.pending_success = complete.success_data
        factory = self.current[0] if self.current is not None else None
        try:
            if getattr(factory, "second_factor_allowed", False) and await self.login.second_factor_required(identity.avatar_id):
                # The code that follows is part of this attempt (docs/protocol.md):
                # it stays counted until the second factor passes.
                self.pending = (identity, attempt, context)
                self.state = "TOTP"
                self.send("NEXT TOTP")
                return
            await self.login.succeeded(attempt)
        except LoginFailure as e:  # unavailable: the credential database is out of reach
            raise _refusal(e) from None
        self._succeed(identity)

    def _secondFactor(self, code: str) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._checkSecondFactor(code))

    async def _checkSecondFactor(self, code: str) -> None:
        assert self.pending is not None
        first, attempt, context = self.pending
        self.state = "CHECKING"
        try:
            if self.totp_tries:
                # A retry after a wrong code is a new attempt.
                await self.login.retry(attempt, first.avatar_id)
            self.totp_tries += 1
            identity = await self.login.check_second_factor(first, code, context)
        except LoginFailure as e:
            self.state = "TOTP"
            raise _refusal(e) from None
        try:
            await self.login.succeeded(attempt)
        except LoginFailure as e:  # unavailable: the credential database is out of reach
            raise _refusal(e) from None
        self._succeed(identity)

    def _succeed(self, identity: Identity) -> None:
        if not self.session.connected or getattr(self.session.transport, "disconnecting", False):
            self.stop()
            return
        extra = self.pending_success() if self.pending_success is not None else None
        self.stop()
        self._log("ok", identity.mechanism, identity.avatar_id, None, None, second_factor=identity.second_factor)
        ok = f"OK {encode_identity(identity.avatar_id)}"
        if extra:
            ok += " " + b64encode(extra)
        self.send(ok)
        leftover, self.buffer = self.buffer, b""
        self.session.authenticated(identity, leftover)

    def _attemptFailed(self, failure: Failure) -> None:
        failure.trap(_Refused, MechanismError)
        if isinstance(failure.value, MechanismError):
            refused = _Refused("MALFORMED", "malformed mechanism data", str(failure.value))
        else:
            refused = cast(_Refused, failure.value)
        self._refuse(refused)

    def _refuse(self, refused: _Refused) -> None:
        if self.done:
            return
        if refused.counts:
            self._log(
                "denied",
                self.mechanismName if self.current else None,
                None,
                refused.reason,
                refused.attempted,
                refusal=_REFUSAL_KINDS.get(refused.code, refused.code.lower()),
            )
        if self.state != "TOTP":
            self.state = "READY"
            self.current = None
        if refused.counts:
            self.attempts += 1
        if self.early:
            # What follows the AUTH line is application data the server will
            # never deliver: discard it, answer, and close.
            self.buffer = b""
            self.close(refused.code, refused.text)
            return
        if self.attempts >= self.settings.max_attempts:
            self.close("TOO-MANY-ATTEMPTS", f"{self.attempts} failed attempts; closing")
            return
        self.send(f"NO {refused.code} {refused.text}")

    def _internalError(self, failure: Failure) -> None:
        log.failure("internal error in the authentication exchange with {peer}", failure, peer=self.peer)
        self.stop()
        self.session.transport.abortConnection()

    def _log(
        self,
        result: str,
        mechanism: str | None,
        identity: str | None,
        reason: str | None,
        attempted: str | None,
        second_factor: str | None = None,
        refusal: str | None = None,
    ) -> None:
        self.decisions += 1
        audit.auth_decision(
            result,
            mechanism,
            identity,
            fields=self.facts.log_fields(),
            attempted=attempted,
            reason=reason,
            second_factor=second_factor,
            refusal=refusal,
        )
