"""
The client side: connect a protocol factory to a securenet service.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.python.failure import Failure

from securenet.tls.endpoints import SecureClientEndpoint, client_endpoint
from securenet.tls.guard import TLSGuardFactory


def connect(
    reactor: Any,
    endpoint: str | SecureClientEndpoint,
    factory: IProtocolFactory,
) -> Deferred[IProtocol]:
    """
    Connect C{factory}'s protocol to a securenet server.

    @param endpoint: a C{securenet:host=...:port=...} string or an endpoint.
    @return: a Deferred that fires with the connected application protocol
        once the server is verified, or fails with a typed
        L{securenet.tls.errors.TLSError} (or a connection error) and no
        application byte sent.  With TLS 1.3 a server that refuses our
        certificate says so only after the handshake: that arrives as the
        protocol's C{connectionLost} reason (e.g. C{ClientCertificateRequired}).
    """
    if isinstance(endpoint, str):
        endpoint = client_endpoint(reactor, endpoint)
    ready: Deferred[IProtocol] = Deferred()
    guard = TLSGuardFactory(factory, reactor, ready=ready)

    def tcpFailed(failure: Failure) -> None:
        if guard.ready is not None:
            guard.ready = None
            ready.errback(failure)

    endpoint.connect(guard).addErrback(tcpFailed)
    return ready
