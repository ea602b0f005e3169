"""
A client of the telemetry service.

    python -m examples.telemetry.client --endpoint ENDPOINT publish TOPIC VALUE
    python -m examples.telemetry.client --endpoint ENDPOINT [--user NAME ...] subscribe PATTERN [--count N]

A device publishes with its client certificate (in the endpoint string);
an operator subscribes with C{--user} and C{--password-file}, and
C{--totp CODE} for the second factor.  C{subscribe} prints
C{subscribed to PATTERN} on stderr once the server has agreed, then one
C{TOPIC VALUE} line per message on stdout, and stops after C{--count}
messages (default: never).  Exit status: 0 done, 3 refused by the policy,
1 anything else (one line on stderr says what).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from examples import clientauth
from securenet.session import connect

EXIT_DENIED = 3


class Refused(Exception):
    """The server answered C{ERR}: C{code} is C{DENIED} or C{BAD}."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


class TelemetryClient(LineReceiver):
    """Sends one command at a time and waits for its OK; hands pushed messages to C{received}."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.answers: list[Deferred[str]] = []
        self.messages: list[tuple[str, str]] = []
        self.waiting: Deferred[None] | None = None
        self.closed: Deferred[None] = Deferred()

    def command(self, line: str) -> Deferred[str]:
        answer: Deferred[str] = Deferred()
        self.answers.append(answer)
        self.sendLine(line.encode("utf-8"))
        return answer

    def lineReceived(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        kind, _, rest = text.partition(" ")
        if kind == "MSG":
            topic, _, value = rest.partition(" ")
            self.received(topic, value)
        elif self.answers:
            answer = self.answers.pop(0)
            if kind == "OK":
                answer.callback(rest)
            else:
                code, _, why = rest.partition(" ")
                answer.errback(Refused(code, why))

    def received(self, topic: str, value: str) -> None:
        print(f"{topic} {value}", flush=True)
        self.messages.append((topic, value))
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for answer in self.answers:
            answer.errback(reason)
        self.answers = []
        if self.waiting is not None:
            self.waiting.errback(reason)
        self.closed.callback(None)

    async def until(self, count: int) -> None:
        while len(self.messages) < count:
            self.waiting = Deferred()
            await self.waiting


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.telemetry.client", description="Talk to the telemetry example.")
    clientauth.add_options(p)
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    publish = commands.add_parser("publish", help="publish VALUE to TOPIC")
    publish.add_argument("topic")
    publish.add_argument("value")
    subscribe = commands.add_parser("subscribe", help="print what is published to topics matching PATTERN")
    subscribe.add_argument("pattern")
    subscribe.add_argument("--count", type=int, default=0, metavar="N", help="stop after N messages (default: never)")
    return p


async def main(reactor: Any, argv: Sequence[str]) -> None:
    args = parser().parse_args(argv)
    try:
        client: TelemetryClient = await connect(  # type: ignore[assignment]
            reactor,
            args.endpoint,
            Factory.forProtocol(TelemetryClient),
            mechanism=clientauth.mechanism(args),
            totp=clientauth.totp(args),
        )
    except Exception as e:
        raise SystemExit(f"telemetry: error: {e}") from None
    try:
        if args.command == "publish":
            await client.command(f"PUB {args.topic} {args.value}")
        else:
            await client.command(f"SUB {args.pattern}")
            print(f"telemetry: subscribed to {args.pattern}", file=sys.stderr, flush=True)
            if args.count:
                await client.until(args.count)
            else:
                await client.closed
    except Refused as e:
        print(f"telemetry: {e.code.lower()}: {e.text}", file=sys.stderr)
        raise SystemExit(EXIT_DENIED if e.code == "DENIED" else 1) from None
    finally:
        if client.transport is not None:
            client.transport.loseConnection()


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor, sys.argv[1:])))
