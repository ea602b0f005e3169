"""
The TLS layer: policies and profiles, pin and TOFU verification, typed
errors, the handshake guard, and C{securenet:} endpoints.
"""

from securenet.tls.endpoints import SecureClientEndpoint, SecureServerEndpoint, client_endpoint, server_endpoint
from securenet.tls.errors import *  # noqa: F403 - the error hierarchy is part of the API
from securenet.tls.errors import __all__ as _errors  # type: ignore[attr-defined]
from securenet.tls.facts import HandshakeFacts
from securenet.tls.policy import ClientTLSPolicy, ServerTLSCreator, ServerTLSPolicy
from securenet.tls.profiles import INTERMEDIATE, MODERN, TLSProfile, profile_named
from securenet.tls.tofu import TofuStore

__all__ = [
    *_errors,
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
