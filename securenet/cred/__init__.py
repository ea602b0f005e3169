"""
The cred layer: credentials, checkers and the identity realm, all
C{twisted.cred}.
"""

from securenet.cred.checkers import CertificateChecker, CertificateNotAccepted
from securenet.cred.credentials import CertificateCredentials, ICertificateCredentials
from securenet.cred.identity import AuthenticationContext, IIdentity, Identity, IdentityRealm

__all__ = [
    "AuthenticationContext",
    "CertificateChecker",
    "CertificateCredentials",
    "CertificateNotAccepted",
    "ICertificateCredentials",
    "IIdentity",
    "Identity",
    "IdentityRealm",
]

# SCRAM-SHA-256(-PLUS) and the TLS channel bindings it binds to.
from securenet.cred.channel import channel_bindings  # noqa: E402
from securenet.cred.scram import (  # noqa: E402
    ChannelBindingError,
    IScramCredentials,
    ScramChecker,
    ScramClientMechanism,
    ScramCredentials,
)

__all__ += [
    "ChannelBindingError",
    "IScramCredentials",
    "ScramChecker",
    "ScramClientMechanism",
    "ScramCredentials",
    "channel_bindings",
]

# Bearer tokens (OAUTHBEARER), API keys (APIKEY) and TOTP second factors.
from securenet.cred.apikeys import (  # noqa: E402
    APIKeyChecker,
    APIKeyClientMechanism,
    APIKeyRefused,
    PresentedAPIKey,
    VerifiedAPIKey,
    create_api_key,
)
from securenet.cred.tokens import (  # noqa: E402
    OAuthBearerClientMechanism,
    PresentedToken,
    TokenChecker,
    TokenIssuer,
    TokenKey,
    TokenRefused,
    TokenSettings,
    VerifiedToken,
)
from securenet.cred.totp import TOTPChecker, TOTPRefused  # noqa: E402

__all__ += [
    "APIKeyChecker",
    "APIKeyClientMechanism",
    "APIKeyRefused",
    "OAuthBearerClientMechanism",
    "PresentedAPIKey",
    "PresentedToken",
    "TOTPChecker",
    "TOTPRefused",
    "TokenChecker",
    "TokenIssuer",
    "TokenKey",
    "TokenRefused",
    "TokenSettings",
    "VerifiedAPIKey",
    "VerifiedToken",
    "create_api_key",
]

# Passwords (PLAIN, argon2id, SASLprep) and the SQLite credential store.
from securenet.cred.passwords import (  # noqa: E402
    LoginRefused,
    PasswordChecker,
    PasswordError,
    PasswordHasher,
    derive_scram_keys,
    new_user,
    normalize_password,
    saslprep,
)
from securenet.cred.sqlite import SQLiteStore, thread_runner  # noqa: E402

__all__ += [
    "LoginRefused",
    "PasswordChecker",
    "PasswordError",
    "PasswordHasher",
    "SQLiteStore",
    "derive_scram_keys",
    "new_user",
    "normalize_password",
    "saslprep",
    "thread_runner",
]
