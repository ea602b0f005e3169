"""
Making a user record: the password hashed (argon2id) and turned into
SCRAM keys in one step, so both mechanisms accept the same password.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from securenet.cred._names import validate_roles, validate_user_name
from securenet.cred._passwords import PasswordHasher
from securenet.cred._saslprep import normalize_password
from securenet.cred._scram import derive_scram_keys
from securenet.store._records import User


def new_user(
    name: str,
    password: str,
    *,
    roles: Iterable[str] = (),
    hasher: PasswordHasher,
    scram_iterations: int = 600_000,
    attributes: Mapping[str, Any] | None = None,
) -> User:
    """
    A new user record with an argon2id hash and SCRAM-SHA-256 keys of
    C{password}.  Blocks for both derivations (use a L{Runner} on a server).

    @raise UserRecordError: the name or a role is refused.
    @raise PasswordError: the password is empty or refused by SASLprep.
    """
    name = validate_user_name(name)
    checked_roles = validate_roles(roles)
    normalize_password(password)
    return User(
        name=name,
        password_hash=hasher.hash(password),
        scram=derive_scram_keys(password, iterations=scram_iterations),
        roles=checked_roles,
        attributes=dict(attributes or {}),
        created=datetime.datetime.now(datetime.UTC),
    )
