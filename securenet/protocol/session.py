"""
The server side of a securenet connection, between TLS and the application.

After the handshake the peer is authenticated through a C{twisted.cred}
portal; only then is the application protocol built, and it finds the
L{Identity} on its transport (L{identity_of}).  Nothing here assumes the
credential is a certificate: the credentials for a connection come from
L{SessionFactory.credentialsFor}, the seam where the wire exchange of other
mechanisms (PLAIN, SCRAM, tokens, ...) plugs in.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import Anonymous, IAnonymous
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from securenet.cred.credentials import CertificateCredentials, ICertificateCredentials
from securenet.cred.identity import AuthenticationContext, IIdentity, Identity
from securenet.errors import SecurenetError
from securenet.tls.guard import TLSGuard, TLSGuardFactory

log = Logger(namespace="securenet.auth")

#: Bytes a peer may send before it is authenticated (then the connection closes).
MAX_PREAUTH_BUFFER = 64 * 1024


class ISession(Interface):
    """What the application's transport offers besides the usual ITransport."""

    identity = Attribute("The peer's Identity (set before the application is connected).")
    handshake = Attribute("The HandshakeFacts of the connection's TLS handshake.")


class NotASecureSession(SecurenetError):
    """The protocol is not connected through a securenet session."""


def identity_of(protocol: IProtocol) -> Identity:
    """
    The authenticated identity of the peer of C{protocol}: works for any
    protocol a securenet service connects, subclass of ours or not.
    """
    transport = getattr(protocol, "transport", None)
    session = ISession(transport, None)
    if session is None or session.identity is None:
        raise NotASecureSession(f"{protocol!r} is not connected through a securenet session")
    return session.identity  # type: ignore[no-any-return]


class SessionFactory(TLSGuardFactory):
    """
    Wraps an application factory: the peer must authenticate through
    C{portal} (whose realm gives L{IIdentity}) before the application exists.
    """

    def __init__(
        self,
        appFactory: IProtocolFactory,
        portal: Portal,
        reactor: IReactorTime,
        **kwargs: Any,
    ) -> None:
        super().__init__(appFactory, reactor, **kwargs)
        self.portal = portal

    def credentialsFor(self, session: ServerSession) -> tuple[str, Any]:
        """
        The credentials this connection presents, and their mechanism name:
        the verified client certificate (EXTERNAL) if there is one and a
        checker takes certificates, else anonymous (which only an
        C{anonymous} checker accepts).
        """
        facts = session.handshake
        accepted = self.portal.listCredentialsInterfaces()
        if facts is not None and facts.peer_chain:
            if ICertificateCredentials in accepted or IAnonymous not in accepted:
                return "EXTERNAL", CertificateCredentials(facts.peer_chain, verified=True)
        return "ANONYMOUS", Anonymous()


@implementer(ISession)
class ServerSession(TLSGuard):
    factory: SessionFactory
    identity: Identity | None = None

    def __init__(self, factory: SessionFactory, addr: IAddress) -> None:
        super().__init__(factory, addr)
        self._pending: list[bytes] = []
        self._pendingSize = 0
        self._logout: Any = None

    def handshakeSucceeded(self) -> None:
        mechanism, credentials = self.factory.credentialsFor(self)
        assert self.handshake is not None
        context = AuthenticationContext(
            mechanism=mechanism,
            peer=self.peerDescription(),
            certificate=self.handshake.peer_certificate,
        )
        d: Deferred[Any] = maybeDeferred(self.factory.portal.login, credentials, context, IIdentity)
        d.addCallbacks(self._loggedIn, self._loginFailed, errbackArgs=(mechanism,))
        d.addErrback(self._internalError)

    def _loggedIn(self, result: tuple[Any, Identity, Any]) -> None:
        _, identity, self._logout = result
        if not self.connected or getattr(self.transport, "disconnecting", False):
            # The peer left (or we closed it, e.g. pre-auth overflow) while the
            # checker was deciding: never build the application for it.
            self._callLogout()
            return
        self.identity = identity
        self._logDecision("ok", identity.mechanism, identity.avatar_id, None)
        app = self.connectApplication()
        pending, self._pending = self._pending, []
        if app is not None:
            for chunk in pending:
                if not self._appConnected:
                    break
                app.dataReceived(chunk)

    def _loginFailed(self, failure: Failure, mechanism: str) -> None:
        if failure.check(UnhandledCredentials):
            reason = f"no --auth checker accepts {mechanism} credentials"
        elif failure.check(UnauthorizedLogin):
            reason = str(failure.value) or "credentials refused"
        else:
            log.failure("checker error while authenticating {peer}", failure, peer=self.peerDescription())
            reason = "internal error in the checker"
        self._logDecision("denied", mechanism, None, reason)
        self.transport.loseConnection()

    def _internalError(self, failure: Failure) -> None:
        log.failure("error while starting the application for {peer}", failure, peer=self.peerDescription())
        self.transport.abortConnection()

    def _logDecision(self, result: str, mechanism: str, identity: str | None, reason: str | None) -> None:
        fields = self.handshake.log_fields() if self.handshake is not None else {"peer": self.peerDescription()}
        emit = log.info if result == "ok" else log.warn
        emit(
            "authentication {result} for {peer} by {mechanism}: {identity}{reason_text}",
            securenet_event="auth.decision",
            result=result,
            mechanism=mechanism,
            identity=identity,
            reason=reason,
            reason_text=f" ({reason})" if reason else "",
            **fields,
        )

    def dataReceived(self, data: bytes) -> None:
        if self._appConnected:
            self.wrappedProtocol.dataReceived(data)
            return
        self._pendingSize += len(data)
        if self._pendingSize > MAX_PREAUTH_BUFFER:
            log.warn(
                "{peer} sent more than {limit} bytes before authentication; closing",
                peer=self.peerDescription(),
                limit=MAX_PREAUTH_BUFFER,
                securenet_event="auth.preauth_overflow",
            )
            self._pending = []
            self.transport.abortConnection()
            return
        self._pending.append(data)

    def _callLogout(self) -> None:
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self._pending = []
        try:
            super().connectionLost(reason)
        finally:
            self._callLogout()


SessionFactory.protocol = ServerSession  # type: ignore[assignment]
