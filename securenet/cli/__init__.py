"""
The C{securenet} command: PKI, client, and (later) credentials.

Each subcommand module has C{register(subparsers)}; it sets C{func} on its
parser, a callable taking the parsed arguments and returning the exit code.
Errors of securenet's hierarchy become one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from securenet._errors import SecurenetError
from securenet._version import __version__


def build_parser() -> argparse.ArgumentParser:
    from securenet.cli import _apikeys, _authz, _connect, _pki, _tokens, _users

    parser = argparse.ArgumentParser(
        prog="securenet",
        description="securenet: PKI, credentials and a TLS client for securenet services.",
    )
    parser.add_argument("--version", action="version", version=f"securenet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _pki.register(sub)
    _connect.register(sub)
    _users.register(sub)
    _apikeys.register(sub)
    _tokens.register(sub)
    _authz.register(sub)
    return parser


def fail(message: str) -> int:
    print(f"securenet: error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except SecurenetError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return 130
    return code


def run() -> None:
    sys.exit(main())
