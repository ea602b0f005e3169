"""
securenet: secure client-server communication for Twisted.

TCP -> TLS (policy, pinning, revocation) -> authentication (twisted.cred)
-> your protocol, which receives an authenticated identity.
"""

from securenet._version import __version__

__all__ = ["__version__"]
