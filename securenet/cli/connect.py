"""
C{securenet connect ENDPOINT}: like C{openssl s_client}, with our endpoint
string and our checks.  Standard input goes to the server, the server's bytes
to standard output.  Exit 0 on a clean close; on a TLS, pin, revocation or
authentication failure, exit 1 with one line that names the reason.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet import error as neterror
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from securenet.errors import SecurenetError
from securenet.tls.endpoints import CLIENT_KEYS


class StdioBridge(Protocol):
    """
    Copies the server's bytes to stdout; C{done} fires when the connection ends.

    TLS has no usable half-close (OpenSSL discards what arrives after we send
    close_notify), so at the end of stdin we keep reading until the server
    has been quiet for C{linger} seconds, then close (like C{nc -q}).
    """

    def __init__(self, clock: Any, linger: float) -> None:
        self.done: Deferred[None] = Deferred()
        self.stdio: Any = None
        self.clock = clock
        self.linger = linger
        self._lingering: Any = None

    def dataReceived(self, data: bytes) -> None:
        out = sys.stdout.buffer
        out.write(data)
        out.flush()
        if self._lingering is not None and self._lingering.active():
            self._lingering.reset(self.linger)

    def inputEnded(self) -> None:
        if self.transport is not None and self._lingering is None:
            self._lingering = self.clock.callLater(self.linger, self.transport.loseConnection)

    def connectionLost(self, reason: Failure = Failure(neterror.ConnectionDone())) -> None:
        if self._lingering is not None and self._lingering.active():
            self._lingering.cancel()
        if self.stdio is not None:
            self.stdio.loseConnection()
        if reason.check(neterror.ConnectionDone):
            self.done.callback(None)
        else:
            self.done.errback(reason)


class StdinForwarder(Protocol):
    """Standard input: every byte goes to the server; end of input closes the connection."""

    def __init__(self, server: StdioBridge) -> None:
        self.server = server

    def dataReceived(self, data: bytes) -> None:
        self.server.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(neterror.ConnectionDone())) -> None:
        self.server.inputEnded()


def describe_failure(failure: Failure) -> str:
    """One line for a failed connection."""
    value = failure.value
    if isinstance(value, SecurenetError):
        return str(value)
    if isinstance(value, neterror.ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(value, neterror.TimeoutError):
        return "timed out connecting to the server"
    if isinstance(value, neterror.DNSLookupError):
        return f"cannot resolve the server's host name ({value})"
    if isinstance(value, neterror.ConnectionLost):
        return "the server closed the connection without a TLS close_notify (connection lost)"
    return f"{type(value).__name__}: {value}"


async def _run(reactor: Any, endpoint: str, quiet: bool, linger: float) -> int:
    from twisted.internet import stdio

    from securenet.protocol.client import connect

    bridge = StdioBridge(reactor, linger)
    try:
        await connect(reactor, endpoint, Factory.forProtocol(lambda: bridge))
    except SecurenetError:
        raise
    except Exception:
        print(f"securenet: error: {describe_failure(Failure())}", file=sys.stderr)
        return 1
    if not quiet:
        handshake = bridge.transport.handshake  # type: ignore[union-attr]
        cert = handshake.peer_certificate
        print(
            f"securenet: connected to {handshake.peer} ({handshake.tls_version}, {handshake.cipher}); "
            f"server {cert.subject if cert else '?'} {cert.pin if cert else ''}",
            file=sys.stderr,
        )
    bridge.stdio = stdio.StandardIO(StdinForwarder(bridge), reactor=reactor)
    try:
        await bridge.done
    except Exception:
        print(f"securenet: error: {describe_failure(Failure())}", file=sys.stderr)
        return 1
    return 0


def run_connect(args: argparse.Namespace) -> int:
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    result: list[Any] = []

    def start() -> None:
        d = ensureDeferred(_run(reactor, args.endpoint, args.quiet, args.linger))
        d.addBoth(result.append)
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    outcome = result[0] if result else 1
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return int(outcome)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = "\n".join(f"  {k:17} {v}" for k, v in CLIENT_KEYS.items())
    parser = sub.add_parser(
        "connect",
        help="connect to a securenet service: stdin to the server, the server to stdout",
        description=__doc__,
        epilog=f"ENDPOINT is securenet:host=H:port=P:KEY=VALUE...; keys:\n{keys}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("endpoint", metavar="ENDPOINT", help="securenet:host=...:port=...:trustRoots=...|pin=...|tofu=...")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print the connection summary on stderr")
    parser.add_argument(
        "--linger",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="after the end of stdin, keep reading until the server is quiet this long (default 1)",
    )
    parser.set_defaults(func=run_connect)
