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
