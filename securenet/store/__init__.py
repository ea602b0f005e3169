"""
The credential database: records, errors, and the stores that keep them.

Every store provides L{securenet.interfaces.ICredentialStore} (users,
roles, attributes, password and SCRAM records, TOTP secrets and used codes,
API keys, token revocations, throttle counters) and keeps the HTTP API's
refresh tokens as C{store.refresh_tokens}
(L{securenet.interfaces.IRefreshTokenStore}).  L{MemoryStore} is the
reference behaviour; L{SQLiteStore} the embedded database, one file with one
migration list for all of its tables.  The conformance suite in
C{tests/store} holds every backend to the same contract.
"""

from securenet.store._errors import (
    DatabaseFileError,
    InsecureDatabaseFile,
    NoSuchAPIKey,
    NoSuchUser,
    StoreError,
    UnsupportedSchema,
    UserExists,
)
from securenet.store._memory import MemoryRefreshStore, MemoryStore
from securenet.store._migrations import MIGRATIONS, SCHEMA_VERSION
from securenet.store._records import APIKey, RefreshToken, ScramKeys, User
from securenet.store._sqlite import SQLiteStore
from securenet.store._sqlite_refresh import SQLiteRefreshTokens

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "APIKey",
    "DatabaseFileError",
    "InsecureDatabaseFile",
    "MemoryRefreshStore",
    "MemoryStore",
    "NoSuchAPIKey",
    "NoSuchUser",
    "RefreshToken",
    "SQLiteRefreshTokens",
    "SQLiteStore",
    "ScramKeys",
    "StoreError",
    "UnsupportedSchema",
    "User",
    "UserExists",
]
