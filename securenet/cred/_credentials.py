"""
Credentials securenet's checkers accept.  Each is a C{twisted.cred}
credential interface plus a small immutable implementation.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from cryptography import x509
from zope.interface import implementer

from securenet.interfaces import IAPIKeyCredentials, ICertificateCredentials, ITokenCredentials, ITOTPCredentials
from securenet.pki._facts import CertificateFacts


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


@implementer(IAPIKeyCredentials)
@attrs.frozen
class APIKeyCredentials:
    key: str = attrs.field(repr=False)


@implementer(ITokenCredentials)
@attrs.frozen
class TokenCredentials:
    token: str = attrs.field(repr=False)


@implementer(ITOTPCredentials)
@attrs.frozen
class TOTPCredentials:
    username: str
    code: str = attrs.field(repr=False)
