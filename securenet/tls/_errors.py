"""
Typed TLS failures.

Every way a handshake can fail is one of these, carrying the facts (which
certificate, which pins, which file) as attributes; C{str()} is one line
fit for a log or the CLI.  L{classify} turns OpenSSL's errors and alerts into
them so that no caller ever sees a bare C{OpenSSL.SSL.Error}.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from OpenSSL import SSL

from securenet._errors import SecurenetError


@attrs.define(auto_exc=True, str=False)
class TLSError(SecurenetError):
    """A TLS connection failed; C{detail} says why, in a few words."""

    detail: str = ""

    def __str__(self) -> str:
        return self.detail or type(self).__name__


@attrs.define(auto_exc=True, str=False)
class CertificateError(TLSError):
    """
    The peer's certificate was refused.

    @ivar subject: the refused certificate's subject (RFC 4514), if known.
    @ivar depth: its position in the chain (0 = the peer's own).
    @ivar code: OpenSSL's X509_V_ERR_* number, if OpenSSL found the problem.
    """

    subject: str | None = None
    depth: int | None = None
    code: int | None = None

    def __str__(self) -> str:
        where = f" ({self.subject})" if self.subject else ""
        return f"{self.detail}{where}"


class CertificateExpired(CertificateError):
    """The certificate's notAfter is in the past."""


class CertificateNotYetValid(CertificateError):
    """The certificate's notBefore is in the future."""


class UntrustedCertificate(CertificateError):
    """The chain does not lead to a trusted root (self-signed, unknown CA)."""


class CertificateRevoked(CertificateError):
    """The certificate is listed in the CRL."""


class CRLExpired(CertificateError):
    """The CRL is past its next-update: client certificates are refused until it is renewed."""


class CertificateRejected(CertificateError):
    """Any other certificate verification failure (OpenSSL's reason in C{detail})."""


@attrs.define(auto_exc=True, str=False)
class HostnameMismatch(CertificateError):
    """The server certificate is not valid for the name we connected to."""

    expected: str = ""
    presented: tuple[str, ...] = ()

    def __str__(self) -> str:
        names = ", ".join(self.presented) or "no names"
        return f"server certificate is not valid for {self.expected!r} (it names {names})"


@attrs.define(auto_exc=True, str=False)
class PinMismatch(CertificateError):
    """No certificate of the server's chain has one of the expected pins."""

    expected: tuple[str, ...] = ()
    presented: tuple[str, ...] = ()

    def __str__(self) -> str:
        return (
            f"pin mismatch: expected {' or '.join(self.expected)}, "
            f"server presented {', '.join(self.presented) or 'no certificate'}"
        )


@attrs.define(auto_exc=True, str=False)
class TofuMismatch(CertificateError):
    """The server's key differs from the one recorded on first use."""

    host: str = ""
    port: int = 0
    recorded: str = ""
    presented: str = ""
    store: str = ""

    def __str__(self) -> str:
        return (
            f"{self.host}:{self.port} presented {self.presented}, but {self.store} "
            f"recorded {self.recorded} on first use: the server key changed "
            f"(if that is expected, remove the line from {self.store})"
        )


class ClientCertificateRequired(TLSError):
    """The server requires a client certificate and the client sent none."""


class PeerRejectedCertificate(TLSError):
    """The peer refused our certificate (its alert in C{detail})."""


class ProtocolVersionRejected(TLSError):
    """No TLS version both sides accept (e.g. a TLS 1.1-only peer)."""


class NoSharedCipher(TLSError):
    """No cipher suite or key-exchange group both sides accept."""


class NotTLS(TLSError):
    """The peer sent something that is not TLS (plaintext, HTTP, garbage)."""


class HandshakeTimeout(TLSError):
    """The handshake did not finish within the allowed time."""


class HandshakeFailed(TLSError):
    """Any other handshake failure (OpenSSL's reason in C{detail})."""


class ConnectionClosedDuringHandshake(TLSError):
    """The peer closed the connection before the handshake finished."""


class TLSConfigurationError(TLSError):
    """A TLS policy or endpoint was given conflicting or invalid settings."""


@attrs.define(auto_exc=True, str=False)
class MaterialRefused(TLSConfigurationError):
    """
    New certificates, keys or a CRL were refused before they served a
    connection (at start-up or on a reload): they do not parse, the key
    does not match, the certificate is not valid now, the chain does not
    lead to C{expectRoots}, no pin of it is in C{expectPins}, the CRL is
    not signed by a trust root or is older than the one in use, or a
    handshake with them failed.

    @ivar path: the file at fault.
    """

    path: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}" if self.path else self.detail


def ssl_reasons(error: SSL.Error) -> list[str]:
    """The reason strings of an OpenSSL error stack."""
    reasons: list[str] = []
    args: Sequence[object] = error.args[0] if error.args else []
    if isinstance(args, (list, tuple)):
        for item in args:
            if isinstance(item, tuple) and item:
                reasons.append(str(item[-1]))
            else:
                reasons.append(str(item))
    else:
        reasons.append(str(args))
    return reasons


# Substrings of OpenSSL reason strings (alerts we received, or local
# failures) and the typed error each means.
_REASON_MAP: list[tuple[str, type[TLSError], str]] = [
    ("certificate required", ClientCertificateRequired, "server requires a client certificate"),
    ("peer did not return a certificate", ClientCertificateRequired, "client sent no certificate, but one is required"),
    ("alert certificate revoked", PeerRejectedCertificate, "peer refused our certificate: revoked"),
    ("alert certificate expired", PeerRejectedCertificate, "peer refused our certificate: expired"),
    ("alert unknown ca", PeerRejectedCertificate, "peer refused our certificate: unknown CA"),
    ("alert bad certificate", PeerRejectedCertificate, "peer refused our certificate: bad certificate"),
    ("alert certificate unknown", PeerRejectedCertificate, "peer refused our certificate"),
    ("alert unsupported certificate", PeerRejectedCertificate, "peer refused our certificate: unsupported"),
    ("unsupported protocol", ProtocolVersionRejected, "no TLS version in common (peer offers only versions we refuse)"),
    ("alert protocol version", ProtocolVersionRejected, "peer refused our TLS version"),
    ("no protocols available", ProtocolVersionRejected, "no TLS version in common"),
    ("no shared cipher", NoSharedCipher, "no cipher suite in common"),
    ("no suitable key share", NoSharedCipher, "no key-exchange group in common"),
    ("no shared group", NoSharedCipher, "no key-exchange group in common"),
    (
        "alert internal error",
        HandshakeFailed,
        "peer aborted the handshake (a securenet client sends this when it refuses the server's certificate or pin)",
    ),
    ("alert handshake failure", HandshakeFailed, "peer aborted the handshake (handshake failure alert)"),
    ("wrong version number", NotTLS, "peer did not speak TLS"),
    ("http request", NotTLS, "peer sent a plaintext HTTP request, not TLS"),
    ("packet length too long", NotTLS, "peer did not speak TLS"),
    ("record layer failure", NotTLS, "peer did not speak TLS"),
    ("unknown protocol", NotTLS, "peer did not speak TLS"),
    ("unexpected eof", ConnectionClosedDuringHandshake, "peer closed the connection during the handshake"),
]


def classify(error: BaseException) -> TLSError:
    """
    Turn an OpenSSL error (or an already typed error) into a L{TLSError}.

    Unknown OpenSSL reasons become L{HandshakeFailed} carrying them, so no
    information is lost.
    """
    if isinstance(error, TLSError):
        return error
    if isinstance(error, SSL.Error):
        reasons = ssl_reasons(error)
        joined = "; ".join(reasons)
        for needle, kind, text in _REASON_MAP:
            if needle in joined:
                return kind(f"{text} ({joined})")
        return HandshakeFailed(f"TLS handshake failed: {joined or 'unknown OpenSSL error'}")
    return HandshakeFailed(f"TLS handshake failed: {error}")
