"""
Credentials securenet's checkers accept.  Each is a C{twisted.cred}
credential interface plus a small immutable implementation.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from cryptography import x509
from zope.interface import Attribute, Interface, implementer

from securenet.pki.facts import CertificateFacts


class ICertificateCredentials(Interface):
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

    @property
    def facts(self) -> CertificateFacts:
        return CertificateFacts.of(self.chain[0])
