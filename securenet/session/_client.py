"""
The client side: connect a protocol factory to a securenet service, run the
authentication exchange (docs/protocol.md), then hand the connection to the
application.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IProtocol, IProtocolFactory
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from securenet._errors import SecurenetError
from securenet._logs import SecurenetLogger
from securenet.interfaces import IClientMechanism, ISession
from securenet.sasl._builtin import AnonymousClientMechanism, ExternalClientMechanism
from securenet.sasl._channel import channel_bindings
from securenet.sasl._mechanism import ChannelBindings, MechanismError
from securenet.session._errors import AuthenticationFailed, ProtocolViolation, ServerNotAuthenticated
from securenet.session._exchange import DEFAULT_DEADLINE, MAX_LINE, PROTOCOL_VERSION, b64decode, b64encode, decode_identity
from securenet.tls._endpoints import SecureClientEndpoint, client_endpoint
from securenet.tls._errors import TLSError
from securenet.tls._guard import TLSGuard, TLSGuardFactory

log = SecurenetLogger(namespace="securenet.auth")


MechanismChooser = Callable[[Sequence[str], ChannelBindings, bool], IClientMechanism]

#: How long a client waits for the exchange to finish after the handshake:
#: longer than a server's default deadline, so that a securenet server's own
#: C{NO TIMEOUT} arrives first; a TLS peer that never greets is given up on.
CLIENT_DEADLINE = 2 * DEFAULT_DEADLINE


def default_mechanism(offered: Sequence[str], bindings: ChannelBindings, has_certificate: bool) -> IClientMechanism:
    """
    Without explicit credentials: EXTERNAL when we sent a certificate and the
    server offers it, else ANONYMOUS when offered.
    """
    if has_certificate and "EXTERNAL" in offered:
        return ExternalClientMechanism()
    if "ANONYMOUS" in offered:
        return AnonymousClientMechanism()
    raise AuthenticationFailed(
        "NO-MECHANISM",
        f"the server needs credentials (it offers {' '.join(offered) or 'nothing'}); give a mechanism and its credentials",
    )


@attrs.frozen
class ClientCredentials:
    """
    How a client authenticates: a mechanism (or a function choosing one from
    what the server offers), and a TOTP code source for a second factor.
    """

    mechanism: IClientMechanism | MechanismChooser | None = None
    totp: Callable[[], str] | None = None

    def choose(self, offered: Sequence[str], bindings: ChannelBindings, has_certificate: bool) -> IClientMechanism:
        if self.mechanism is None:
            return default_mechanism(offered, bindings, has_certificate)
        if IClientMechanism.providedBy(self.mechanism):
            chosen: IClientMechanism = self.mechanism
        else:
            chosen = self.mechanism(offered, bindings, has_certificate)
        if chosen.name not in offered:
            raise AuthenticationFailed("NO-MECHANISM", f"the server does not offer {chosen.name} (it offers {' '.join(offered)})")
        return chosen


class ClientSessionFactory(TLSGuardFactory):
    """
    @ivar early_data: connect the application as soon as a pipelined
        C{AUTH EXTERNAL} has left, without waiting for the server's C{OK}
        (docs/protocol.md, "Early application data").
    """

    def __init__(
        self,
        appFactory: IProtocolFactory,
        reactor: Any,
        credentials: ClientCredentials,
        *,
        early_data: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(appFactory, reactor, **kwargs)
        self.credentials = credentials
        self.early_data = early_data


@implementer(ISession)
class ClientSession(TLSGuard):
    """
    Reads the greeting, authenticates, checks the server's final proof, then
    connects the application.  C{identity} stays None on the client;
    C{authenticated_as} is the name the server gave us.
    """

    factory: ClientSessionFactory
    identity = None
    policy = None
    authenticated_as: str | None = None
    _error: AuthenticationFailed | None = None
    _answering = False

    _deadline: IDelayedCall | None = None
    _pipelined: IClientMechanism | None = None
    _offered: Sequence[str] = ()
    #: The application is connected (early data) but the server has not said OK yet.
    _early = False

    def handshakeSucceeded(self) -> None:
        self._buffer = b""
        self._state = "GREETING"
        self._mechanism: IClientMechanism | None = None
        self._error: AuthenticationFailed | None = None
        self._deadline = self.factory.reactor.callLater(CLIENT_DEADLINE, self._exchangeTimedOut)
        self._pipelined = self._pipelinable()
        if self._pipelined is not None:
            # docs/protocol.md, "Pipelining EXTERNAL": saves a round trip.
            early = self.factory.early_data
            try:
                self._sendAuth(self._pipelined, early=early)
            except AuthenticationFailed as e:
                self._fail(e)
                return
            if early:
                # "Early application data": the application may write now; its
                # bytes follow the AUTH line, and what the server sends is
                # still read as the exchange until its OK.
                self._early = True
                self.connectApplication()

    def _pipelinable(self) -> IClientMechanism | None:
        """
        The EXTERNAL mechanism to send before the greeting arrives, or None:
        only when EXTERNAL is what we would choose (no mechanism given, or
        EXTERNAL itself) and the server asked for the certificate we sent
        (its certificate request named the CAs it accepts).
        """
        handle = self.transport.getHandle()
        if not handle.get_certificate() or not handle.get_client_ca_list(as_cryptography=True):
            return None
        mechanism = self.factory.credentials.mechanism
        if mechanism is None:
            return ExternalClientMechanism()
        if IClientMechanism.providedBy(mechanism) and mechanism.name == "EXTERNAL":
            return mechanism
        return None

    def _sendAuth(self, mechanism: IClientMechanism, *, early: bool = False) -> None:
        try:
            initial = mechanism.initial()
        except (ValueError, MechanismError) as e:
            raise AuthenticationFailed("CLIENT", f"cannot authenticate: {e}") from None
        command = f"AUTH {mechanism.name}"
        if initial is not None:
            command += " " + b64encode(initial)
        if early:
            # EXTERNAL's initial response is never absent ("=" when empty).
            command += " EARLY"
        self._send(command)

    def _exchangeTimedOut(self) -> None:
        self._deadline = None
        if self._state == "GREETING":
            error: AuthenticationFailed = ProtocolViolation(
                "TIMEOUT", f"no securenet greeting within {CLIENT_DEADLINE:g} s: is it a securenet service?"
            )
        else:
            error = AuthenticationFailed("TIMEOUT", f"the server did not finish authentication within {CLIENT_DEADLINE:g} s")
        self._error = error
        # A peer that stalls may not read either: do not wait to flush.
        self.transport.abortConnection()

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def dataReceived(self, data: bytes) -> None:
        if self._appConnected and not self._early:
            self.wrappedProtocol.dataReceived(data)
            return
        if self.handshake is None or self._error is not None:
            return
        self._buffer += data
        self._processLines()

    def _exchanging(self) -> bool:
        return (not self._appConnected or self._early) and self._error is None and not self._answering

    def _processLines(self) -> None:
        while self._exchanging():
            index = self._buffer.find(b"\n")
            if index < 0:
                if len(self._buffer) > MAX_LINE:
                    self._fail(ProtocolViolation("LINE-TOO-LONG", "the server sent an over-long line"))
                return
            line, self._buffer = self._buffer[:index], self._buffer[index + 1 :]
            try:
                self._lineReceived(line.rstrip(b"\r").decode("ascii"))
            except (SecurenetError, UnicodeDecodeError, ValueError) as e:
                self._fail(self._asFailure(e))

    def _asFailure(self, error: Exception) -> AuthenticationFailed:
        if isinstance(error, AuthenticationFailed):
            return error
        if isinstance(error, MechanismError):
            return ServerNotAuthenticated("SERVER-PROOF", str(error))
        if isinstance(error, SecurenetError):
            # Ours, not the server's: e.g. no TOTP code could be read.
            return AuthenticationFailed("CLIENT", str(error))
        return ProtocolViolation("PROTOCOL", f"unexpected data from the server ({error})")

    def _send(self, line: str) -> None:
        self.transport.write(line.encode("ascii") + b"\r\n")

    def _lineReceived(self, line: str) -> None:
        if self._state == "GREETING":
            parts = line.split(" ")
            if len(parts) < 3 or parts[0] != "SECURENET" or parts[2] != "AUTH":
                raise ProtocolViolation(
                    "PROTOCOL", "the server did not greet with SECURENET ... AUTH: is it a securenet service?"
                )
            if parts[1] != PROTOCOL_VERSION:
                raise ProtocolViolation("PROTOCOL", f"the server speaks version {parts[1]}, we speak {PROTOCOL_VERSION}")
            self._offered = parts[3:]
            if self._pipelined is not None:
                pipelined, self._pipelined = self._pipelined, None
                self._mechanism = pipelined
                if self._early and pipelined.name not in self._offered:
                    # The server closes: our early bytes were discarded.
                    raise AuthenticationFailed(
                        "UNKNOWN-MECHANISM",
                        f"the server does not offer {pipelined.name} (it offers {' '.join(self._offered) or 'nothing'}); "
                        "early data was discarded",
                    )
                # Not offered: the server answers NO UNKNOWN-MECHANISM (not
                # counted against us), and we choose again from its offer.
                self._state = "AUTH" if pipelined.name in self._offered else "PIPELINE-REFUSED"
                return
            self._choose()
            return
        verb, _, rest = line.partition(" ")
        if self._state == "PIPELINE-REFUSED":
            if verb != "NO" or not rest.startswith("UNKNOWN-MECHANISM"):
                raise ProtocolViolation("PROTOCOL", f"unexpected answer to a pipelined AUTH EXTERNAL: {line[:60]!r}")
            self._choose()
            return
        assert self._mechanism is not None
        if verb == "+" and self._state == "AUTH":
            # A mechanism may answer later (SCRAM derives its keys off the
            # reactor thread when given a runner): read nothing until it has.
            self._answering = True
            answer: Deferred[bytes] = maybeDeferred(self._mechanism.respond, b64decode(rest))  # type: ignore[call-overload]
            answer.addCallback(lambda data: self._send(b64encode(data)))
            answer.addErrback(self._answerFailed)
            answer.addBoth(self._answered)
        elif verb == "NEXT" and rest == "TOTP" and self._state == "AUTH":
            source = self.factory.credentials.totp
            if source is None:
                raise AuthenticationFailed("TOTP-REQUIRED", "the server requires a TOTP code and none was given")
            self._state = "TOTP"
            self._send(f"TOTP {source().strip()}")
        elif verb == "OK" and self._state in ("AUTH", "TOTP"):
            name, _, extra = rest.partition(" ")
            self._mechanism.verify_success(b64decode(extra) if extra else None)
            self.authenticated_as = decode_identity(name)
            leftover, self._buffer = self._buffer, b""
            self._cancelDeadline()
            if self._early:
                self._early = False
                if leftover:
                    self.wrappedProtocol.dataReceived(leftover)
                return
            app = self.connectApplication()
            if app is not None and leftover and self._appConnected:
                app.dataReceived(leftover)
        elif verb == "NO":
            code, _, text = rest.partition(" ")
            raise AuthenticationFailed(code, text)
        else:
            raise ProtocolViolation("PROTOCOL", f"unexpected line from the server in state {self._state}: {line[:60]!r}")

    def _choose(self) -> None:
        """Choose a mechanism from the server's offer and start it."""
        bindings = channel_bindings(self.transport.getHandle(), "client")
        has_certificate = bool(self.transport.getHandle().get_certificate())
        try:
            self._mechanism = self.factory.credentials.choose(self._offered, bindings, has_certificate)
        except (ValueError, MechanismError) as e:
            raise AuthenticationFailed("CLIENT", f"cannot authenticate: {e}") from None
        self._state = "AUTH"
        self._sendAuth(self._mechanism)

    def _answerFailed(self, failure: Failure) -> None:
        if isinstance(failure.value, (SecurenetError, ValueError)):
            self._fail(self._asFailure(failure.value))
            return
        log.failure("client mechanism {name} failed", failure, name=getattr(self._mechanism, "name", "?"))
        self._fail(AuthenticationFailed("CLIENT", f"internal error in the client mechanism ({failure.value!r})"))

    def _answered(self, _: object) -> None:
        self._answering = False
        if self.connected:
            self._processLines()

    def _fail(self, error: AuthenticationFailed) -> None:
        self._error = error
        self._cancelDeadline()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelDeadline()
        super().connectionLost(reason)

    def failureFor(self, reason: Failure) -> Failure:
        """
        A TLS refusal wins (with TLS 1.3 a refused client certificate is only
        reported after the handshake); then our own exchange error; then a
        server that closed during the exchange.
        """
        failure = super().failureFor(reason)
        if isinstance(failure.value, TLSError) or (self._appConnected and not self._early) or self.handshake is None:
            return failure
        if self._error is not None:
            return Failure(self._error)
        return Failure(ProtocolViolation("CLOSED", "the server closed the connection during authentication"))


ClientSessionFactory.protocol = ClientSession


def connect(
    reactor: Any,
    endpoint: str | SecureClientEndpoint,
    factory: IProtocolFactory,
    *,
    mechanism: IClientMechanism | MechanismChooser | None = None,
    totp: Callable[[], str] | None = None,
    early_data: bool = False,
) -> Deferred[IProtocol]:
    """
    Connect C{factory}'s protocol to a securenet server.

    @param endpoint: a C{securenet:host=...:port=...} string or an endpoint.
    @param mechanism: how to authenticate: a client mechanism (e.g.
        C{PlainClientMechanism("alice", password)}), a function choosing one
        from the server's offer, or None for EXTERNAL (with a client
        certificate) or ANONYMOUS.
    @param totp: called for a TOTP code if the server asks for one.
    @param early_data: when EXTERNAL is pipelined (a client certificate the
        server asked for, no other mechanism given), connect the application
        right after the TLS handshake, one round trip sooner, without
        waiting for the server's OK (docs/protocol.md, "Early application
        data").  If the server then refuses, it discards what the
        application sent and closes: the application's C{connectionLost}
        gets the L{AuthenticationFailed}.  Without a pipelined EXTERNAL this
        changes nothing.
    @return: a Deferred that fires with the connected application protocol
        (its C{connectionMade} has run) once the server is verified and we
        are authenticated (with C{early_data}: once the server is verified
        and our C{AUTH} is sent), or fails with a typed error
        (L{securenet.tls.TLSError}, L{AuthenticationFailed}, or a
        connection error) with no application byte sent.  Cancelling it
        stops connecting, or closes the connection before the application
        is connected.
    """
    if isinstance(endpoint, str):
        endpoint = client_endpoint(reactor, endpoint)
    session = ClientSessionFactory(factory, reactor, ClientCredentials(mechanism, totp), early_data=early_data)
    return endpoint.connect(session)
