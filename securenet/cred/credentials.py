"""
Credentials securenet's checkers accept.  Each is a C{twisted.cred}
credential interface plus a small immutable implementation.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from cryptography import x509
from twisted.cred.credentials import ICredentials
from zope.interface import Attribute, implementer

from securenet.pki.facts import CertificateFacts


class ICertificateCredentials(ICredentials):
    """
    A client certificate that the TLS layer verified (the SASL C{EXTERNAL}
    case): the peer proved possession of its key during the handshake.
    """

    chain = Attribute("The peer's verified chain, leaf first (cryptography certificates).")
    verified = Attribute("True only if TLS verified the chain against the server's trust roots.")
    facts = Attribute("CertificateFacts of the leaf.")


def _certificates(certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    return tuple(certs)


@implementer(ICertificateCredentials)
@attrs.frozen
class CertificateCredentials:
    chain: tuple[x509.Certificate, ...] = attrs.field(converter=_certificates)
    verified: bool
    #: The leaf's facts, when the caller already has them (the handshake did).
    known_facts: CertificateFacts | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def facts(self) -> CertificateFacts:
        if self.known_facts is not None:
            return self.known_facts
        return CertificateFacts.of(self.chain[0])


class IAPIKeyCredentials(ICredentials):
    """An API key as presented: C{<key id>.<secret>} (SASL mechanism C{APIKEY})."""

    key = Attribute("The full key string as the client sent it (str).")


@implementer(IAPIKeyCredentials)
@attrs.frozen
class APIKeyCredentials:
    key: str = attrs.field(repr=False)


class ITokenCredentials(ICredentials):
    """A bearer token (a JWT) as presented (SASL mechanism C{OAUTHBEARER})."""

    token = Attribute("The token string (str).")


@implementer(ITokenCredentials)
@attrs.frozen
class TokenCredentials:
    token: str = attrs.field(repr=False)


class ITOTPCredentials(ICredentials):
    """A TOTP code for a user who already passed a first factor."""

    username = Attribute("The user, as established by the first factor (str).")
    code = Attribute("The 6-digit code the user typed (str).")


@implementer(ITOTPCredentials)
@attrs.frozen
class TOTPCredentials:
    username: str
    code: str = attrs.field(repr=False)
