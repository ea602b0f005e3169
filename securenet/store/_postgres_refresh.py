"""
L{PostgresRefreshTokens}: the refresh tokens of a L{PostgresStore}, in its
database (tables C{refresh_families} and C{refresh_tokens} of
L{POSTGRES_MIGRATIONS}), with the rules of
L{securenet.store.SQLiteRefreshTokens}.  A token is consumed by one
conditional C{UPDATE ... RETURNING}: of racing refreshes with one token, on
any hosts, exactly one succeeds, and every later one is seen as a reuse.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from zope.interface import implementer

from securenet.interfaces import IRefreshTokenStore
from securenet.store._errors import StoreError
from securenet.store._records import RefreshToken

if TYPE_CHECKING:
    from securenet.store._postgres import PostgresStore


def _token(row: dict[str, Any]) -> RefreshToken:
    return RefreshToken(
        token_id=row["token_id"],
        family_id=row["family_id"],
        user=row["username"],
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
class PostgresRefreshTokens:
    """
    The refresh tokens of a L{PostgresStore}, through its pool and runner.
    Get it as C{store.refresh_tokens}.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._connection = store._connection
        self._run = store._run

    def add(self, token: RefreshToken) -> defer.Deferred[None]:
        return self._run(self._add, token)

    def _add(self, token: RefreshToken) -> None:
        with self._connection() as c:
            c.execute(
                "INSERT INTO refresh_families (family_id, username, expires, revoked) VALUES (%s, %s, %s, NULL) "
                "ON CONFLICT (family_id) DO NOTHING",
                (token.family_id, token.user, token.session_expires_at),
            )
            # Locked until the token is in: a concurrent revocation waits for it, so it names its access token too.
            family = c.execute(
                "SELECT revoked FROM refresh_families WHERE family_id = %s FOR SHARE", (token.family_id,)
            ).fetchone()
            if family is None or family["revoked"] is not None:
                raise StoreError(f"refresh family {token.family_id!r} is revoked")
            cursor = c.execute(
                "INSERT INTO refresh_tokens (token_id, family_id, username, secret_hash, issued, expires, "
                "access_jti, access_expires, scopes, amr, used) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (token_id) DO NOTHING",
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
            if cursor.rowcount == 0:
                raise StoreError(f"refresh token id {token.token_id!r} already exists")

    def get(self, token_id: str) -> defer.Deferred[RefreshToken | None]:
        return self._run(self._get, token_id)

    def _get(self, token_id: str) -> RefreshToken | None:
        with self._connection() as c:
            row = c.execute(
                "SELECT t.*, f.expires AS session_expires FROM refresh_tokens t "
                "JOIN refresh_families f USING (family_id) WHERE t.token_id = %s",
                (token_id,),
            ).fetchone()
        return None if row is None else _token(row)

    def consume(self, token_id: str, when: float) -> defer.Deferred[bool]:
        return self._run(self._consume, token_id, when)

    def _consume(self, token_id: str, when: float) -> bool:
        with self._connection() as c:
            row = c.execute(
                "UPDATE refresh_tokens SET used = %s WHERE token_id = %s AND used IS NULL AND family_id IN "
                "(SELECT family_id FROM refresh_families WHERE revoked IS NULL) RETURNING token_id",
                (when, token_id),
            ).fetchone()
        return row is not None

    def revoke_family(self, family_id: str, when: float) -> defer.Deferred[list[tuple[str, float]]]:
        return self._run(self._revoke_family, family_id, when)

    def _revoke_family(self, family_id: str, when: float) -> list[tuple[str, float]]:
        with self._connection() as c:
            c.execute("UPDATE refresh_families SET revoked = %s WHERE family_id = %s AND revoked IS NULL", (when, family_id))
            rows = c.execute(
                "SELECT access_jti, access_expires FROM refresh_tokens WHERE family_id = %s", (family_id,)
            ).fetchall()
        return [(str(r["access_jti"]), float(r["access_expires"])) for r in rows]

    def is_family_revoked(self, family_id: str) -> defer.Deferred[bool]:
        return self._run(self._is_family_revoked, family_id)

    def _is_family_revoked(self, family_id: str) -> bool:
        with self._connection() as c:
            row = c.execute("SELECT revoked FROM refresh_families WHERE family_id = %s", (family_id,)).fetchone()
        return row is None or row["revoked"] is not None

    def prune(self, before: float) -> defer.Deferred[int]:
        return self._run(self._prune, before)

    def _prune(self, before: float) -> int:
        with self._connection() as c:
            return c.execute("DELETE FROM refresh_families WHERE expires < %s", (before,)).rowcount
