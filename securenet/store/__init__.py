"""
The credential database: records, errors, and the stores that keep them.

Every store provides L{securenet.interfaces.ICredentialStore} (users,
roles, attributes, password and SCRAM records, TOTP secrets and used codes,
API keys, token revocations, throttle counters) and keeps the HTTP API's
refresh tokens as C{store.refresh_tokens}
(L{securenet.interfaces.IRefreshTokenStore}).  L{MemoryStore} is the
reference behaviour; L{SQLiteStore} the embedded database, one file with one
migration list for all of its tables; L{PostgresStore} a PostgreSQL server
shared by every host of a service, with a migration list of its own.
L{open_database} opens the one a name gives (a path, C{sqlite:PATH} or a
C{postgresql://} URL).  The conformance suite in
C{tests/store} holds every backend to the same contract.
"""

from securenet.store._errors import (
    DatabaseFileError,
    InsecureDatabaseFile,
    NoSuchAPIKey,
    NoSuchUser,
    StoreError,
    StoreUnavailable,
    UnsupportedSchema,
    UserExists,
)
from securenet.store._memory import MemoryRefreshStore, MemoryStore
from securenet.store._migrations import MIGRATIONS, POSTGRES_MIGRATIONS, POSTGRES_SCHEMA_VERSION, SCHEMA_VERSION
from securenet.store._open import database_exists, open_database, parse_database
from securenet.store._postgres import PostgresStore
from securenet.store._postgres_refresh import PostgresRefreshTokens
from securenet.store._records import APIKey, RefreshToken, ScramKeys, User
from securenet.store._sqlite import SQLiteStore
from securenet.store._sqlite_refresh import SQLiteRefreshTokens

__all__ = [
    "MIGRATIONS",
    "POSTGRES_MIGRATIONS",
    "POSTGRES_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "APIKey",
    "DatabaseFileError",
    "InsecureDatabaseFile",
    "MemoryRefreshStore",
    "MemoryStore",
    "NoSuchAPIKey",
    "NoSuchUser",
    "PostgresRefreshTokens",
    "PostgresStore",
    "RefreshToken",
    "SQLiteRefreshTokens",
    "SQLiteStore",
    "ScramKeys",
    "StoreError",
    "StoreUnavailable",
    "UnsupportedSchema",
    "User",
    "UserExists",
    "database_exists",
    "open_database",
    "parse_database",
]
