"""
TOTP (RFC 6238) as a second factor: L{TOTPChecker} checks codes, and as an
L{ISecondFactor} tells the session which users must give one.

Parameters are the ones every authenticator app uses: 6 digits, 30 s steps,
HMAC-SHA-1.  A code is accepted from the current step or one step either
side (clock drift), and at most once: pyotp alone would accept the same code
again for as long as it is valid, so the checker asks the store to record
the matched time step (L{ICredentialStore.mark_totp_step}, atomic, only
forward) and refuses the code if that step, or a later one, was already used
(RFC 6238 section 5.2).

A refusal is a L{TOTPRefused}: generic in C{str()}, with the cause in
C{reason} for the audit log.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

import attrs
import pyotp
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from securenet._errors import SecurenetError
from securenet.cred._jwt import Clock, now
from securenet.interfaces import ICredentialStore, ISecondFactor, ITOTPCredentials
from securenet.store._errors import NoSuchUser
from securenet.store._records import User

DIGITS = 6
INTERVAL = 30
WINDOW = 1

#: Steps either side searched only to say, in the audit log, that a wrong
#: code was a valid code for a clock too far off (never to accept it).
_DRIFT_DIAGNOSIS = 10


class TOTPRefused(UnauthorizedLogin):
    """A TOTP code was refused; C{reason} says why, for the audit log."""

    def __init__(self, reason: str) -> None:
        super().__init__("authentication failed")
        self.reason = reason

    def __repr__(self) -> str:
        return f"TOTPRefused(reason={self.reason!r})"


class AlreadyEnrolled(SecurenetError):
    """The user already has a TOTP secret (replace it only when asked to)."""


@implementer(ICredentialsChecker, ISecondFactor)
class TOTPChecker:
    """
    Checks a TOTP code of a user who passed a first factor; the avatar id is
    the user's name.

    @param window: steps accepted either side of the current one.
    """

    credentialInterfaces = (ITOTPCredentials,)

    def __init__(
        self,
        store: ICredentialStore,
        clock: Clock,
        *,
        digits: int = DIGITS,
        interval: int = INTERVAL,
        digest: Callable[..., Any] = hashlib.sha1,
        window: int = WINDOW,
    ) -> None:
        if digits not in (6, 7, 8):
            raise ValueError(f"TOTP codes have 6 to 8 digits, not {digits}")
        if interval < 1 or window < 0 or window > 2:
            raise ValueError("TOTP interval must be at least 1 s and the window 0 to 2 steps")
        self.store = store
        self.clock = clock
        self.digits = digits
        self.interval = interval
        self.digest = digest
        self.window = window
        self._code = re.compile(f"[0-9]{{{digits}}}")

    def totp(self, secret: str) -> pyotp.TOTP:
        return pyotp.TOTP(secret, digits=self.digits, digest=self.digest, interval=self.interval)

    def step_at(self, when: float) -> int:
        """The RFC 6238 time step C{T} at POSIX time C{when}."""
        return int(when // self.interval)

    def required(self, avatar_id: str) -> defer.Deferred[bool]:
        """True iff C{avatar_id} is a user with a TOTP secret."""
        return self.store.get_user(avatar_id).addCallback(lambda user: user is not None and user.totp_secret is not None)

    def requestAvatarId(self, credentials: ITOTPCredentials) -> defer.Deferred[Any]:
        username: str = credentials.username
        code = credentials.code
        if not isinstance(code, str) or not self._code.fullmatch(code):
            return defer.fail(TOTPRefused("malformed code"))

        def check(user: User | None) -> defer.Deferred[str]:
            if user is None:
                raise TOTPRefused("unknown user")
            if user.disabled:
                raise TOTPRefused("user disabled")
            if user.totp_secret is None:
                raise TOTPRefused("not enrolled in TOTP")
            step = self._match(user.totp_secret, code)
            return self.store.mark_totp_step(username, step).addCallbacks(marked, vanished)

        def marked(recorded: bool) -> str:
            if not recorded:
                raise TOTPRefused("code already used")
            return username

        def vanished(failure: Failure) -> str:
            failure.trap(NoSuchUser)
            raise TOTPRefused("unknown user")

        return self.store.get_user(username).addCallback(check)

    def _match(self, secret: str, code: str) -> int:
        """The time step whose code is C{code}, within the window; else refuse."""
        current = self.step_at(now(self.clock))
        try:
            totp = self.totp(secret)
            matched = [
                step
                for step in range(current - self.window, current + self.window + 1)
                if hmac.compare_digest(totp.generate_otp(step), code)
            ]
            if matched:
                return matched[-1]
            drift = [
                step - current
                for step in range(current - _DRIFT_DIAGNOSIS, current + _DRIFT_DIAGNOSIS + 1)
                if hmac.compare_digest(totp.generate_otp(step), code)
            ]
        except (binascii.Error, ValueError, TypeError):
            raise TOTPRefused("stored TOTP secret is invalid") from None
        if drift:
            raise TOTPRefused(f"code outside the time window ({drift[0] * self.interval:+d} s)")
        raise TOTPRefused("wrong code")


def provisioning_uri(secret: str, user: str, *, issuer: str = "securenet") -> str:
    """The C{otpauth://} URI (for a QR code) of a secret, with the default parameters."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(name=user, issuer_name=issuer)


def enroll(
    store: ICredentialStore, user: str, *, issuer: str = "securenet", replace: bool = False
) -> defer.Deferred[tuple[str, str]]:
    """
    Give C{user} a new TOTP secret (160 random bits, base32) and forget the
    last used step of any old one.

    @return: fires with C{(secret, otpauth URI)}; fails with L{NoSuchUser},
        or L{AlreadyEnrolled} if the user has a secret and not C{replace}.
    """
    secret = pyotp.random_base32()

    def update(record: User | None) -> defer.Deferred[None]:
        if record is None:
            raise NoSuchUser(f"no user {user!r}")
        if record.totp_secret is not None and not replace:
            raise AlreadyEnrolled(f"user {user!r} is already enrolled in TOTP")
        return store.update_user(attrs.evolve(record, totp_secret=secret, totp_last_step=None))

    d = store.get_user(user).addCallback(update)
    return d.addCallback(lambda _: (secret, provisioning_uri(secret, user, issuer=issuer)))


__all__ = ["AlreadyEnrolled", "TOTPChecker", "TOTPRefused", "enroll", "provisioning_uri"]
