"""
The application the graceful-stop tests run (C{--app tests.support.drain.ConversationFactory}):
a conversation of two lines that the server ends itself once it is draining.

  - C{begin} is answered C{started}; C{end} is answered C{done}, and then,
    if the server is stopping, the connection is closed: the exchange in
    progress when SIGTERM came completes, and the connection ends with it.
  - C{hold} is answered C{holding}, and the connection is never closed by
    the application: it outlives any drain time.

Every call of C{drain()} is logged (C{drain: told <peer>}).
"""

from __future__ import annotations

from twisted.internet.protocol import Factory

from securenet._logs import SecurenetLogger
from securenet.protocols import SecureLineReceiver

log = SecurenetLogger(namespace="tests.support.drain")


class Conversation(SecureLineReceiver):
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        if line == b"begin":
            self.sendLine(b"started")
        elif line == b"end":
            self.sendLine(b"done")
            if self.draining:
                self.transport.loseConnection()  # type: ignore[union-attr]
        elif line == b"hold":
            self.sendLine(b"holding")

    def drain(self) -> None:
        super().drain()
        log.info("drain: told {identity}", identity=self.identity.avatar_id)


class ConversationFactory(Factory):
    protocol = Conversation
