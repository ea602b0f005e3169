"""
SASLprep (RFC 4013): the one preparation every password goes through
before it is hashed, verified or turned into SCRAM keys, so that equivalent
Unicode spellings are one password whichever mechanism the client uses.
"""

from __future__ import annotations

import stringprep
import unicodedata
from collections.abc import Callable

from securenet._errors import SecurenetError

# -- errors ------------------------------------------------------------------


class PasswordError(SecurenetError, ValueError):
    """A password was refused; the message says why and never contains it."""


class SASLprepError(SecurenetError, ValueError):
    """
    SASLprep refused a string.  C{problem} says why ("contains a control
    character"); neither it nor the message ever quotes the string, which
    may be a password.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"string refused by SASLprep: it {problem}")
        self.problem = problem


# -- SASLprep (RFC 4013) -----------------------------------------------------
#
# No well-kept public library exposes SASLprep (scramp and passlib carry
# private copies), so it is written here from the RFC with the stdlib's
# stringprep tables (RFC 3454, Unicode 3.2) and unicodedata.ucd_3_2_0.  The
# tests compare it with scramp's copy on a corpus of inputs.

#: RFC 4013 section 2.3: prohibited output, with what to tell the user.
_PROHIBITED: tuple[tuple[Callable[[str], bool], str], ...] = (
    (stringprep.in_table_c12, "contains a non-ASCII space that was not mapped"),
    (stringprep.in_table_c21_c22, "contains a control character"),
    (stringprep.in_table_c3, "contains a private-use character"),
    (stringprep.in_table_c4, "contains a non-character code point"),
    (stringprep.in_table_c5, "contains a surrogate code point"),
    (stringprep.in_table_c6, "contains a character inappropriate for plain text"),
    (stringprep.in_table_c7, "contains a character inappropriate for canonical representation"),
    (stringprep.in_table_c8, "contains a display-changing or deprecated character"),
    (stringprep.in_table_c9, "contains a tagging character"),
)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """
    Prepare C{text} with the SASLprep profile of stringprep (RFC 4013).

    Non-ASCII spaces become U+0020, characters "commonly mapped to nothing"
    (soft hyphen, zero-width joiners, ...) are removed, the result is NFKC
    (Unicode 3.2); then prohibited characters and bidirectional-text
    violations (RFC 3454 section 6) are refused.

    @param allow_unassigned: False (default) treats C{text} as a "stored
        string" and refuses code points unassigned in Unicode 3.2; True treats
        it as a "query" (RFC 3454 section 7).
    @return: the prepared string, possibly empty.
    @raise SASLprepError: the string cannot be prepared; C{problem} says why,
        without quoting it.
    """
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c))
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for c in prepared:
        for in_table, problem in _PROHIBITED:
            if in_table(c):
                raise SASLprepError(problem)
        if not allow_unassigned and stringprep.in_table_a1(c):
            raise SASLprepError("contains a code point unassigned in Unicode 3.2")
    if any(stringprep.in_table_d1(c) for c in prepared):
        if any(stringprep.in_table_d2(c) for c in prepared):
            raise SASLprepError("mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise SASLprepError("contains right-to-left characters but does not start and end with one")
    return prepared


def normalize_password(password: str) -> str:
    """
    The form of C{password} that is hashed, verified and turned into SCRAM
    keys: its SASLprep (RFC 4013).  Applied the same way by
    L{PasswordHasher.hash}, L{PasswordHasher.verify} (so C{PLAIN}) and
    L{derive_scram_keys} (so SCRAM), so a password works with every
    mechanism.

    @raise PasswordError: the password is empty, or becomes empty, or
        SASLprep refuses it (the message says why, never what it is).
    """
    if not password:
        raise PasswordError("password must not be empty")
    try:
        prepared = saslprep(password)
    except SASLprepError as e:
        raise PasswordError(f"password refused: it {e.problem}") from None
    if not prepared:
        raise PasswordError("password is empty once prepared (it holds only characters SASLprep removes)")
    return prepared
