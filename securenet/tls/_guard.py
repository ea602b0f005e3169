"""
The protocol that sits directly under Twisted's TLS layer on every securenet
connection.

It closes a connection whose handshake does not finish in time (Twisted
never does), turns every failure into a typed L{TLSError}, emits one
C{tls.handshake} event per handshake, and builds the application protocol
only once the handshake (and, in subclasses, authentication) succeeded.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, cast

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from securenet import _metrics, audit
from securenet._logs import SecurenetLogger
from securenet.pki._facts import CertificateFacts
from securenet.tls._context import ConnectionState, state_of
from securenet.tls._errors import ConnectionClosedDuringHandshake, HandshakeTimeout, TLSError, classify
from securenet.tls._facts import HandshakeFacts

log = SecurenetLogger(namespace="securenet.tls")


def _error_classes(cls: type[TLSError]) -> list[type[TLSError]]:
    return [cls, *(sub for child in cls.__subclasses__() for sub in _error_classes(child))]


# The metrics' closed set of handshake failure reasons: the TLS error classes.
_metrics.allow("tls_reason", (cls.__name__ for cls in _error_classes(TLSError)))

#: (guard class, the transport's declaration) -> the guard's declaration
#: (see TLSGuard._provideLike); a handful of entries, kept alive here.
_DECLARATIONS: dict[tuple[type, Any], Any] = {}


def describe_address(address: IAddress | None) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class TLSGuardFactory(WrappingFactory):
    """
    Wraps an application factory for use under TLS.

    @ivar ready: if given, fired with the application protocol once it is
        connected, or failed with the typed error if the connection fails
        first (used by L{securenet.connect}).
    @ivar listener: the metrics' label of the connections (a listener's
        C{interface:port}, set by L{securenet.tls.SecureServerEndpoint};
        C{-} for others).
    """

    protocol: Any = None  # set below, after TLSGuard
    listener: str = "-"

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        reactor: IReactorTime,
        *,
        ready: Deferred[IProtocol] | None = None,
    ) -> None:
        super().__init__(wrappedFactory)
        self.reactor = reactor
        self.ready = ready
        self._whenClosed: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> TLSGuard:
        # The application protocol is built later, once the peer is trusted.
        guard: TLSGuard = self.protocol(self, addr)
        return guard

    def connections(self) -> list[TLSGuard]:
        """The guards of the open connections, from the TCP accept on (handshake and authentication included)."""
        return list(self.protocols)

    def unregisterProtocol(self, p: TLSGuard) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._whenClosed = self._whenClosed, []
            for d in waiting:
                d.callback(None)

    def whenClosed(self) -> Deferred[None]:
        """Fires once no connection of this factory is open (at once if none is)."""
        d: Deferred[None] = Deferred()
        if not self.protocols:
            d.callback(None)
        else:
            self._whenClosed.append(d)
        return d


@implementer(IHandshakeListener)
class TLSGuard(ProtocolWrapper):
    """
    See the module docstring.  C{self.handshake} holds the L{HandshakeFacts}
    once the handshake is done.
    """

    factory: TLSGuardFactory
    wrappedProtocol: Any
    # The TLS transport (TLSMemoryBIOProtocol): ITransport plus ISSLTransport,
    # abortConnection and getHandle.
    transport: Any
    handshake: HandshakeFacts | None = None

    def __init__(self, factory: TLSGuardFactory, addr: IAddress | None) -> None:
        ProtocolWrapper.__init__(self, factory, None)  # type: ignore[arg-type]
        self.addr = addr
        self._timer: IDelayedCall | None = None
        self._timedOut = False
        self._appConnected = False
        self._started = 0.0
        self._counted = False

    # -- connection set-up -------------------------------------------------

    @property
    def role(self) -> str:
        state = self.tlsState()
        return state.role if state is not None else "server"

    def tlsState(self) -> ConnectionState | None:
        return state_of(getattr(self.transport, "getHandle", lambda: None)())

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection would connect the application now;
        # we only do that once the peer is trusted.
        self._provideLike(transport)
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)

    def _provideLike(self, transport: Any) -> None:
        """
        Provide the interfaces C{transport} provides, as ProtocolWrapper
        does.  zope.interface builds the same declaration for every
        connection over the same kind of transport (and caches it), but
        flattening the interfaces again costs several microseconds per new
        connection: remember the declaration per (class, transport's
        declaration) and set it as C{directlyProvides} would.
        """
        key = (type(self), providedBy(transport))
        declaration = _DECLARATIONS.get(key)
        if declaration is None:
            directlyProvides(self, key[1])
            # What directlyProvides stored on this instance.
            _DECLARATIONS[key] = getattr(self, "__provides__")  # noqa: B009 - a dunder mypy cannot type
        else:
            setattr(self, "__provides__", declaration)  # noqa: B010 - the same

    def connectionMade(self) -> None:
        state = self.tlsState()
        timeout = state.handshake_timeout if state is not None else 10.0
        self._timer = self.factory.reactor.callLater(timeout, self._handshakeTimedOut, timeout)
        self._started = perf_counter()
        self._counted = _metrics.enabled()
        _metrics.connection_opened(self.factory.listener)
        # Nagle's algorithm holds back the last small TLS record of a response
        # until the peer's delayed ACK (about 40 ms per round trip); TLS
        # already coalesces writes into records, so turn it off.
        tcp = getattr(self.transport, "transport", None)
        if tcp is not None and hasattr(tcp, "setTcpNoDelay"):
            tcp.setTcpNoDelay(True)

    def _handshakeTimedOut(self, timeout: float) -> None:
        self._timer = None
        self._timedOut = True
        self._timeout = timeout
        self.transport.abortConnection()

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def peerDescription(self) -> str:
        return describe_address(self.addr)

    def _refreshPeer(self) -> None:
        """
        Take the peer's address from the transport: behind a PROXY-protocol
        balancer (C{proxyProtocol=}) the header, read after this guard was
        built, names the client, which the transport then reports.
        """
        peer = self.transport.getPeer() if self.transport is not None else None
        if peer is not None:
            self.addr = peer

    @property
    def application(self) -> Any:
        """The application protocol once it is connected; None during the handshake (and authentication)."""
        return self.wrappedProtocol if self._appConnected else None

    def handshakeCompleted(self) -> None:
        self._cancelTimer()
        self._refreshPeer()
        state = self.tlsState()
        role = state.role if state is not None else "server"
        if state is not None:
            state.handshake_done()
        seen: list[Any] = []
        if state is not None and role == "server" and state.error is None and 0 in state.chain:
            # The client's chain as CA verification saw it (depth 0 = leaf).
            seen = state.seen_chain()
        self.handshake = HandshakeFacts.of(self.transport.getHandle(), role, self.peerDescription(), seen)
        _metrics.handshake(
            self.factory.listener, "ok", None, self.handshake.tls_version, self.handshake.cipher, perf_counter() - self._started
        )
        self.reportHandshake()
        self.handshakeSucceeded()

    def reportHandshake(self) -> None:
        """Emit the C{tls.handshake} event of the successful handshake."""
        assert self.handshake is not None
        audit.tls_handshake_ok(self.handshake.role, self.handshake.log_fields())

    def handshakeSucceeded(self) -> None:
        """The peer is trusted: connect the application.  Subclasses authenticate first."""
        self.connectApplication()

    def connectApplication(self) -> IProtocol | None:
        """Build the application protocol and connect it to this transport."""
        app = self.factory.wrappedFactory.buildProtocol(self.addr)
        if app is None:
            self.transport.loseConnection()
            return None
        self.wrappedProtocol = app
        self._appConnected = True
        app.makeConnection(self)
        if IHandshakeListener.providedBy(app):
            app.handshakeCompleted()
        ready, self.factory.ready = self.factory.ready, None
        if ready is not None:
            ready.callback(app)
        return app  # type: ignore[no-any-return]

    # -- traffic ---------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._appConnected:
            self.wrappedProtocol.dataReceived(data)

    def readConnectionLost(self) -> None:
        if self._appConnected and IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.readConnectionLost()

    def writeConnectionLost(self) -> None:
        if self._appConnected and IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.writeConnectionLost()

    def logPrefix(self) -> str:
        if self.wrappedProtocol is not None:
            return cast(str, ProtocolWrapper.logPrefix(self))
        return "securenet"

    # -- tear-down -------------------------------------------------------------

    def failureFor(self, reason: Failure) -> Failure:
        """
        The typed failure for C{reason}: a verification refusal recorded by
        the policy wins, then a handshake timeout, then OpenSSL's error.
        """
        state = self.tlsState()
        if state is not None and state.error is not None:
            return Failure(state.error)
        if self._timedOut:
            return Failure(HandshakeTimeout(f"TLS handshake did not finish within {self._timeout:g} s"))
        if isinstance(reason.value, (SSL.Error, TLSError)):
            return Failure(classify(reason.value))
        if self.handshake is None and isinstance(reason.value, (ConnectionDone, ConnectionLost)):
            return Failure(ConnectionClosedDuringHandshake("peer closed the connection before the TLS handshake finished"))
        return reason

    def failedHandshakeFields(self) -> dict[str, object]:
        """
        The C{tls.handshake} fields of a failed handshake: the same keys as a
        successful one, C{None} where nothing was negotiated, and the refused
        peer certificate's subject and pin when verification saw it.
        """
        fields: dict[str, object] = dict.fromkeys(
            ("tls_version", "cipher", "group", "sni", "alpn", "resumed", "peer_subject", "peer_pin")
        )
        fields["peer"] = self.peerDescription()
        connection = getattr(self.transport, "getHandle", lambda: None)()
        if connection is not None and connection.get_cipher_name() is not None:
            # Before a cipher is agreed OpenSSL reports a version it never
            # negotiated; only trust these once the peer's hello was accepted.
            fields["tls_version"] = connection.get_protocol_version_name()
            fields["cipher"] = connection.get_cipher_name()
            fields["group"] = connection.get_group_name()
        state = self.tlsState()
        leaf = state.certificate(0) if state is not None else None
        if leaf is not None:
            facts = CertificateFacts.of(leaf)
            fields["peer_subject"] = facts.subject
            fields["peer_pin"] = facts.pin
        return fields

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Nothing resets BaseProtocol.connected for us: callers that finish
        # later (an authentication Deferred) check it.
        self.connected = False
        self._cancelTimer()
        if self.handshake is None:
            self._refreshPeer()
        failure = self.failureFor(reason)
        state = self.tlsState()
        if state is not None and state.role == "client" and self.handshake is not None:
            state.connection_closed(self.transport.getHandle(), clean=failure.check(ConnectionDone) is not None)
        if self._counted:
            _metrics.connection_closed(self.factory.listener)
            self._counted = False
        if self.handshake is None:
            fields = self.failedHandshakeFields()
            error_type = type(failure.value).__name__
            _metrics.handshake(
                self.factory.listener,
                "failed",
                error_type,
                cast("str | None", fields["tls_version"]),
                cast("str | None", fields["cipher"]),
                perf_counter() - self._started,
            )
            audit.tls_handshake_failed(self.role, str(failure.value), error_type, fields)
        ready, self.factory.ready = self.factory.ready, None
        if self._appConnected:
            ProtocolWrapper.connectionLost(self, failure)
        else:
            self.factory.unregisterProtocol(self)
            self.wrappedProtocol = None
            self.connectionLostBeforeApplication(failure)
        if ready is not None:
            ready.errback(failure)

    def connectionLostBeforeApplication(self, failure: Failure) -> None:
        """Hook: the connection ended before the application was connected."""


TLSGuardFactory.protocol = TLSGuard
