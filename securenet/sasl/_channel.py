"""
Channel bindings of a TLS connection (RFC 5929, RFC 9266), for SASL
mechanisms that bind to the channel (SCRAM-SHA-256-PLUS).

Both ends compute the same bytes only if they share one TLS channel: a man in
the middle who terminates TLS towards the client and opens a second
connection to the server gets different bindings on each side, so a bound
exchange it relays fails::

    guard.transport.getHandle()  ->  channel_bindings(handle, "server")

C{tls-exporter} (RFC 9266) is provided for TLS 1.3 only.  With TLS 1.2 the
exporter is safe only if the extended master secret extension (RFC 7627) was
negotiated, and pyOpenSSL does not say whether it was; rather than guess we
leave it out (None), and TLS 1.2 clients bind with C{tls-server-end-point}.
"""

from __future__ import annotations

import functools
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL

from securenet.sasl._mechanism import ChannelBindings
from securenet.tls._certificates import own_certificate, peer_certificate

#: The label RFC 9266 section 2 registers for C{tls-exporter}.
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
EXPORTER_LENGTH = 32

Role = Literal["server", "client"]


@functools.lru_cache(maxsize=64)
def tls_server_end_point(certificate: x509.Certificate) -> bytes | None:
    """
    The C{tls-server-end-point} binding of the server's certificate
    (RFC 5929 section 4.1): its DER hashed with the hash of its signature
    algorithm, SHA-256 when that is MD5 or SHA-1.  None when the signature
    uses no single hash (Ed25519, Ed448), for which RFC 5929 leaves the
    binding undefined.  Cached: a server's own certificate is the same on
    every connection.
    """
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None:
        return None
    if isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    return certificate.fingerprint(algorithm)


def channel_bindings(connection: SSL.Connection, role: Role) -> ChannelBindings:
    """
    The channel bindings of an established TLS connection, as seen by
    C{role}: the server hashes its own certificate, the client the one the
    server presented, so both ends of one channel compute the same values.

    @raise ValueError: C{role} is neither C{server} nor C{client}, or the
        handshake has not finished (there is no channel to bind to yet).
    """
    if role not in ("server", "client"):
        raise ValueError(f"role must be 'server' or 'client', not {role!r}")
    if connection.get_finished() is None:
        raise ValueError("the TLS handshake has not finished: there are no channel bindings yet")
    exporter = None
    if connection.get_protocol_version_name() == "TLSv1.3":
        exporter = connection.export_keying_material(EXPORTER_LABEL, EXPORTER_LENGTH)
    certificate = own_certificate(connection) if role == "server" else peer_certificate(connection)
    end_point = tls_server_end_point(certificate) if certificate is not None else None
    return ChannelBindings(tls_exporter=exporter, tls_server_end_point=end_point)
