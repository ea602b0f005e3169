"""
What the server and client policies share: the verification state of one
connection, the mapping of OpenSSL's verify errors to typed errors, and the
profile applied to a context.

A policy becomes connections through a I{creator}
(L{securenet.tls.ServerTLSCreator}, the client's creator), which Twisted's
C{TLSMemoryBIOFactory} asks for one C{OpenSSL.SSL.Connection} per
connection.  Verification runs in OpenSSL's verify callback; a refusal is
recorded as a typed error on the connection's L{ConnectionState} (read back
by the handshake guard) and OpenSSL sends the peer the matching alert.
Every callback is wrapped so that a bug in it refuses the connection.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Literal

import attrs
from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509

from securenet._logs import SecurenetLogger
from securenet.pki._files import load_certificates
from securenet.tls._binding import set_groups
from securenet.tls._certificates import as_cryptography
from securenet.tls._errors import (
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRejected,
    CertificateRevoked,
    CRLExpired,
    UntrustedCertificate,
)
from securenet.tls._profiles import TLSProfile

log = SecurenetLogger(namespace="securenet.tls")

ClientAuth = Literal["none", "optional", "required"]
CLIENT_AUTH_MODES: tuple[ClientAuth, ...] = ("none", "optional", "required")

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: How long a session may be resumed (seconds).
DEFAULT_SESSION_LIFETIME = 3600

# OpenSSL X509_V_ERR_* codes we name.
_UNABLE_TO_GET_ISSUER_CERT = 2
_UNABLE_TO_GET_CRL = 3
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10
_CRL_NOT_YET_VALID = 11
_CRL_HAS_EXPIRED = 12
_DEPTH_ZERO_SELF_SIGNED_CERT = 18
_SELF_SIGNED_CERT_IN_CHAIN = 19
_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
_CERT_REVOKED = 23
_INVALID_CA = 24
_INVALID_PURPOSE = 26

#: Chain-building errors: what pin-only mode ignores (the pin is the trust).
CHAIN_ERRORS = frozenset(
    {
        _UNABLE_TO_GET_ISSUER_CERT,
        _DEPTH_ZERO_SELF_SIGNED_CERT,
        _SELF_SIGNED_CERT_IN_CHAIN,
        _UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        _UNABLE_TO_VERIFY_LEAF_SIGNATURE,
        _INVALID_CA,
    }
)


def verification_error(
    code: int, certificate: x509.Certificate | None, depth: int, crl_source: str | None = None
) -> CertificateError:
    """The typed error for OpenSSL's X509_V_ERR C{code} on C{certificate}."""
    subject = certificate.subject.rfc4514_string() if certificate is not None else None
    kw: dict[str, Any] = {"subject": subject, "depth": depth, "code": code}
    what = "certificate" if depth == 0 else f"certificate at chain depth {depth}"
    if code == _CERT_HAS_EXPIRED:
        when = certificate.not_valid_after_utc.isoformat() if certificate is not None else "?"
        return CertificateExpired(f"{what} expired at {when}", **kw)
    if code == _CERT_NOT_YET_VALID:
        when = certificate.not_valid_before_utc.isoformat() if certificate is not None else "?"
        return CertificateNotYetValid(f"{what} is not valid before {when}", **kw)
    if code in (_DEPTH_ZERO_SELF_SIGNED_CERT, _SELF_SIGNED_CERT_IN_CHAIN):
        return UntrustedCertificate(f"{what} is self-signed and not a trusted root", **kw)
    if code in CHAIN_ERRORS:
        issuer = certificate.issuer.rfc4514_string() if certificate is not None else "?"
        return UntrustedCertificate(f"{what} was issued by {issuer!r}, which is not trusted", **kw)
    if code == _CERT_REVOKED:
        return CertificateRevoked(f"{what} is revoked", **kw)
    if code == _CRL_HAS_EXPIRED:
        src = f" {crl_source}" if crl_source else ""
        return CRLExpired(
            f"the CRL{src} is past its next-update; refusing client certificates until it is renewed",
            **kw,
        )
    if code == _CRL_NOT_YET_VALID:
        return CertificateRejected("the CRL is not yet valid", **kw)
    if code == _UNABLE_TO_GET_CRL:
        return CertificateRejected("no CRL from the certificate's issuer is loaded", **kw)
    if code == _INVALID_PURPOSE:
        return CertificateRejected(f"{what} is not valid for this purpose (extended key usage)", **kw)
    return CertificateRejected(f"{what} failed verification (OpenSSL error {code})", **kw)


@attrs.define(eq=False)
class ConnectionState:
    """
    Per-connection verification state (see L{state_of}).  C{error} is the
    first refusal; L{TLSGuard} reads it.  C{chain} holds the certificates
    verification saw, by depth, including one it refused, as pyOpenSSL gave
    them (converted on demand by L{certificate}).
    """

    role: Literal["server", "client"]
    protocol: Any
    handshake_timeout: float
    hostname: str | None = None
    port: int | None = None
    error: CertificateError | None = None
    leaf_checked: bool = False
    chain: dict[int, X509] = attrs.field(factory=dict)
    on_handshake: list[Callable[[], None]] = attrs.field(factory=list)
    session_cache: Any = None

    def certificate(self, depth: int) -> x509.Certificate | None:
        """The certificate verification saw at C{depth}, if it saw one."""
        certificate = self.chain.get(depth)
        return as_cryptography(certificate) if certificate is not None else None

    def seen_chain(self) -> list[x509.Certificate]:
        """Every certificate verification saw, leaf first."""
        return [as_cryptography(self.chain[depth]) for depth in sorted(self.chain)]

    def refuse(self, error: CertificateError) -> bool:
        if self.error is None:
            self.error = error
        return False

    def connection_closed(self, connection: SSL.Connection, clean: bool) -> None:
        """
        A client connection ended: keep its session for resumption if it was
        verified and closed cleanly, forget any session for the server if not.
        """
        if self.session_cache is None or self.hostname is None or self.port is None:
            return
        session = connection.get_session() if clean and self.error is None else None
        if session is not None:
            self.session_cache.put(self.hostname, self.port, session)
        else:
            self.session_cache.forget(self.hostname, self.port)

    def handshake_done(self) -> None:
        """
        Run what had to wait for the end of the handshake: the peer has now
        proven it holds the key of the certificate verification saw.
        """
        actions, self.on_handshake = self.on_handshake, []
        for action in actions:
            action()


# Twisted's TLS layer sets each connection's app data to its own transport,
# so our per-connection state is kept here, dropped with the connection.
_STATES: weakref.WeakKeyDictionary[SSL.Connection, ConnectionState] = weakref.WeakKeyDictionary()


def state_of(connection: SSL.Connection | None) -> ConnectionState | None:
    """The L{ConnectionState} of a connection made by a securenet creator."""
    if connection is None:
        return None
    return _STATES.get(connection)


def connection_state(connection: SSL.Connection) -> ConnectionState:
    state = _STATES.get(connection)
    if state is None:
        raise TypeError("connection has no securenet ConnectionState")
    return state


def internal_error(connection: SSL.Connection, where: str) -> bool:
    """Log the exception being handled and refuse the connection."""
    log.failure("internal error in the TLS {where} callback; refusing the connection", where=where)
    try:
        connection_state(connection).refuse(CertificateRejected(f"internal error while verifying ({where})"))
    except Exception:
        pass
    return False


def certificate_tuple(certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    return tuple(certs)


def protocol_tuple(names: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(names)


def load_chain(path: str | os.PathLike[str] | None) -> tuple[x509.Certificate, ...]:
    return tuple(load_certificates(path)) if path is not None else ()


#: OpenSSL's SSL_MODE_NO_AUTO_CHAIN (ssl.h), which pyOpenSSL does not name:
#: send the configured chain only, never one completed from the trust store.
MODE_NO_AUTO_CHAIN = 0x00000008


def apply_profile(ctx: SSL.Context, profile: TLSProfile) -> None:
    ctx.set_min_proto_version(profile.min_version)
    ctx.set_max_proto_version(profile.max_version)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_SINGLE_ECDH_USE)
    # Free a connection's 16 KiB+ read and write buffers while it is idle
    # (Twisted's CertificateOptions does the same): without it every idle
    # connection held about 35 KiB more than a bare Twisted one.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.set_cipher_list(profile.tls12_ciphers.encode("ascii"))
    set_groups(ctx, profile.groups)
