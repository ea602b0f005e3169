"""
The session layer: from a finished TLS handshake to an authenticated
application protocol, on both sides.
"""

from securenet.protocol.client import connect
from securenet.protocol.session import ISession, NotASecureSession, ServerSession, SessionFactory, identity_of

__all__ = ["ISession", "NotASecureSession", "ServerSession", "SessionFactory", "connect", "identity_of"]
