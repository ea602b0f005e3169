"""
The cred layer: everything C{twisted.cred}, and the secrets it checks.

  - credentials and checkers: L{CertificateChecker} (the TLS client
    certificate), L{PasswordChecker} (argon2id), L{ScramChecker},
    L{TokenChecker} (JWT; L{ReloadableTokenChecker} reads its
    L{TokenKeyFile} again on a reload), L{APIKeyChecker}, L{TOTPChecker}, and
    L{StoreChecker} (all of a credential store's at once);
  - the realm: L{IdentityRealm} gives every login an L{Identity};
  - C{login}: the one login flow (throttle, portal, second factor, audit)
    that the stream exchange and the HTTP authenticator both call;
  - L{Throttle}: failures counted per account and per address;
  - secrets, one module each: password hashing, SASLprep, SCRAM keys, JWTs,
    TOTP, API keys.
"""

from securenet.cred._apikeys import APIKeyChecker, APIKeyRefused, PresentedAPIKey, VerifiedAPIKey, create_api_key
from securenet.cred._checkers import CertificateChecker, CertificateNotAccepted
from securenet.cred._credentials import CertificateCredentials, TOTPCredentials
from securenet.cred._identity import ANONYMOUS_ID, AuthenticationContext, Identity, IdentityRealm
from securenet.cred._jwt import PresentedToken, TokenChecker, TokenIssuer, TokenRefused, TokenSettings, VerifiedToken
from securenet.cred._names import UserRecordError, canonical_user_name, validate_user_name
from securenet.cred._passwords import LoginRefused, PasswordChecker, PasswordHasher
from securenet.cred._saslprep import PasswordError, SASLprepError, normalize_password, saslprep
from securenet.cred._scram import ScramChecker, ScramCredentials, derive_scram_keys
from securenet.cred._storechecker import StoreChecker
from securenet.cred._throttle import Throttle, ThrottlePolicy
from securenet.cred._tokenkeyfile import ReloadableTokenChecker, TokenKeyFile
from securenet.cred._totp import TOTPChecker, TOTPRefused
from securenet.cred._users import new_user

__all__ = [
    "ANONYMOUS_ID",
    "APIKeyChecker",
    "APIKeyRefused",
    "AuthenticationContext",
    "CertificateChecker",
    "CertificateCredentials",
    "CertificateNotAccepted",
    "Identity",
    "IdentityRealm",
    "LoginRefused",
    "PasswordChecker",
    "PasswordError",
    "PasswordHasher",
    "PresentedAPIKey",
    "PresentedToken",
    "ReloadableTokenChecker",
    "SASLprepError",
    "ScramChecker",
    "ScramCredentials",
    "StoreChecker",
    "TOTPChecker",
    "TOTPCredentials",
    "TOTPRefused",
    "Throttle",
    "ThrottlePolicy",
    "TokenChecker",
    "TokenIssuer",
    "TokenKeyFile",
    "TokenRefused",
    "TokenSettings",
    "UserRecordError",
    "VerifiedAPIKey",
    "VerifiedToken",
    "canonical_user_name",
    "create_api_key",
    "derive_scram_keys",
    "new_user",
    "normalize_password",
    "saslprep",
    "validate_user_name",
]
