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

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnhandledCredentials
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from securenet.cred.apikeys import APIKeyChecker
from securenet.cred.credentials import IAPIKeyCredentials, ITOTPCredentials
from securenet.cred.passwords import PasswordChecker, PasswordHasher, Runner
from securenet.cred.sasl import IMechanismFactory, IMechanismProvider, ISecondFactor
from securenet.cred.scram import DEFAULT_ITERATIONS, IScramCredentials, ScramChecker
from securenet.cred.store import ICredentialStore
from securenet.cred.totp import TOTPChecker


@implementer(ICredentialsChecker, IMechanismProvider, ISecondFactor)
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

    def mechanisms(self) -> list[IMechanismFactory]:
        return [*self.scram.mechanisms(), *self.api_keys.mechanisms(), *self.passwords.mechanisms()]

    def required(self, avatar_id: str) -> defer.Deferred[bool]:
        return self.totp.required(avatar_id)
