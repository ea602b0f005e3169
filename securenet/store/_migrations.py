"""
The schema of the credential database: one list of migrations per backend
for every table it holds (users, API keys, revocations, throttle counters,
secrets, refresh tokens): L{MIGRATIONS} for SQLite (the file's
C{PRAGMA user_version}), L{POSTGRES_MIGRATIONS} for PostgreSQL (the row of
table C{schema_version}).  L{pending} is the one rule for both: which
migrations a database of a given version needs, and the refusal of a newer
one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

#: Schema migrations: C{MIGRATIONS[n]} takes version n to n + 1.  Append
#: only; never edit a released one.
MIGRATIONS: Sequence[Sequence[str]] = (
    (
        """
        CREATE TABLE users (
            name TEXT PRIMARY KEY NOT NULL,
            password_hash TEXT,
            scram_salt BLOB,
            scram_iterations INTEGER,
            scram_stored_key BLOB,
            scram_server_key BLOB,
            roles TEXT NOT NULL DEFAULT '[]',
            attributes TEXT NOT NULL DEFAULT '{}',
            totp_secret TEXT,
            totp_last_step INTEGER,
            disabled INTEGER NOT NULL DEFAULT 0,
            created TEXT
        )
        """,
        """
        CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY NOT NULL,
            user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            secret_hash BLOB NOT NULL,
            scopes TEXT NOT NULL DEFAULT '[]',
            created TEXT,
            expires TEXT,
            revoked INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX api_keys_by_user ON api_keys(user)",
        """
        CREATE TABLE revoked_tokens (
            jti TEXT PRIMARY KEY NOT NULL,
            expires REAL NOT NULL
        )
        """,
        "CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens(expires)",
        """
        CREATE TABLE failures (
            key TEXT PRIMARY KEY NOT NULL,
            count INTEGER NOT NULL,
            last REAL NOT NULL
        )
        """,
    ),
    (
        """
        CREATE TABLE secrets (
            name TEXT PRIMARY KEY NOT NULL,
            value BLOB NOT NULL
        )
        """,
    ),
    (
        # Refresh tokens of the HTTP API (securenet.web): families and their members.
        """
        CREATE TABLE refresh_families (
            family_id TEXT PRIMARY KEY NOT NULL,
            user TEXT NOT NULL,
            expires REAL NOT NULL,
            revoked REAL
        )
        """,
        """
        CREATE TABLE refresh_tokens (
            token_id TEXT PRIMARY KEY NOT NULL,
            family_id TEXT NOT NULL REFERENCES refresh_families(family_id) ON DELETE CASCADE,
            user TEXT NOT NULL,
            secret_hash BLOB NOT NULL,
            issued REAL NOT NULL,
            expires REAL NOT NULL,
            access_jti TEXT NOT NULL,
            access_expires REAL NOT NULL,
            scopes TEXT NOT NULL,
            amr TEXT NOT NULL,
            used REAL
        )
        """,
        "CREATE INDEX refresh_tokens_by_family ON refresh_tokens(family_id)",
        "CREATE INDEX refresh_families_by_expiry ON refresh_families(expires)",
    ),
)

#: The schema version this code writes and understands.
SCHEMA_VERSION = len(MIGRATIONS)

#: PostgreSQL's migrations, in the same style: C{POSTGRES_MIGRATIONS[n]} takes
#: version n to n + 1; append only.  The same tables as SQLite's (C{user}
#: is a reserved word there: the columns are C{username}); the version is
#: the one row of C{schema_version}.
POSTGRES_MIGRATIONS: Sequence[Sequence[str]] = (
    (
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        "INSERT INTO schema_version (version) VALUES (0)",
        """
        CREATE TABLE users (
            name TEXT PRIMARY KEY NOT NULL,
            password_hash TEXT,
            scram_salt BYTEA,
            scram_iterations INTEGER,
            scram_stored_key BYTEA,
            scram_server_key BYTEA,
            roles TEXT NOT NULL DEFAULT '[]',
            attributes TEXT NOT NULL DEFAULT '{}',
            totp_secret TEXT,
            totp_last_step BIGINT,
            disabled BOOLEAN NOT NULL DEFAULT FALSE,
            created TEXT
        )
        """,
        """
        CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY NOT NULL,
            username TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            secret_hash BYTEA NOT NULL,
            scopes TEXT NOT NULL DEFAULT '[]',
            created TEXT,
            expires TEXT,
            revoked BOOLEAN NOT NULL DEFAULT FALSE
        )
        """,
        "CREATE INDEX api_keys_by_user ON api_keys(username)",
        """
        CREATE TABLE revoked_tokens (
            jti TEXT PRIMARY KEY NOT NULL,
            expires DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens(expires)",
        """
        CREATE TABLE failures (
            key TEXT PRIMARY KEY NOT NULL,
            count BIGINT NOT NULL,
            last DOUBLE PRECISION NOT NULL
        )
        """,
        """
        CREATE TABLE secrets (
            name TEXT PRIMARY KEY NOT NULL,
            value BYTEA NOT NULL
        )
        """,
        """
        CREATE TABLE refresh_families (
            family_id TEXT PRIMARY KEY NOT NULL,
            username TEXT NOT NULL,
            expires DOUBLE PRECISION NOT NULL,
            revoked DOUBLE PRECISION
        )
        """,
        """
        CREATE TABLE refresh_tokens (
            token_id TEXT PRIMARY KEY NOT NULL,
            family_id TEXT NOT NULL REFERENCES refresh_families(family_id) ON DELETE CASCADE,
            username TEXT NOT NULL,
            secret_hash BYTEA NOT NULL,
            issued DOUBLE PRECISION NOT NULL,
            expires DOUBLE PRECISION NOT NULL,
            access_jti TEXT NOT NULL,
            access_expires DOUBLE PRECISION NOT NULL,
            scopes TEXT NOT NULL,
            amr TEXT NOT NULL,
            used DOUBLE PRECISION
        )
        """,
        "CREATE INDEX refresh_tokens_by_family ON refresh_tokens(family_id)",
        "CREATE INDEX refresh_families_by_expiry ON refresh_families(expires)",
    ),
)

#: The PostgreSQL schema version this code writes and understands.
POSTGRES_SCHEMA_VERSION = len(POSTGRES_MIGRATIONS)


def pending(version: int, migrations: Sequence[Sequence[str]], where: Path | str) -> list[tuple[int, Sequence[str]]]:
    """
    The migrations a database at schema C{version} needs, as (version
    reached, statements), in order; the caller runs them in one transaction
    and records each version reached.

    @param where: the database (a file, or a server's URL without password), for the error.
    @raise UnsupportedSchema: C{version} is newer than C{migrations} reach.
    """
    from securenet.store._errors import UnsupportedSchema

    supported = len(migrations)
    if version > supported:
        raise UnsupportedSchema(
            where,
            f"credential database schema version {version} is newer than this securenet "
            f"supports ({supported}); upgrade securenet",
            version,
            supported,
        )
    return [(target, migrations[target - 1]) for target in range(version + 1, supported + 1)]
