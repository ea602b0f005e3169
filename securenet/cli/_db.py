"""
Helpers for CLI commands that use the credential store synchronously, and
their C{--db}: a path (an SQLite file, the default), C{sqlite:PATH} or a
C{postgresql://USER@HOST:PORT/DBNAME} URL (no password: libpq reads it
from C{PGPASSFILE} or C{~/.pgpass}).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from securenet.store._errors import StoreError
from securenet.store._open import Database, parse_database

T = TypeVar("T")

#: Where the credential database is unless C{--db} says otherwise.
DEFAULT_DB = Path("var/securenet.db")


def database_argument(text: str) -> Database:
    """C{--db}'s value (L{parse_database}); a URL with a password is refused here, before anything runs."""
    try:
        return parse_database(text)
    except StoreError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_db(parser: argparse.ArgumentParser, *, default: Path | None = DEFAULT_DB, help: str | None = None) -> None:
    """Add C{--db PATH|URL} to C{parser}."""
    if help is None:
        help = f"the credential database: a file, or postgresql://USER@HOST:PORT/DBNAME (default {default})"
    parser.add_argument("--db", type=database_argument, default=default, metavar="PATH|URL", help=help)


def result(d: defer.Deferred[T]) -> T:
    """
    The result of a Deferred that a synchronous store has already fired,
    raising its failure (the CLI runs no reactor).
    """
    results: list[T] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    if not results:
        raise RuntimeError("the credential store did not answer synchronously")
    return results[0]
