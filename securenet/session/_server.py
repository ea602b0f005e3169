"""
The server side of a securenet connection, between TLS and the application.

After the handshake the peer authenticates through the exchange of
docs/protocol.md (L{securenet.session.ServerExchange}), every decision a
C{twisted.cred} checker's; only then is the application protocol built, and
it finds the L{Identity} on its transport (L{identity_of}).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from securenet._errors import SecurenetError
from securenet.cred._identity import Identity
from securenet.cred._throttle import Throttle
from securenet.interfaces import IPolicy, ISession
from securenet.sasl._channel import channel_bindings
from securenet.session._exchange import ExchangeSettings, ServerExchange
from securenet.tls._guard import TLSGuard, TLSGuardFactory


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
    C{portal} (whose realm gives L{IIdentity}), by the exchange of
    docs/protocol.md, before the application exists.

    @param throttle: failure counting and lockout across connections, or
        None for none.
    @param policy: the authorization policy (an L{IPolicy})
        that applications reach through their session
        (C{ISession(transport).policy}); the session only carries it.
    """

    def __init__(
        self,
        appFactory: IProtocolFactory,
        portal: Portal,
        reactor: IReactorTime,
        *,
        throttle: Throttle | None = None,
        settings: ExchangeSettings = ExchangeSettings(),
        policy: IPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(appFactory, reactor, **kwargs)
        self.portal = portal
        self.throttle = throttle
        self.settings = settings
        self.policy = policy


@implementer(ISession)
class ServerSession(TLSGuard):
    factory: SessionFactory
    identity: Identity | None = None
    exchange: ServerExchange | None = None

    @property
    def policy(self) -> object | None:
        # Typed loosely on purpose: authz sits above the session layer.
        return self.factory.policy

    def reportHandshake(self) -> None:
        """
        Not yet: every C{auth.decision} event of the exchange carries all the
        fields of C{tls.handshake}, so one event per connection says both.
        The handshake is reported alone only if the connection ends before
        any decision (see L{connectionLost}).
        """

    def handshakeSucceeded(self) -> None:
        assert self.handshake is not None
        self.exchange = ServerExchange(
            self,
            self.factory.portal,
            self.factory.reactor,
            # Computed only if a mechanism binds to the channel (SCRAM -PLUS).
            bindings=partial(channel_bindings, self.transport.getHandle(), "server"),
            throttle=self.factory.throttle,
            settings=self.factory.settings,
        )
        self.exchange.start()

    def authenticated(self, identity: Identity, leftover: bytes) -> None:
        """The exchange succeeded: connect the application, with any bytes that followed."""
        self.identity = identity
        self.exchange = None
        app = self.connectApplication()
        if app is not None and leftover and self._appConnected:
            app.dataReceived(leftover)

    def dataReceived(self, data: bytes) -> None:
        if self._appConnected:
            self.wrappedProtocol.dataReceived(data)
        elif self.exchange is not None:
            self.exchange.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.exchange is not None:
            self.exchange.stop()
            if self.exchange.decisions == 0:
                TLSGuard.reportHandshake(self)
            self.exchange = None
        super().connectionLost(reason)


SessionFactory.protocol = ServerSession
