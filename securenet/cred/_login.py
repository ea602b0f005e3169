"""
The one login flow, shared by the stream exchange and the HTTP
authenticator::

    admit (throttle) -> portal.login -> refusal mapping -> scopes
        -> second factor (TOTP) -> throttle success

One attempt is one admission: the throttle counts it as a failure before
anything is checked and forgives it only when every factor passed.  A
second factor given as part of the same attempt (the HTTP login's C{totp},
the stream's first C{TOTP} line after C{NEXT TOTP}) is not a new attempt;
a retry after a wrong code is.  So a user who waited out C{THROTTLED} gets
in with one right password and one right code, on either path.

The flow decides; it does not speak the wire nor write audit events: a
refusal is a L{LoginFailure} whose C{reason} the caller writes to its
C{auth.decision} event (L{securenet.audit.auth_decision}) and maps to its
answer (C{NO AUTH-FAILED} / C{THROTTLED}, HTTP 401 / 429).

It fails closed: while the audit log cannot be written, or the credential
database cannot be reached (L{StoreUnavailable}, a PostgreSQL server down),
every step refuses with C{unavailable} (C{NO AUDIT-UNAVAILABLE} /
C{DB-UNAVAILABLE}, HTTP 503).
"""

from __future__ import annotations

from collections.abc import Awaitable
from time import perf_counter
from typing import Any, Literal, TypeVar, cast

import attrs
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import Portal
from twisted.logger import Logger

from securenet import _metrics, audit
from securenet.cred._credentials import TOTPCredentials
from securenet.cred._identity import AuthenticationContext, Identity
from securenet.cred._throttle import Throttle, throttle_keys
from securenet.interfaces import IIdentity, ISecondFactor
from securenet.store._errors import StoreUnavailable

_log = Logger()
_T = TypeVar("_T")


class LoginFailure(Exception):
    """
    A login was refused.

    @ivar kind: C{refused} (a checker said no, or none could check),
        C{throttled} (nothing was checked: wait C{wait} seconds) or
        C{unavailable} (not decided: the audit trail cannot be written, see
        L{securenet.audit.watch_sink}; or, C{cause} C{db}, the credential
        database cannot be reached).
    @ivar reason: why, for the audit log only (never for the client).
    @ivar attempted: the user name the client claimed, if any.
    @ivar cause: what is unavailable: C{audit} or C{db}.
    """

    def __init__(
        self,
        kind: Literal["refused", "throttled", "unavailable"],
        reason: str,
        attempted: str | None,
        wait: float = 0.0,
        *,
        cause: Literal["audit", "db"] = "audit",
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.attempted = attempted
        self.wait = wait
        self.cause = cause

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait before trying again (what clients are told)."""
        return int(self.wait) + 1


@attrs.frozen
class Attempt:
    """
    One login attempt in progress: the throttle keys it was admitted under
    (None when it is not throttled).  Each try within it (the first, and a
    second factor's retry) is admitted once; a try that fails stays counted,
    and on success only the successful try's admission is taken back from
    the address (the account is forgiven entirely), as if each try had been
    a login of its own.
    """

    keys: list[str] | None


class LoginFlow:
    """
    Logs credentials in through C{portal} under C{throttle} (None: no
    throttling).  Every method is a coroutine; the stream exchange wraps
    them in Deferreds.
    """

    def __init__(self, portal: Portal, throttle: Throttle | None) -> None:
        self.portal = portal
        self.throttle = throttle

    async def admit(self, attempted: str | None, address: str, *, throttled: bool = True) -> Attempt:
        """
        Start an attempt by C{attempted} (a user name, or None) from
        C{address}.  With C{throttled} False (ANONYMOUS: it proves nothing,
        so it must neither be held back nor forgive anyone) nothing is counted.

        @raise LoginFailure: C{throttled}, with the seconds to wait; or
            C{unavailable}.
        """
        self._recording(attempted)
        if self.throttle is None or not throttled:
            return Attempt(None)
        attempt = Attempt(throttle_keys(attempted, address))
        await self._admit(attempt, attempted)
        return attempt

    @staticmethod
    async def _reaching(step: Awaitable[_T], attempted: str | None) -> _T:
        """C{step}'s result; a credential database out of reach refuses with C{unavailable} (fail closed)."""
        try:
            return await step
        except StoreUnavailable as e:
            raise LoginFailure("unavailable", str(e), attempted, cause="db") from None

    async def _admit(self, attempt: Attempt, attempted: str | None) -> None:
        assert self.throttle is not None and attempt.keys is not None
        wait = await self._reaching(self.throttle.admit(attempt.keys), attempted)
        if wait is not None:
            _metrics.throttled()
            raise LoginFailure("throttled", f"throttled for {wait:.1f} s", attempted, wait)

    async def retry(self, attempt: Attempt, attempted: str) -> None:
        """A new try within an attempt (a second factor after a wrong code): admitted like a new attempt."""
        if attempt.keys is not None:
            await self._admit(attempt, attempted)

    async def check(self, credentials: Any, context: AuthenticationContext, attempted: str | None) -> Identity:
        """
        The portal's verdict on C{credentials}, as an L{Identity} carrying
        the credential's scopes (a token's or an API key's).

        @raise LoginFailure: C{refused}, the reason naming the cause; or
            C{unavailable}.
        """
        self._recording(attempted)
        started = perf_counter()
        try:
            _, avatar, _ = await self.portal.login(credentials, context, IIdentity)
        except UnhandledCredentials:
            raise LoginFailure("refused", f"no --auth checker accepts {context.mechanism} credentials", attempted) from None
        except StoreUnavailable as e:
            raise LoginFailure("unavailable", str(e), attempted, cause="db") from None
        except UnauthorizedLogin as e:
            _metrics.authentication_time(context.mechanism, "denied", perf_counter() - started)
            raise LoginFailure("refused", getattr(e, "reason", None) or str(e) or "credentials refused", attempted) from None
        except Exception:
            # A bug in a checker or the realm is a refusal, never an open door.
            _log.failure("checker error while authenticating {peer}", peer=context.peer)
            raise LoginFailure("refused", "internal error in the checker", attempted) from None
        _metrics.authentication_time(context.mechanism, "ok", perf_counter() - started)
        identity = cast(Identity, avatar)
        scopes = getattr(getattr(credentials, "verified", None), "scopes", None)
        if scopes:
            identity = attrs.evolve(identity, scopes=tuple(scopes))
        return identity

    def _recording(self, attempted: str | None) -> None:
        """Fail closed: no authentication while the audit trail cannot be written."""
        if not audit.recording():
            raise LoginFailure("unavailable", f"the audit log cannot be written ({audit.sink_problem()})", attempted)

    async def second_factor_required(self, avatar_id: str) -> bool:
        """Whether some checker of the portal demands a second factor of C{avatar_id}."""
        for checker in list({id(c): c for c in self.portal.checkers.values()}.values()):
            if ISecondFactor.providedBy(checker) and await self._reaching(checker.required(avatar_id), avatar_id):
                return True
        return False

    async def check_second_factor(self, first: Identity, code: str, context: AuthenticationContext) -> Identity:
        """
        Check a TOTP C{code} for the identity the first factor gave.

        @raise LoginFailure: C{refused}, its reason prefixed C{TOTP:}.
        """
        context = attrs.evolve(context, second_factor="TOTP")
        try:
            identity = await self.check(TOTPCredentials(first.avatar_id, code), context, first.avatar_id)
        except LoginFailure as e:
            raise LoginFailure(e.kind, f"TOTP: {e.reason}", first.avatar_id, cause=e.cause) from None
        if identity.avatar_id != first.avatar_id:
            raise LoginFailure("refused", "TOTP checker named another identity", first.avatar_id)
        return identity

    async def succeeded(self, attempt: Attempt) -> None:
        """Every factor passed: forgive what this attempt counted."""
        if self.throttle is not None and attempt.keys is not None:
            await self._reaching(self.throttle.succeeded(attempt.keys), None)
