"""
The application every peer serves, written once per I/O framework so that
the peers differ only in what sits under the application.

* A minimal HTTP/1.1 responder: ``GET /<n>`` answers ``n`` bytes, framed
  by Content-Length; requests may be pipelined; ``Connection: close`` closes
  after the response.  nginx serves the same paths as static files.
* An AMP ``Echo`` command (``value`` -> ``value``); securenet's is a
  ``SecureCommand`` with a declared permission, answered by a ``SecureAMP``
  that checks it against the bench policy before every call.
* A Foolscap ``echo`` method.
"""

from __future__ import annotations

import asyncio
import os
from functools import lru_cache

from twisted.internet.protocol import Factory, Protocol
from twisted.protocols import amp

#: Largest body a request may ask for (16 MiB).
MAX_BODY = 16 * 1024 * 1024


@lru_cache(maxsize=64)
def response_for(path: bytes) -> bytes:
    try:
        size = int(path.lstrip(b"/") or b"0")
    except ValueError:
        size = -1
    if not 0 <= size <= MAX_BODY:
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % size
    return head + b"x" * size


def handle(buffer: bytes, write, close) -> bytes:
    """Answer every complete request in C{buffer}; return what is left."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > 65536:
                close()
                return b""
            return buffer
        head, buffer = buffer[:end], buffer[end + 4 :]
        parts = head.split(b" ", 2)
        write(response_for(parts[1] if len(parts) > 1 else b"/"))
        if b"onnection: close" in head or b"onnection: Close" in head:
            close()
            return b""


class HTTPResponder(Protocol):
    buffer = b""

    def connectionMade(self) -> None:
        if self.factory.nodelay:
            # Twisted leaves Nagle on (asyncio and nginx turn it off): see bench/README.md
            self.transport.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        self.buffer = handle(self.buffer + data if self.buffer else data, self.transport.write, self.transport.loseConnection)


class HTTPFactory(Factory):
    protocol = HTTPResponder
    noisy = False
    nodelay = bool(os.environ.get("BENCH_NODELAY"))


class AsyncHTTPResponder(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer = handle(self.buffer + data if self.buffer else data, self.transport.write, self.transport.close)


class Echo(amp.Command):
    arguments = [(b"value", amp.String())]
    response = [(b"value", amp.String())]


class EchoAMP(amp.AMP):
    @Echo.responder
    def echo(self, value: bytes) -> dict[str, bytes]:
        return {"value": value}


class AMPFactory(Factory):
    protocol = EchoAMP
    noisy = False


#: The policy of the securenet + AMP peer: certificate-authenticated clients may echo.
BENCH_POLICY = """
version = 1

[[rules]]
name = "certificate clients may echo"
effect = "allow"
permissions = ["bench.echo"]
when = { "identity.mechanism" = "EXTERNAL" }
"""


def secure_amp_factory() -> Factory:
    """securenet's AMP: the same Echo on the wire, authorized per call (imported lazily)."""
    from securenet.protocols import SecureAMP, SecureCommand

    class SecureEcho(SecureCommand):
        commandName = b"Echo"
        arguments = [(b"value", amp.String())]
        response = [(b"value", amp.String())]
        permission = "bench.echo"

    class SecureEchoAMP(SecureAMP):
        @SecureEcho.responder
        def echo(self, value: bytes) -> dict[str, bytes]:
            return {"value": value}

    factory = Factory.forProtocol(SecureEchoAMP)
    factory.noisy = False
    return factory


def foolscap_echo():  # type: ignore[no-untyped-def]
    """The Foolscap referenceable (imported lazily: Foolscap is optional)."""
    from foolscap.api import Referenceable

    class EchoRef(Referenceable):  # type: ignore[misc]
        def remote_echo(self, value: bytes) -> bytes:
            return value

    return EchoRef()
