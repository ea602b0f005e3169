"""
securenet: secure client-server communication for Twisted.

TCP -> TLS (policy, pinning, revocation) -> authentication (twisted.cred)
-> authorization -> your protocol, which receives an authenticated identity.

C{connect} and C{identity_of} are imported lazily, so that importing a
lower layer (C{securenet.pki}) does not load the higher ones; type checkers
see their real signatures.  Nothing here touches the global reactor.

The runners are the one seam for blocking work (password hashing, SQLite):
every layer that blocks takes one, and tests pass L{synchronous_runner}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from securenet._errors import SecurenetError
from securenet._threads import (
    Runner,
    ThreadRunner,
    hashing_runner,
    reactor_thread_pool_runner,
    synchronous_runner,
    thread_runner,
)
from securenet._version import __version__

if TYPE_CHECKING:
    from securenet.session import connect, identity_of

__all__ = [
    "Runner",
    "SecurenetError",
    "ThreadRunner",
    "__version__",
    "connect",
    "hashing_runner",
    "identity_of",
    "reactor_thread_pool_runner",
    "synchronous_runner",
    "thread_runner",
]


def __getattr__(name: str) -> Any:
    if name in ("connect", "identity_of"):
        import securenet.session

        return getattr(securenet.session, name)
    raise AttributeError(f"module 'securenet' has no attribute {name!r}")
