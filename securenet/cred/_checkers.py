"""
Checkers: credentials in, avatar id out (or C{UnauthorizedLogin}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from zope.interface import implementer

from securenet.interfaces import ICertificateCredentials
from securenet.pki._facts import CertificateFacts


class CertificateNotAccepted(UnauthorizedLogin):
    """The client certificate does not map to an identity (the reason says why)."""


def _single(values: tuple[str, ...], what: str) -> str:
    if not values:
        raise CertificateNotAccepted(f"client certificate has no {what}")
    if len(values) > 1:
        raise CertificateNotAccepted(f"client certificate has {len(values)} {what}s; expected exactly one")
    return values[0]


def _cn(f: CertificateFacts) -> str:
    if not f.common_name:
        raise CertificateNotAccepted("client certificate has no subject common name")
    return f.common_name


def _spiffe(f: CertificateFacts) -> str:
    ids = tuple(u for u in f.sans_of_kind("URI") if u.startswith("spiffe://"))
    return _single(ids, "spiffe:// URI SAN")


#: How a verified certificate becomes an avatar id (C{--auth certificate:map=...}).
MAPPINGS: dict[str, tuple[Callable[[CertificateFacts], str], str]] = {
    "cn": (_cn, "the subject common name (default)"),
    "dns": (lambda f: _single(f.sans_of_kind("DNS"), "DNS SAN"), "the single DNS SAN"),
    "uri": (lambda f: _single(f.sans_of_kind("URI"), "URI SAN"), "the single URI SAN"),
    "spiffe": (_spiffe, "the single spiffe:// URI SAN (a SPIFFE ID)"),
    "email": (lambda f: _single(f.sans_of_kind("email"), "email SAN"), "the single email SAN"),
    "pin": (lambda f: f.pin, "the certificate's SPKI pin, sha256/..."),
}


@implementer(ICredentialsChecker)
class CertificateChecker:
    """
    Accepts a client certificate that TLS verified and names its holder by
    one field of it (see L{MAPPINGS}).

    Possession of the key was proven by the handshake and the chain was
    validated against the server's trust roots; a certificate that was not
    verified (C{verified=False}) is refused, whatever it says.
    """

    credentialInterfaces = (ICertificateCredentials,)

    def __init__(self, mapping: str = "cn") -> None:
        if mapping not in MAPPINGS:
            raise ValueError(f"unknown certificate mapping {mapping!r}; choose one of: {', '.join(MAPPINGS)}")
        self.mapping = mapping
        self._map = MAPPINGS[mapping][0]

    def requestAvatarId(self, credentials: ICertificateCredentials) -> defer.Deferred[Any]:
        if not credentials.verified or not credentials.chain:
            return defer.fail(CertificateNotAccepted("client certificate was not verified by TLS"))
        try:
            return defer.succeed(self._map(credentials.facts))
        except UnauthorizedLogin:
            return defer.fail()
