"""
A custom protocol on securenet: a line protocol that knows who it talks to.

It is an ordinary Twisted LineReceiver.  securenet builds it only after the
peer authenticated, and ``identity_of(self)`` tells it who that is; no TLS
or cred code here.

Run it (after ``make run`` created ./certs)::

    PYTHONPATH=. .venv/bin/twistd -n securenet --app examples.greeter.GreeterFactory
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from securenet.session import identity_of


class Greeter(LineReceiver):
    delimiter = b"\n"

    def connectionMade(self) -> None:
        self.identity = identity_of(self)
        self.sendLine(f"hello {self.identity.avatar_id} ({self.identity.mechanism})".encode())

    def lineReceived(self, line: bytes) -> None:
        command = line.strip().decode("utf-8", "replace")
        if command == "whoami":
            cert = self.identity.certificate
            self.sendLine(f"{self.identity.avatar_id} {cert.pin if cert else '-'}".encode())
        elif command == "quit":
            self.sendLine(b"bye")
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self.sendLine(f"unknown command {command!r}; try whoami or quit".encode())


class GreeterFactory(Factory):
    protocol = Greeter
