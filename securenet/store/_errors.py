"""
The store's errors: one hierarchy under L{StoreError}, each carrying the
facts (the path, the reason, the versions) a user needs.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from securenet._errors import SecurenetError
from securenet.store._migrations import SCHEMA_VERSION


class StoreError(SecurenetError):
    """The store refused an operation or cannot be used (the message says why)."""


class NoSuchUser(StoreError):
    """The named user does not exist."""


class UserExists(StoreError):
    """A user of that name already exists."""


class NoSuchAPIKey(StoreError):
    """No API key has that id."""


class StoreUnavailable(StoreError):
    """
    The database server cannot be reached now (PostgreSQL: down, or the
    network): nothing was read or written.  Logins are refused while it
    lasts (fail closed), and service resumes when the server is back.
    """


# -- errors ------------------------------------------------------------------


@attrs.define(auto_exc=True, str=False)
class DatabaseFileError(StoreError):
    """
    The database file cannot be used (or the database server: PostgreSQL).

    @ivar path: the file, or the server's database URL (without password).
    @ivar problem: what is wrong with it, in a few words.
    """

    path: Path | str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@attrs.define(auto_exc=True, str=False)
class InsecureDatabaseFile(DatabaseFileError):
    """The database file is accessible by group or others."""

    mode: int = 0


@attrs.define(auto_exc=True, str=False)
class UnsupportedSchema(DatabaseFileError):
    """The database was written by a newer securenet (schema C{found} > C{supported}, the backend's own count)."""

    found: int = 0
    supported: int = SCHEMA_VERSION
