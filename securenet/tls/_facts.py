"""
What a finished handshake established, in plain values: for logs, for
identity mapping, and for the application.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs
from cryptography import x509
from OpenSSL import SSL

from securenet.pki._facts import CertificateFacts
from securenet.tls import _certificates as certificates
from securenet.tls._binding import session_reused

Role = Literal["server", "client"]


@attrs.frozen
class HandshakeFacts:
    """
    @ivar peer_chain: the peer's verified chain, leaf first (empty when the
        peer sent no certificate, or in pin-only mode where only the leaf is
        checked, the leaf alone).
    """

    role: Role
    peer: str
    tls_version: str
    cipher: str | None
    group: str | None
    sni: str | None
    alpn: str | None
    resumed: bool
    peer_certificate: CertificateFacts | None
    peer_chain: tuple[x509.Certificate, ...] = attrs.field(repr=False, default=())

    @classmethod
    def of(
        cls,
        connection: SSL.Connection,
        role: Role,
        peer: str,
        verified_chain: Sequence[x509.Certificate] = (),
    ) -> HandshakeFacts:
        """
        @param verified_chain: the peer's chain as verification already saw
            it (leaf first), to avoid converting it from OpenSSL again; when
            empty (no verification ran, e.g. a resumed session) it is read
            from the connection.
        """
        sni = connection.get_servername()
        alpn = connection.get_alpn_proto_negotiated()
        chain: tuple[x509.Certificate, ...] = tuple(verified_chain)
        leaf = chain[0] if chain else certificates.peer_certificate(connection)
        if leaf is not None and not chain:
            chain = certificates.verified_chain(connection) or (leaf,)
        return cls(
            role=role,
            peer=peer,
            tls_version=connection.get_protocol_version_name(),
            cipher=connection.get_cipher_name(),
            group=connection.get_group_name(),
            sni=sni.decode("idna") if sni else None,
            alpn=alpn.decode("ascii", "replace") if alpn else None,
            resumed=session_reused(connection),
            peer_certificate=CertificateFacts.of(leaf) if leaf is not None else None,
            peer_chain=chain,
        )

    def log_fields(self) -> dict[str, object]:
        """The fields of the C{tls.handshake} audit event."""
        cert = self.peer_certificate
        return {
            "peer": self.peer,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "group": self.group,
            "sni": self.sni,
            "alpn": self.alpn,
            "resumed": self.resumed,
            "peer_subject": cert.subject if cert else None,
            "peer_pin": cert.pin if cert else None,
        }
