"""
Refresh tokens: where they are kept, and the rules of their rotation.

A refresh token is an opaque random string, C{snrt_<id>.<secret>} (128-bit
id, 256-bit secret), never a JWT: it can never be mistaken for an access
token by any verifier.  Only SHA-256 of the secret is stored (like an API
key's: the secret is not guessable, so a slow hash would add nothing).

Tokens form I{families}: a login starts one; each refresh consumes the
presented token (single use) and adds its successor to the same family.
Presenting a token that was already used means two parties hold the
family (one of them stole it): the whole family is revoked -- its newest
refresh token stops working, and so do the access tokens issued with any
of its members (their C{jti}s are recorded with each refresh token for
that purpose).

L{IRefreshTokenStore} is the seam; L{MemoryRefreshStore} is for tests and
services without a database; L{SQLiteRefreshTokens} keeps them in the
credential database file, in tables of the store's one migration list.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, TypeVar

from twisted.internet import defer
from zope.interface import implementer

if TYPE_CHECKING:
    from securenet.store._sqlite import SQLiteStore
from securenet.interfaces import IRefreshTokenStore
from securenet.store._errors import StoreError
from securenet.store._records import RefreshToken

_T = TypeVar("_T")


def _token(row: sqlite3.Row) -> RefreshToken:
    return RefreshToken(
        token_id=row["token_id"],
        family_id=row["family_id"],
        user=row["user"],
        secret_hash=bytes(row["secret_hash"]),
        issued_at=row["issued"],
        expires_at=row["expires"],
        session_expires_at=row["session_expires"],
        access_jti=row["access_jti"],
        access_expires_at=row["access_expires"],
        scopes=tuple(json.loads(row["scopes"])),
        amr=tuple(json.loads(row["amr"])),
        used_at=row["used"],
    )


@implementer(IRefreshTokenStore)
class SQLiteRefreshTokens:
    """
    The refresh tokens of an L{SQLiteStore}: tables C{refresh_families} and
    C{refresh_tokens} of the same file (made by the store's migrations),
    reached through the store's connection and runner -- so on the store's
    thread in a server, never the reactor's.  Get it as
    C{store.refresh_tokens}.
    """

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._transaction = store._transaction
        self._reading = store._cursor
        self._run = store._run

    def add(self, token: RefreshToken) -> defer.Deferred[None]:
        return self._run(self._add, token)

    def _add(self, token: RefreshToken) -> None:
        with self._transaction() as c:
            c.execute(
                "INSERT INTO refresh_families (family_id, user, expires, revoked) VALUES (?, ?, ?, NULL) "
                "ON CONFLICT (family_id) DO NOTHING",
                (token.family_id, token.user, token.session_expires_at),
            )
            revoked = c.execute("SELECT revoked FROM refresh_families WHERE family_id = ?", (token.family_id,)).fetchone()[0]
            if revoked is not None:
                raise StoreError(f"refresh family {token.family_id!r} is revoked")
            try:
                c.execute(
                    "INSERT INTO refresh_tokens (token_id, family_id, user, secret_hash, issued, expires, "
                    "access_jti, access_expires, scopes, amr, used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        token.token_id,
                        token.family_id,
                        token.user,
                        token.secret_hash,
                        token.issued_at,
                        token.expires_at,
                        token.access_jti,
                        token.access_expires_at,
                        json.dumps(list(token.scopes)),
                        json.dumps(list(token.amr)),
                        token.used_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise StoreError(f"refresh token id {token.token_id!r} already exists") from None

    def get(self, token_id: str) -> defer.Deferred[RefreshToken | None]:
        return self._run(self._get, token_id)

    def _get(self, token_id: str) -> RefreshToken | None:
        with self._reading() as c:
            row = c.execute(
                "SELECT t.*, f.expires AS session_expires FROM refresh_tokens t "
                "JOIN refresh_families f USING (family_id) WHERE t.token_id = ?",
                (token_id,),
            ).fetchone()
        return None if row is None else _token(row)

    def consume(self, token_id: str, when: float) -> defer.Deferred[bool]:
        return self._run(self._consume, token_id, when)

    def _consume(self, token_id: str, when: float) -> bool:
        with self._transaction() as c:
            cursor = c.execute(
                "UPDATE refresh_tokens SET used = ? WHERE token_id = ? AND used IS NULL AND family_id IN "
                "(SELECT family_id FROM refresh_families WHERE revoked IS NULL)",
                (when, token_id),
            )
            return cursor.rowcount == 1

    def revoke_family(self, family_id: str, when: float) -> defer.Deferred[list[tuple[str, float]]]:
        return self._run(self._revoke_family, family_id, when)

    def _revoke_family(self, family_id: str, when: float) -> list[tuple[str, float]]:
        with self._transaction() as c:
            c.execute("UPDATE refresh_families SET revoked = ? WHERE family_id = ? AND revoked IS NULL", (when, family_id))
            rows = c.execute("SELECT access_jti, access_expires FROM refresh_tokens WHERE family_id = ?", (family_id,)).fetchall()
        return [(str(r[0]), float(r[1])) for r in rows]

    def is_family_revoked(self, family_id: str) -> defer.Deferred[bool]:
        return self._run(self._is_family_revoked, family_id)

    def _is_family_revoked(self, family_id: str) -> bool:
        with self._reading() as c:
            row = c.execute("SELECT revoked FROM refresh_families WHERE family_id = ?", (family_id,)).fetchone()
        return row is None or row[0] is not None

    def prune(self, before: float) -> defer.Deferred[int]:
        return self._run(self._prune, before)

    def _prune(self, before: float) -> int:
        with self._transaction() as c:
            return c.execute("DELETE FROM refresh_families WHERE expires < ?", (before,)).rowcount
