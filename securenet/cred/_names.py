"""
User names and roles: what a record may be called, and the one
canonical form in which names are compared and stored.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from securenet._errors import SecurenetError
from securenet.cred._saslprep import SASLprepError, saslprep


class UserRecordError(SecurenetError, ValueError):
    """A user name or role was refused (the message names it and says why)."""


# -- users -------------------------------------------------------------------

#: The longest user name, in code points.
MAX_USER_NAME = 64


def _has_space_or_control(text: str) -> bool:
    return any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp") for c in text)


def canonical_user_name(name: str) -> str:
    """The form names are stored and looked up in: Unicode NFC."""
    return unicodedata.normalize("NFC", name)


def validate_user_name(name: str) -> str:
    """
    Check a new user's name and return its canonical (NFC) form.

    A name is at most L{MAX_USER_NAME} code points, holds no whitespace or
    control characters, and is its own SASLprep form -- so C{PLAIN}, SCRAM
    (whose clients SASLprep the name) and the CLI all name the same user.

    @raise UserRecordError: the name is refused; the message says why.
    """
    name = canonical_user_name(name)
    if not name:
        raise UserRecordError("user name must not be empty")
    if len(name) > MAX_USER_NAME:
        raise UserRecordError(f"user name {name!r} is {len(name)} characters; at most {MAX_USER_NAME} are allowed")
    if _has_space_or_control(name):
        raise UserRecordError(f"user name {name!r} contains whitespace or a control character")
    try:
        prepared = saslprep(name)
    except SASLprepError as e:
        raise UserRecordError(f"user name {name!r} refused: it {e.problem}") from None
    if prepared != name:
        raise UserRecordError(f"user name {name!r} is not in SASLprep form (that would be {prepared!r})")
    return name


def validate_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """
    Check role names (non-empty, no whitespace, control characters or
    commas) and return them without duplicates, in the order given.

    @raise UserRecordError: a role is refused.
    """
    checked: list[str] = []
    for role in roles:
        role = unicodedata.normalize("NFC", role)
        if not role:
            raise UserRecordError("role name must not be empty")
        if _has_space_or_control(role) or "," in role:
            raise UserRecordError(f"role name {role!r} contains whitespace, a control character or a comma")
        if role not in checked:
            checked.append(role)
    return tuple(checked)
