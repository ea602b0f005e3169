"""
The C{securenet} command: PKI, client, and (later) credentials.

Each subcommand module has C{register(subparsers)}; it sets C{func} on its
parser, a callable taking the parsed arguments and returning the exit code.
Errors of securenet's hierarchy become one line on stderr and exit 1.  When
the reader of standard output goes away (C{securenet ... | head}), the
command stops quietly, like other Unix tools, with exit code 141 (a shell's
128 + SIGPIPE).
"""

from __future__ import annotations

import argparse
import os
import signal
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


#: The exit code after the reader of standard output went away: what a shell
#: reports for a command killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def run() -> None:
    """The console script: L{main}, and a quiet exit when standard output's reader is gone."""
    try:
        code = main()
        sys.stdout.flush()  # here, not at exit, where a broken pipe is a traceback
    except BrokenPipeError:
        # Python's advice: point stdout at /dev/null, so the flush at exit
        # does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    sys.exit(code)
