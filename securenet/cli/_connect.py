"""
C{securenet connect ENDPOINT}: like C{openssl s_client}, with our endpoint
string and our checks.  Standard input goes to the server, the server's bytes
to standard output.  Exit 0 on a clean close; on a TLS, pin, revocation or
authentication failure, exit 1 with one line that names the reason.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import error as neterror
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from securenet._errors import SecurenetError
from securenet.interfaces import IClientMechanism
from securenet.sasl._apikey import APIKeyClientMechanism
from securenet.sasl._builtin import AnonymousClientMechanism, ExternalClientMechanism
from securenet.sasl._mechanism import ChannelBindings
from securenet.sasl._oauthbearer import OAuthBearerClientMechanism
from securenet.sasl._plain import PlainClientMechanism
from securenet.sasl._scram import ScramClientMechanism
from securenet.session._errors import AuthenticationFailed
from securenet.tls._endpoints import CLIENT_KEYS

#: C{securenet connect --help}'s description (plain text: argparse shows it as is).
DESCRIPTION = """\
Connect to a securenet service, like openssl s_client with securenet's
endpoint strings and checks: standard input goes to the server, the
server's bytes to standard output.  Exit 0 on a clean close; on a TLS, pin,
revocation or authentication failure, exit 1 with one line that names the
reason."""

#: What to give when the server needs credentials and none were given.
CREDENTIAL_OPTIONS = (
    "give --user NAME (with --password-file FILE, or type the password at the prompt), "
    "--token-file FILE, --api-key-file FILE, or a client certificate in ENDPOINT (certificate=FILE:privateKey=FILE)"
)


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
        #: Whether writing to stdout failed because its reader is gone.
        self.output_gone = False

    def dataReceived(self, data: bytes) -> None:
        if self.output_gone:
            return
        out = sys.stdout.buffer
        try:
            out.write(data)
            out.flush()
        except BrokenPipeError:
            # The reader of stdout is gone (`| head`): close; the command
            # then ends quietly (securenet.cli.run).
            self.output_gone = True
            if self.transport is not None:
                self.transport.loseConnection()
            return
        if self._lingering is not None and self._lingering.active():
            self._lingering.reset(self.linger)

    def inputEnded(self) -> None:
        if self.transport is not None and self._lingering is None:
            self._lingering = self.clock.callLater(self.linger, self.transport.loseConnection)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
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

    def connectionLost(self, reason: Failure = connectionDone) -> None:
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


MECHANISMS = ("EXTERNAL", "ANONYMOUS", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "OAUTHBEARER", "APIKEY")


class CredentialError(SecurenetError):
    """A credential could not be read (file missing, empty, no terminal to prompt on)."""


def read_secret(path: str | None, prompt: str, what: str, option: str) -> str:
    """
    A secret from a file (first line, trailing newline stripped) or, without
    a file, from a prompt on the terminal.  Never from the command line.

    @param option: how to give it without a terminal (C{--password-file
        FILE}), named when there is none to prompt on.
    """
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                value = f.readline().rstrip("\r\n")
        except OSError as e:
            raise CredentialError(f"{path}: cannot read the {what} ({e.strerror})") from None
        if not value:
            raise CredentialError(f"{path}: the {what} file is empty")
        return value
    if not _has_tty():
        raise CredentialError(f"no {what}: give {option} (there is no terminal to prompt on)")
    value = getpass.getpass(prompt)
    if not value:
        raise CredentialError(f"no {what} given")
    return value


def _has_tty() -> bool:
    """Whether a terminal is there to prompt on (stdin may be the data being sent)."""
    try:
        with open("/dev/tty"):
            return True
    except OSError:
        return False


def mechanism_chooser(args: argparse.Namespace) -> Callable[[Sequence[str], ChannelBindings, bool], IClientMechanism] | None:
    """
    What C{securenet connect} authenticates with, from its options: an
    explicit C{--mechanism}, or the strongest the credentials given allow.
    Secrets are read before connecting, so a prompt never races the server.
    """
    name = args.mechanism
    if name is not None and name not in MECHANISMS:
        raise CredentialError(f"--mechanism {name}: use one of {', '.join(MECHANISMS)}")
    if name is None:
        if args.token_file:
            name = "OAUTHBEARER"
        elif args.api_key_file:
            name = "APIKEY"
        elif args.user:
            name = "SCRAM"  # -PLUS when the server offers it, else plain SCRAM
        else:
            return None  # EXTERNAL with a certificate, else ANONYMOUS
    if name in ("PLAIN", "SCRAM", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"):
        if not args.user:
            raise CredentialError(f"{name} needs --user")
        password = read_secret(args.password_file, f"password for {args.user}: ", "password", "--password-file FILE")
    elif name == "OAUTHBEARER":
        token = read_secret(args.token_file, "bearer token: ", "token", "--token-file FILE")
    elif name == "APIKEY":
        api_key = read_secret(args.api_key_file, "API key: ", "API key", "--api-key-file FILE")

    def choose(offered: Sequence[str], bindings: ChannelBindings, has_certificate: bool) -> IClientMechanism:
        if name == "EXTERNAL":
            return ExternalClientMechanism()
        if name == "ANONYMOUS":
            return AnonymousClientMechanism()
        if name == "PLAIN":
            return PlainClientMechanism(args.user, password)
        if name == "OAUTHBEARER":
            return OAuthBearerClientMechanism(token, user=args.user)
        if name == "APIKEY":
            return APIKeyClientMechanism(api_key)
        plus = name == "SCRAM-SHA-256-PLUS" or (name == "SCRAM" and "SCRAM-SHA-256-PLUS" in offered)
        cb_name = "tls-exporter" if bindings.tls_exporter is not None else "tls-server-end-point"
        if not plus and "SCRAM-SHA-256-PLUS" in offered and bindings.get(cb_name) is not None:
            # What ScramClientMechanism refuses too, said in the CLI's words.
            raise ValueError(
                "the server offers SCRAM-SHA-256-PLUS (bound to this TLS connection) and this client can bind, "
                "so it will not downgrade to SCRAM-SHA-256: leave out --mechanism, or give --mechanism SCRAM-SHA-256-PLUS"
            )
        return ScramClientMechanism(
            args.user,
            password,
            plus=plus,
            bindings=bindings,
            cb_name=cb_name,
            server_offers_plus="SCRAM-SHA-256-PLUS" in offered,
        )

    return choose


def totp_source(args: argparse.Namespace) -> Callable[[], str]:
    def code() -> str:
        if args.totp:
            return str(args.totp)
        return read_secret(None, "TOTP code: ", "TOTP code", "--totp CODE")

    return code


async def _run(reactor: Any, args: argparse.Namespace) -> int:
    from twisted.internet import stdio

    from securenet.session._client import connect

    endpoint, quiet, linger = args.endpoint, args.quiet, args.linger
    chooser = mechanism_chooser(args)
    bridge = StdioBridge(reactor, linger)
    try:
        await connect(reactor, endpoint, Factory.forProtocol(lambda: bridge), mechanism=chooser, totp=totp_source(args))
    except AuthenticationFailed as e:
        if chooser is None and e.code == "NO-MECHANISM":
            # No credentials given, and the server offers neither EXTERNAL nor ANONYMOUS.
            raise AuthenticationFailed(e.code, f"{e.text.partition(';')[0]}; {CREDENTIAL_OPTIONS}") from None
        raise
    except SecurenetError:
        raise
    except Exception:
        print(f"securenet: error: {describe_failure(Failure())}", file=sys.stderr)
        return 1
    if not quiet:
        session = bridge.transport
        handshake = session.handshake  # type: ignore[union-attr]
        cert = handshake.peer_certificate
        print(
            f"securenet: connected to {handshake.peer} ({handshake.tls_version}, {handshake.cipher}); "
            f"server {cert.subject if cert else '?'} {cert.pin if cert else ''}; "
            f"authenticated as {session.authenticated_as}",  # type: ignore[union-attr]
            file=sys.stderr,
        )
    bridge.stdio = stdio.StandardIO(StdinForwarder(bridge), reactor=reactor)
    try:
        await bridge.done
    except Exception:
        if bridge.output_gone:
            raise BrokenPipeError() from None
        print(f"securenet: error: {describe_failure(Failure())}", file=sys.stderr)
        return 1
    if bridge.output_gone:
        raise BrokenPipeError()
    return 0


def run_connect(args: argparse.Namespace) -> int:
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    result: list[Any] = []

    def start() -> None:
        d = ensureDeferred(_run(reactor, args))
        d.addBoth(result.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    outcome = result[0] if result else 1
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return int(outcome)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = "\n".join(f"  {k:17} {v}" for k, v in CLIENT_KEYS.items())
    parser = sub.add_parser(
        "connect",
        help="connect to a securenet service: stdin to the server, the server to stdout",
        description=DESCRIPTION,
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
    auth = parser.add_argument_group(
        "authentication",
        "Without these, EXTERNAL (the client certificate of the endpoint) or ANONYMOUS. "
        "Secrets are read from files or prompted for on the terminal, never taken as arguments.",
    )
    auth.add_argument(
        "--mechanism", metavar="NAME", help=f"one of {', '.join(MECHANISMS)} (default: chosen from the credentials given)"
    )
    auth.add_argument("--user", metavar="NAME", help="user name for PLAIN and SCRAM (SCRAM-SHA-256-PLUS when offered)")
    auth.add_argument("--password-file", metavar="FILE", help="file whose first line is the password (default: prompt)")
    auth.add_argument("--token-file", metavar="FILE", help="file with a bearer token (OAUTHBEARER)")
    auth.add_argument("--api-key-file", metavar="FILE", help="file with an API key (APIKEY)")
    auth.add_argument("--totp", metavar="CODE", help="the current TOTP code, if the server asks for one (default: prompt)")
    parser.set_defaults(func=run_connect)
