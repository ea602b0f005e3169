"""
The TLS layer: policies and profiles, pin and TOFU verification, typed
errors, the handshake guard, and C{securenet:} endpoints.
"""

from securenet.tls._client import ClientTLSPolicy
from securenet.tls._endpoints import SecureClientEndpoint, SecureServerEndpoint, client_endpoint, server_endpoint
from securenet.tls._errors import (
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRejected,
    CertificateRevoked,
    ClientCertificateRequired,
    ConnectionClosedDuringHandshake,
    CRLExpired,
    HandshakeFailed,
    HandshakeTimeout,
    HostnameMismatch,
    MaterialRefused,
    NoSharedCipher,
    NotTLS,
    PeerRejectedCertificate,
    PinMismatch,
    ProtocolVersionRejected,
    TLSConfigurationError,
    TLSError,
    TofuMismatch,
    UntrustedCertificate,
    classify,
)
from securenet.tls._facts import HandshakeFacts
from securenet.tls._profiles import INTERMEDIATE, MODERN, TLSProfile, profile_named
from securenet.tls._server import ServerTLSCreator, ServerTLSPolicy
from securenet.tls._tofu import TofuStore

__all__ = [
    "TLSError",
    "CertificateError",
    "CertificateExpired",
    "CertificateNotYetValid",
    "UntrustedCertificate",
    "CertificateRevoked",
    "CRLExpired",
    "CertificateRejected",
    "HostnameMismatch",
    "PinMismatch",
    "TofuMismatch",
    "ClientCertificateRequired",
    "PeerRejectedCertificate",
    "ProtocolVersionRejected",
    "NoSharedCipher",
    "NotTLS",
    "HandshakeTimeout",
    "HandshakeFailed",
    "ConnectionClosedDuringHandshake",
    "TLSConfigurationError",
    "MaterialRefused",
    "classify",
    "ClientTLSPolicy",
    "HandshakeFacts",
    "INTERMEDIATE",
    "MODERN",
    "SecureClientEndpoint",
    "SecureServerEndpoint",
    "ServerTLSCreator",
    "ServerTLSPolicy",
    "TLSProfile",
    "TofuStore",
    "client_endpoint",
    "profile_named",
    "server_endpoint",
]
