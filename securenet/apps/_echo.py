"""
The built-in C{echo} application: sends back every byte it receives.

Like every securenet application it is a plain Twisted factory; it runs only
after the peer authenticated, and logs who connected.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol

from securenet._logs import SecurenetLogger
from securenet.session._server import identity_of

log = SecurenetLogger(namespace="securenet.apps.echo")


class Echo(Protocol):
    def connectionMade(self) -> None:
        identity = identity_of(self)
        log.info("echo session for {identity} ({mechanism})", identity=identity.avatar_id, mechanism=identity.mechanism)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class EchoFactory(Factory):
    protocol = Echo
