"""
The built-in C{echo} application: sends back every byte it receives.

Like every securenet application it is a plain Twisted factory; it runs only
after the peer authenticated, and logs who connected.  When the server stops
gracefully (L{IDrainable}) it closes at once: every byte it received has been
sent back, there is no exchange of its own to finish.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from securenet._logs import SecurenetLogger
from securenet.interfaces import IDrainable
from securenet.session._server import identity_of

log = SecurenetLogger(namespace="securenet.apps.echo")


@implementer(IDrainable)
class Echo(Protocol):
    def connectionMade(self) -> None:
        identity = identity_of(self)
        log.info("echo session for {identity} ({mechanism})", identity=identity.avatar_id, mechanism=identity.mechanism)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def drain(self) -> None:
        """Close once what was echoed is sent."""
        self.transport.loseConnection()  # type: ignore[union-attr]


class EchoFactory(Factory):
    protocol = Echo
