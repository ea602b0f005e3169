"""
The schema of the credential database: one list of migrations for every
table in the file (users, API keys, revocations, throttle counters,
secrets, refresh tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

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
