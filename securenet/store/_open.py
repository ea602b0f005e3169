"""
Naming a credential database: one rule for C{--auth db:...}, the CLI's
C{--db} and the configuration file.

  - C{postgresql://USER@HOST:PORT/DBNAME} (or C{postgres://}): a
    L{PostgresStore} (the URL carries no password: L{check_url});
  - C{sqlite:PATH}, or a plain C{PATH}: an L{SQLiteStore}, the embedded
    default.
"""

from __future__ import annotations

import os
from pathlib import Path

from securenet._threads import Runner
from securenet.store._postgres import PostgresStore, check_url, is_postgres_url
from securenet.store._sqlite import SQLiteStore

#: What names a credential database once parsed: a file, or a PostgreSQL URL.
Database = Path | str


def parse_database(text: str | os.PathLike[str]) -> Database:
    """
    The database C{text} names: a checked PostgreSQL URL (a C{str}), or
    the C{Path} of an SQLite file (C{sqlite:} removed).

    @raise StoreError: a PostgreSQL URL that does not parse or carries a password.
    """
    if isinstance(text, Path):
        return text
    text = os.fspath(text)
    if is_postgres_url(text):
        return check_url(text)
    if text.startswith("sqlite:"):
        text = text[len("sqlite:") :]
    return Path(text)


def database_exists(database: Database) -> bool:
    """Whether the database is there: an SQLite file must exist; a server's database is the server's to say."""
    return not isinstance(database, Path) or database.exists()


def open_database(database: Database | str, *, runner: Runner | None = None) -> SQLiteStore | PostgresStore:
    """
    Open the credential database C{database} (see L{parse_database}),
    synchronously, its calls through C{runner} (None: on the calling thread).

    @raise StoreError: it cannot be opened (the message says which and why).
    """
    parsed = parse_database(database)
    if isinstance(parsed, Path):
        return SQLiteStore.open(parsed, runner=runner)
    return PostgresStore.open(parsed, runner=runner)
