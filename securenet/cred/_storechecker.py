"""
Every store-backed checker over one credential store, as one checker.

C{twisted.cred.strcred} gives each C{--auth} option one checker; an operator
who points securenet at a credential database wants all of its mechanisms
at once: passwords (PLAIN), SCRAM-SHA-256(-PLUS), API keys (APIKEY) and the
TOTP second factor.  L{StoreChecker} is that: a thin dispatcher to the real
checkers, which stay usable on their own.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnhandledCredentials
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from securenet._threads import Runner
from securenet.cred._apikeys import APIKeyChecker
from securenet.cred._passwords import PasswordChecker, PasswordHasher
from securenet.cred._scram import DEFAULT_ITERATIONS, ScramChecker
from securenet.cred._totp import TOTPChecker
from securenet.interfaces import (
    IAPIKeyCredentials,
    ICredentialStore,
    IScramChecker,
    IScramCredentials,
    ISecondFactor,
    ITOTPCredentials,
)


@implementer(IScramChecker, ISecondFactor)
class StoreChecker:
    """
    PLAIN, SCRAM, APIKEY and TOTP over C{store}.

    @param scram_iterations: the PBKDF2 count users' SCRAM keys were made
        with; unknown users are announced the same count, so a challenge
        does not tell whether a user exists.
    @param scram_secret: a persistent secret for the fake salts of unknown
        users (see L{ICredentialStore.secret}).
    """

    def __init__(
        self,
        store: ICredentialStore,
        clock: IReactorTime,
        *,
        runner: Runner,
        hasher: PasswordHasher | None = None,
        scram_iterations: int = DEFAULT_ITERATIONS,
        scram_secret: bytes | None = None,
    ) -> None:
        self.store = store
        self.passwords = PasswordChecker(store, hasher or PasswordHasher(), runner)
        self.scram = ScramChecker(store, default_iterations=scram_iterations, secret=scram_secret)
        self.api_keys = APIKeyChecker(store, clock)
        self.totp = TOTPChecker(store, clock)
        self._checkers: dict[Any, Any] = {
            IUsernamePassword: self.passwords,
            IScramCredentials: self.scram,
            IAPIKeyCredentials: self.api_keys,
            ITOTPCredentials: self.totp,
        }
        self.credentialInterfaces = tuple(self._checkers)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        for interface, checker in self._checkers.items():
            if interface.providedBy(credentials):
                result: defer.Deferred[Any] = defer.maybeDeferred(checker.requestAvatarId, credentials)
                return result
        return defer.fail(UnhandledCredentials(f"no store checker for {credentials!r}"))

    @property
    def plus(self) -> bool:
        """Whether SCRAM-SHA-256-PLUS is offered (see L{ScramChecker})."""
        return self.scram.plus

    def scram_parameters(self, username: str) -> defer.Deferred[tuple[bytes, int]]:
        return self.scram.scram_parameters(username)

    def required(self, avatar_id: str) -> defer.Deferred[bool]:
        return self.totp.required(avatar_id)
