"""
The records a credential store keeps: attrs value objects, the same for
every backend.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class ScramKeys:
    """
    What a SCRAM server stores for a user (RFC 5802 section 3): never the
    password nor anything a client could log in with directly.
    """

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@attrs.frozen
class User:
    """
    A user record.

    @ivar password_hash: an argon2id PHC string (C{$argon2id$v=19$m=...}),
        or None for users who cannot log in with a password.
    @ivar totp_secret: base32 TOTP secret, or None if not enrolled.
    @ivar totp_last_step: the last TOTP time step accepted (a code is accepted
        at most once), or None.
    """

    name: str
    password_hash: str | None = None
    scram: ScramKeys | None = None
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    totp_secret: str | None = None
    totp_last_step: int | None = None
    disabled: bool = False
    created: datetime.datetime | None = None


@attrs.frozen
class APIKey:
    """
    An API key record; the secret itself is never stored, only its hash.

    @ivar key_id: the public part of C{<key_id>.<secret>}.
    @ivar secret_hash: SHA-256 of the secret (the secret has >= 128 bits of
        entropy, so a fast hash suffices: there is nothing to brute-force).
    """

    key_id: str
    user: str
    secret_hash: bytes
    scopes: tuple[str, ...] = ()
    created: datetime.datetime | None = None
    expires: datetime.datetime | None = None
    revoked: bool = False


@attrs.frozen
class RefreshToken:
    """
    One refresh token's record.

    @ivar token_id: the public part of C{snrt_<id>.<secret>}.
    @ivar family_id: the family (login session) it belongs to; access
        tokens carry it as their C{sid} claim.
    @ivar secret_hash: SHA-256 of the secret.
    @ivar expires_at: when it stops working (POSIX time).
    @ivar session_expires_at: when the family stops working, however often
        it was refreshed.
    @ivar access_jti: the id of the access token issued with it, and
        C{access_expires_at} its expiry: revoked with the family.
    @ivar scopes: the scopes of the family's access tokens.
    @ivar amr: how the family's login authenticated (RFC 8176: C{pwd},
        C{otp}).
    @ivar used_at: when it was exchanged for a successor, or None.
    """

    token_id: str
    family_id: str
    user: str
    secret_hash: bytes = attrs.field(repr=False)
    issued_at: float
    expires_at: float
    session_expires_at: float
    access_jti: str
    access_expires_at: float
    scopes: tuple[str, ...] = ()
    amr: tuple[str, ...] = ()
    used_at: float | None = None
