"""
The session layer: from a finished TLS handshake to an authenticated
application protocol, on both sides (docs/protocol.md).

Server: L{SessionFactory} wraps the application's factory; each
L{ServerSession} runs the authentication exchange and connects the
application only once the client is authenticated.  Client: L{connect}
(and L{ClientSessionFactory}) verifies the server, authenticates with
L{ClientCredentials}, and fires with the application's protocol;
L{SessionClientEndpoint} is the same as an endpoint (what
C{clientFromString(reactor, "securenet:...")} returns).
"""

from securenet.session._client import (
    CLIENT_DEADLINE,
    ClientCredentials,
    ClientSession,
    ClientSessionFactory,
    connect,
    default_mechanism,
)
from securenet.session._endpoint import SessionClientEndpoint
from securenet.session._errors import AuthenticationFailed, ProtocolViolation, ServerNotAuthenticated
from securenet.session._exchange import ExchangeSettings, ServerExchange
from securenet.session._server import NotASecureSession, ServerSession, SessionFactory, identity_of

__all__ = [
    "CLIENT_DEADLINE",
    "AuthenticationFailed",
    "ClientCredentials",
    "ClientSession",
    "ClientSessionFactory",
    "ExchangeSettings",
    "NotASecureSession",
    "ProtocolViolation",
    "ServerExchange",
    "ServerNotAuthenticated",
    "ServerSession",
    "SessionClientEndpoint",
    "SessionFactory",
    "connect",
    "default_mechanism",
    "identity_of",
]
