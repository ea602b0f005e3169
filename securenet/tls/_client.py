"""
The client's TLS policy: how the server is verified (CA and hostname,
pins against the validated chain or pin-only, trust on first use), its
client certificate, and the session cache that lets it resume.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Iterable, Sequence
from functools import cached_property, partial
from typing import Any

import attrs
import service_identity
from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
)
from zope.interface import implementer

from securenet import audit
from securenet.pki._facts import CertificateFacts
from securenet.pki._files import PrivateKey, load_key_pair
from securenet.pki._pins import InvalidPin, format_pin, parse_pin, pin_matches, spki_digest, spki_pin
from securenet.tls._certificates import as_cryptography
from securenet.tls._context import (
    _STATES,
    CHAIN_ERRORS,
    DEFAULT_HANDSHAKE_TIMEOUT,
    MODE_NO_AUTO_CHAIN,
    ConnectionState,
    apply_profile,
    certificate_tuple,
    connection_state,
    internal_error,
    load_chain,
    protocol_tuple,
    verification_error,
)
from securenet.tls._errors import (
    CertificateError,
    HostnameMismatch,
    PinMismatch,
    TLSConfigurationError,
    TofuMismatch,
)
from securenet.tls._profiles import INTERMEDIATE, TLSProfile
from securenet.tls._tofu import TofuStore

# -- client --------------------------------------------------------------------


def _parse_pins(pins: Iterable[str | bytes]) -> frozenset[bytes]:
    out = set()
    for pin in pins:
        if isinstance(pin, bytes):
            if len(pin) != 32:
                raise TLSConfigurationError("a binary pin must be a 32-byte SHA-256 digest")
            out.add(pin)
            continue
        try:
            out.add(parse_pin(pin))
        except InvalidPin as e:
            raise TLSConfigurationError(str(e)) from None
    return frozenset(out)


@attrs.frozen(slots=False)
class ClientTLSPolicy:
    """
    How a client checks the server, and what it presents.

    Server identity is established by at least one of:

      - C{trust_roots}: the chain must validate to one of these CAs and the
        certificate must be valid for the host name or IP we connect to
        (service_identity);
      - C{pins}: some certificate of the validated chain (with
        C{trust_roots}), or the server's own certificate (without: pin-only
        mode, for self-signed servers), has one of these SPKI pins;
      - C{tofu}: the server's key must be the one recorded on first use.

    In pin-only and TOFU-only modes chain-building errors are ignored (the
    pin is the trust) but expired and not-yet-valid certificates are still
    refused.
    """

    trust_roots: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=certificate_tuple)
    pins: frozenset[bytes] = attrs.field(default=frozenset(), converter=_parse_pins)
    tofu: TofuStore | None = None
    certificate_chain: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=certificate_tuple)
    private_key: PrivateKey | None = None
    profile: TLSProfile = INTERMEDIATE
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    alpn: tuple[bytes, ...] = attrs.field(default=(), converter=protocol_tuple)

    def __attrs_post_init__(self) -> None:
        if not self.trust_roots and not self.pins and self.tofu is None:
            raise TLSConfigurationError("the client has no way to check the server: give trustRoots, pin, or tofu")
        if bool(self.certificate_chain) != (self.private_key is not None):
            raise TLSConfigurationError("a client certificate needs its private key, and a key its certificate")
        if not math.isfinite(self.handshake_timeout) or self.handshake_timeout <= 0:
            raise TLSConfigurationError(f"handshakeTimeout must be positive and finite, not {self.handshake_timeout}")

    @classmethod
    def from_files(
        cls,
        *,
        trust_roots: str | os.PathLike[str] | None = None,
        pins: Sequence[str] = (),
        tofu: str | os.PathLike[str] | None = None,
        certificate: str | os.PathLike[str] | None = None,
        private_key: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> ClientTLSPolicy:
        if (certificate is None) != (private_key is None):
            raise TLSConfigurationError("certificate and privateKey must be given together")
        chain: Sequence[x509.Certificate] = ()
        key = None
        if certificate is not None and private_key is not None:
            chain, key = load_key_pair(certificate, private_key)
        return cls(
            trust_roots=load_chain(trust_roots),
            pins=pins,
            tofu=TofuStore.load(tofu) if tofu is not None else None,
            certificate_chain=chain,
            private_key=key,
            **kwargs,
        )

    @property
    def pin_only(self) -> bool:
        """True when no CA validates the chain (pins and/or TOFU are the trust)."""
        return not self.trust_roots

    @cached_property
    def context(self) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_METHOD)
        apply_profile(ctx, self.profile)
        if self.certificate_chain and self.private_key is not None:
            # Our own chain only: OpenSSL would complete it from the store of
            # trust roots for the server and send the CA (an anchor) too.
            ctx.set_mode(MODE_NO_AUTO_CHAIN)
            ctx.use_certificate(self.certificate_chain[0])
            for extra in self.certificate_chain[1:]:
                ctx.add_extra_chain_cert(extra)
            ctx.use_privatekey(self.private_key)
            ctx.check_privatekey()
        store = ctx.get_cert_store()
        assert store is not None
        for root in self.trust_roots:
            store.add_cert(X509.from_cryptography(root))
        ctx.set_verify(SSL.VERIFY_PEER, self._verify_server)
        if self.alpn:
            ctx.set_alpn_protos(list(self.alpn))
        return ctx

    def creator(self, hostname: str, port: int) -> ClientTLSCreator:
        return ClientTLSCreator(self, hostname, port)

    @cached_property
    def sessions(self) -> SessionCache:
        """
        TLS sessions to resume, per C{host:port}: a session is kept only
        after a connection that passed this policy's checks closed cleanly,
        so resuming it (which skips certificate verification) stays within
        what this policy already verified for that server.
        """
        return SessionCache()

    def _verify_server(self, conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
        try:
            state = connection_state(conn)
            # Recorded even when refused: the failed tls.handshake event names it.
            state.chain[depth] = cert
            if not ok and not (self.pin_only and errno in CHAIN_ERRORS):
                return state.refuse(verification_error(errno, as_cryptography(cert), depth))
            if depth != 0 or state.leaf_checked:
                return True
            error = self._check_leaf(state, as_cryptography(cert))
            if error is not None:
                return state.refuse(error)
            state.leaf_checked = True
            return True
        except Exception:
            return internal_error(conn, "server certificate verification")

    def _check_leaf(self, state: ConnectionState, leaf: x509.Certificate) -> CertificateError | None:
        """Host name, pins and TOFU, once the chain (or the leaf) is acceptable."""
        subject = leaf.subject.rfc4514_string()
        if not self.pin_only and state.hostname is not None:
            error = _check_hostname(leaf, state.hostname)
            if error is not None:
                return error
        if self.pins:
            candidates = [leaf] if self.pin_only else state.seen_chain()
            if not any(pin_matches(spki_digest(c), self.pins) for c in candidates):
                return PinMismatch(
                    "pin mismatch",
                    subject=subject,
                    depth=0,
                    expected=tuple(sorted(format_pin(p) for p in self.pins)),
                    presented=tuple(spki_pin(c) for c in candidates),
                )
        if self.tofu is not None and state.hostname is not None and state.port is not None:
            presented = spki_pin(leaf)
            recorded = self.tofu.lookup(state.hostname, state.port)
            if recorded is None:
                # Recorded only once the handshake proves the server holds the
                # key: a peer replaying someone's certificate must not poison
                # the store.
                state.on_handshake.append(partial(self._record_tofu, self.tofu, state.hostname, state.port, presented))
            elif not pin_matches(parse_pin(presented), [parse_pin(recorded)]):
                return TofuMismatch(
                    "server key changed since first use",
                    subject=subject,
                    depth=0,
                    host=state.hostname,
                    port=state.port,
                    recorded=recorded,
                    presented=presented,
                    store=str(self.tofu.path),
                )
        return None

    @staticmethod
    def _record_tofu(store: TofuStore, host: str, port: int, pin: str) -> None:
        if store.lookup(host, port) is not None:
            return
        store.record(host, port, pin)
        audit.tofu_recorded(host, port, pin, str(store.path))


def _is_ip(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return False
    return True


def _check_hostname(leaf: x509.Certificate, hostname: str) -> HostnameMismatch | None:
    try:
        if _is_ip(hostname):
            verify_certificate_ip_address(leaf, hostname.strip("[]"))
        else:
            verify_certificate_hostname(leaf, hostname)
    except (service_identity.VerificationError, service_identity.CertificateError):
        return HostnameMismatch(
            "hostname mismatch",
            subject=leaf.subject.rfc4514_string(),
            depth=0,
            expected=hostname,
            presented=CertificateFacts.of(leaf).sans,
        )
    return None


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLSCreator:
    """Makes client connections to one C{host:port} under a L{ClientTLSPolicy}."""

    def __init__(self, policy: ClientTLSPolicy, hostname: str, port: int) -> None:
        self.policy = policy
        self.hostname = hostname
        self.port = port

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self.policy.context, None)
        _STATES[conn] = ConnectionState(
            "client",
            tlsProtocol,
            self.policy.handshake_timeout,
            hostname=self.hostname,
            port=self.port,
        )
        if not _is_ip(self.hostname):
            conn.set_tlsext_host_name(self.hostname.encode("idna"))
        session = self.policy.sessions.get(self.hostname, self.port)
        if session is not None:
            conn.set_session(session)
        _STATES[conn].session_cache = self.policy.sessions
        conn.set_connect_state()
        return conn


class SessionCache:
    """A bounded map of C{host:port} to the last resumable TLS session."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._sessions: dict[tuple[str, int], SSL.Session] = {}

    def get(self, host: str, port: int) -> SSL.Session | None:
        return self._sessions.get((host, port))

    def put(self, host: str, port: int, session: SSL.Session) -> None:
        self._sessions.pop((host, port), None)
        self._sessions[(host, port)] = session
        while len(self._sessions) > self.size:
            del self._sessions[next(iter(self._sessions))]

    def forget(self, host: str, port: int) -> None:
        self._sessions.pop((host, port), None)
