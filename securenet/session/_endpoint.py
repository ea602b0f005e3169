"""
The client endpoint of a securenet service: TLS (a L{SecureClientEndpoint})
and then the authentication exchange, as L{connect} runs them.  This is what
C{clientFromString(reactor, "securenet:...")} returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from zope.interface import implementer

from securenet.interfaces import IClientMechanism
from securenet.session._client import MechanismChooser, connect
from securenet.tls._endpoints import SecureClientEndpoint
from securenet.tls._guard import TLSGuardFactory


@implementer(IStreamClientEndpoint)
class SessionClientEndpoint:
    """
    Connects to a securenet service and authenticates.

    C{connect(factory)} fires with C{factory}'s protocol once the server is
    verified and the exchange succeeded: its C{connectionMade} has run and
    it receives only the application's bytes.  It fails as L{connect}'s
    Deferred does (a L{securenet.tls.TLSError} such as C{PinMismatch},
    L{securenet.session.AuthenticationFailed} with the server's code, or the
    TCP error), and cancelling it closes the connection.

    @ivar tls: the TLS endpoint underneath.
    @ivar mechanism: how to authenticate, as L{connect}'s C{mechanism}
        (None: EXTERNAL with a client certificate, else ANONYMOUS).
    @ivar totp: as L{connect}'s C{totp}.
    """

    def __init__(
        self,
        reactor: Any,
        tls: SecureClientEndpoint,
        *,
        mechanism: IClientMechanism | MechanismChooser | None = None,
        totp: Callable[[], str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.tls = tls
        self.mechanism = mechanism
        self.totp = totp

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if isinstance(protocolFactory, TLSGuardFactory):
            # e.g. securenet.connect(reactor, this endpoint, ...): a second
            # exchange inside the first would never work.
            raise TypeError("give the application's factory: this endpoint runs the session itself")
        return connect(self.reactor, self.tls, protocolFactory, mechanism=self.mechanism, totp=self.totp)
