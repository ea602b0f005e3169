"""
securenet: secure client-server communication for Twisted.

TCP -> TLS (policy, pinning, revocation) -> authentication (twisted.cred)
-> your protocol, which receives an authenticated identity.

C{securenet.connect} and C{securenet.identity_of} are imported lazily, so
that importing a lower layer (C{securenet.pki}) does not load the higher
ones; nothing here touches the global reactor.
"""

from typing import Any

from securenet._version import __version__

__all__ = ["__version__", "connect", "identity_of"]


def __getattr__(name: str) -> Any:
    if name == "connect":
        from securenet.protocol.client import connect

        return connect
    if name == "identity_of":
        from securenet.protocol.session import identity_of

        return identity_of
    raise AttributeError(f"module 'securenet' has no attribute {name!r}")
