"""
HTTPS clients (C{twisted.web.client.Agent}, treq) that check the server
the securenet way: a L{ClientTLSPolicy} -- trust roots, pins, TOFU, a
client certificate for mutual TLS -- as the Agent's TLS policy::

    policy = ClientTLSPolicy.from_files(trust_roots="certs/ca.pem",
                                        certificate="certs/dev-client.pem", private_key="certs/dev-client.key")
    http = treq.client.HTTPClient(Agent(reactor, contextFactory=HTTPSPolicy(policy)))
    response = await http.get("https://localhost:8443/me")

A refused server is the TLS layer's typed error, as for a stream
connection: the Agent's C{ResponseNeverReceived} (or C{ResponseFailed})
carries the L{PinMismatch}, L{HostnameMismatch}, L{UntrustedCertificate}...
the policy recorded, never a bare C{OpenSSL.SSL.Error}.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from securenet.tls._client import ClientTLSCreator, ClientTLSPolicy
from securenet.tls._context import state_of
from securenet.tls._errors import classify


@implementer(IPolicyForHTTPS)
class HTTPSPolicy:
    """An C{IPolicyForHTTPS} made of a L{ClientTLSPolicy}: each host is checked by it (name, pins, ...)."""

    def __init__(self, policy: ClientTLSPolicy) -> None:
        self.policy = policy

    def creatorForNetloc(self, hostname: bytes, port: int) -> TypedFailureCreator:
        return TypedFailureCreator(self.policy.creator(hostname.decode("idna"), port))


def typed_failure(connection: SSL.Connection | None, reason: Failure) -> Failure:
    """
    What the application protocol of C{connection} is told: the refusal the
    policy recorded on the connection's state wins (OpenSSL only says
    C{certificate verify failed}), then OpenSSL's own error, classified.
    """
    state = state_of(connection)
    if state is not None and state.error is not None:
        return Failure(state.error)
    if isinstance(reason.value, SSL.Error):
        return Failure(classify(reason.value))
    return reason


@implementer(IOpenSSLClientConnectionCreator)
class TypedFailureCreator:
    """
    A L{ClientTLSCreator} whose connections end, for the protocol above TLS
    (the Agent's C{HTTP11ClientProtocol}), with L{typed_failure}.

    The Agent builds its own TLS connections (C{wrapClientTLS}), so there is
    no C{TLSGuard} in between to do it, and the endpoint hands
    the Agent the TLS layer's wrapped protocol itself: the translation is
    put on that protocol's C{connectionLost}, for this one connection.
    """

    def __init__(self, creator: ClientTLSCreator) -> None:
        self.creator = creator

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self.creator.clientConnectionForTLS(tlsProtocol)
        application = getattr(tlsProtocol, "wrappedProtocol", None)
        if application is None:
            return connection

        def connectionLost(reason: Failure) -> None:
            # Back to the class's method (and no cycle through this closure).
            del application.connectionLost
            application.connectionLost(typed_failure(tlsProtocol.getHandle(), reason))

        application.connectionLost = connectionLost
        return connection


__all__ = ["HTTPSPolicy", "TypedFailureCreator", "typed_failure"]
