"""
A client of the key-value service: C{securenet.connect} and AMP's
C{callRemote}, with a small command line.

    python -m examples.kv.client --endpoint ENDPOINT get KEY
    python -m examples.kv.client --endpoint ENDPOINT set KEY VALUE
    python -m examples.kv.client --endpoint ENDPOINT delete KEY
    python -m examples.kv.client --endpoint ENDPOINT list [PREFIX]

You are the client certificate of the endpoint string, or C{--user NAME}
(with C{--password-file FILE}, and C{--totp CODE} if you enrolled TOTP).
Exit status: 0 done, 3 refused by the policy, 4 no such key or a bad key,
1 anything else (one line on stderr says what).

From Python::

    kv = await connect(reactor, endpoint, Factory.forProtocol(amp.AMP))
    try:
        answer = await kv.callRemote(Get, key="users/alice/notes")
    except CommandDenied as e:
        print(e.permission)          # the permission you are missing
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.protocol import Factory
from twisted.internet.task import react
from twisted.protocols import amp

from examples import clientauth
from examples.kv.commands import BadKey, CommandDenied, Delete, Get, List, NoSuchKey, Set
from securenet.session import connect

EXIT_DENIED = 3
EXIT_NOT_FOUND = 4


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.kv.client", description="Talk to the key-value example.")
    clientauth.add_options(p)
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("get", help="print a key's value").add_argument("key")
    set_ = commands.add_parser("set", help="give a key a value")
    set_.add_argument("key")
    set_.add_argument("value")
    commands.add_parser("delete", help="remove a key").add_argument("key")
    commands.add_parser("list", help="list the keys at or below PREFIX").add_argument("prefix", nargs="?", default="")
    return p


async def call(kv: amp.AMP, args: argparse.Namespace) -> None:
    if args.command == "get":
        print((await kv.callRemote(Get, key=args.key))["value"])
    elif args.command == "set":
        await kv.callRemote(Set, key=args.key, value=args.value)
    elif args.command == "delete":
        await kv.callRemote(Delete, key=args.key)
    else:
        answer = await kv.callRemote(List, prefix=args.prefix)
        for key in answer["keys"]:
            print(key)
        if answer["truncated"]:
            print("kv: (more keys: list a longer prefix)", file=sys.stderr)


async def main(reactor: Any, argv: Sequence[str]) -> None:
    args = parser().parse_args(argv)
    try:
        kv: amp.AMP = await connect(  # type: ignore[assignment]
            reactor,
            args.endpoint,
            Factory.forProtocol(amp.AMP),
            mechanism=clientauth.mechanism(args),
            totp=clientauth.totp(args),
        )
    except Exception as e:
        raise SystemExit(f"kv: error: {e}") from None
    try:
        await call(kv, args)
    except CommandDenied as e:
        print(f"kv: denied: {e}", file=sys.stderr)
        raise SystemExit(EXIT_DENIED) from None
    except NoSuchKey as e:
        print(f"kv: no such key: {e}", file=sys.stderr)
        raise SystemExit(EXIT_NOT_FOUND) from None
    except BadKey as e:
        print(f"kv: bad key: {e}", file=sys.stderr)
        raise SystemExit(EXIT_NOT_FOUND) from None
    finally:
        if kv.transport is not None:
            kv.transport.loseConnection()


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor, sys.argv[1:])))
