"""
In-memory TLS helpers shared by the test suites: recording protocols and
factories, the bytes each side sends, typed access to iosim transports.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IAddress,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.test import iosim

CLIENT_DATA = b"client application secret"
SERVER_DATA = b"server application greeting"


# -- recording applications, guards and events -----------------------------------


def transport_of(protocol: Protocol) -> ITransport:
    """The transport of a connected protocol (C{protocol.transport} is optional)."""
    assert protocol.transport is not None
    return protocol.transport


def fake_transport(protocol: Protocol) -> iosim.FakeTransport:
    """The in-memory transport of a protocol connected by C{iosim}."""
    return cast(iosim.FakeTransport, protocol.transport)


class RecordingProtocol(Protocol):
    """An application protocol that writes its greeting and records everything."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        if self.factory.greeting:
            transport_of(self).write(self.factory.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class RecordingFactory(Factory):
    """Builds L{RecordingProtocol}s and remembers each one it built."""

    protocol = RecordingProtocol

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.built: list[RecordingProtocol] = []

    def buildProtocol(self, addr: IAddress | None) -> RecordingProtocol:
        proto = super().buildProtocol(addr)
        assert isinstance(proto, RecordingProtocol)
        self.built.append(proto)
        return proto

    @property
    def received(self) -> bytes:
        return b"".join(b"".join(p.received) for p in self.built)
