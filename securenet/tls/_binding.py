"""
The only place securenet reaches into pyOpenSSL's private binding.

pyOpenSSL has no public call to choose the key-exchange groups (C{set_tmp_ecdh}
takes a single curve), nor to ask whether a session was resumed.  Both are one
OpenSSL call each; tests assert that each took effect, so a pyOpenSSL upgrade
that breaks them fails a test instead of silently weakening the policy.
"""

from __future__ import annotations

from collections.abc import Sequence

from OpenSSL import SSL
from OpenSSL._util import lib as _lib  # private: see module docstring

from securenet.tls._errors import TLSConfigurationError


def set_groups(context: SSL.Context, groups: Sequence[str]) -> None:
    """Restrict C{context}'s key-exchange groups to C{groups} (OpenSSL names)."""
    spec = ":".join(groups).encode("ascii")
    ctx = context._context  # see module docstring
    if _lib.SSL_CTX_set1_curves_list(ctx, spec) != 1:
        raise TLSConfigurationError(f"OpenSSL refused the key-exchange groups {spec.decode()}")


def session_reused(connection: SSL.Connection) -> bool:
    """Whether C{connection}'s handshake resumed an earlier session."""
    return bool(_lib.SSL_session_reused(connection._ssl))
