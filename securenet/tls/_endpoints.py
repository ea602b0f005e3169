"""
C{securenet:} endpoints: TLS with mutual authentication, pinning, TOFU and
revocation, expressible as endpoint strings (Twisted's C{ssl:} server
endpoint cannot express mutual TLS, Twisted issue 6757).

Server::

    securenet:8443:interface=127.0.0.1:certKey=certs/server.pem:privateKey=certs/server.key
        :trustRoots=certs/ca.pem:clientAuth=required:profile=intermediate:crl=certs/crl.pem

Client::

    securenet:host=127.0.0.1:port=8443:trustRoots=certs/ca.pem:pin=sha256/...
        :certificate=certs/dev-client.pem:privateKey=certs/dev-client.key

Every key is documented in L{SERVER_KEYS} and L{CLIENT_KEYS} (and in the
README); an unknown key or a bad value is refused naming the key.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
import socket
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.protocols.haproxy import proxyEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from securenet._logs import SecurenetLogger
from securenet.tls._client import ClientTLSPolicy
from securenet.tls._context import CLIENT_AUTH_MODES
from securenet.tls._errors import TLSConfigurationError
from securenet.tls._guard import TLSGuardFactory
from securenet.tls._material import check_expectations
from securenet.tls._profiles import profile_named
from securenet.tls._server import ServerTLSCreator, ServerTLSPolicy

#: The default listen backlog: nginx's.  Linux caps it at net.core.somaxconn
#: (4096 since 5.4); with Twisted's 50, a burst of connections overflowed the
#: accept queue (of 10,000 idle clients only about 1,640 got in).
DEFAULT_BACKLOG = 511

log = SecurenetLogger(namespace="securenet.tls")

#: How often a running server looks at its CRL file (seconds).
DEFAULT_CRL_POLL = 60.0

SERVER_KEYS: dict[str, str] = {
    "port": "TCP port to listen on (or the first positional argument); 0 picks a free port",
    "fd": "adopt this inherited listening socket instead of binding one (systemd socket activation, a supervisor):"
    " no port or interface then",
    "interface": "address to listen on (default 127.0.0.1; '::' or '0.0.0.0' for all)",
    "backlog": f"listen backlog: connections the kernel queues before they are accepted (default {DEFAULT_BACKLOG})",
    "certKey": "PEM file with the server certificate followed by its chain (required)",
    "privateKey": "PEM private key of the server certificate, mode 0600 (required)",
    "trustRoots": "PEM file of CA certificates that issue client certificates",
    "clientAuth": "none | optional | required (default: required if trustRoots is given, else none)",
    "crl": "PEM CRL checked against client certificates; a stale CRL refuses all of them",
    "profile": "intermediate (default: TLS 1.2+1.3) | modern (TLS 1.3 only)",
    "handshakeTimeout": "seconds a handshake may take before the connection is closed (default 10)",
    "sessionTickets": "yes (default): TLS session resumption from the server's session cache, which reloads keep | no: none",
    "alpn": "comma-separated ALPN protocol names to accept",
    "expectPins": "comma-separated sha256/... pins the clients hold (of the server key or a CA):"
    " a certificate none of whose keys is among them is refused, at start-up and on reload",
    "expectRoots": "PEM file of the CAs the clients trust for this server: the served chain must verify to them",
    "crlPoll": f"seconds between looks at the CRL file: a new CRL applies without a signal (default {DEFAULT_CRL_POLL:g})",
    "proxyProtocol": "comma-separated addresses or networks of PROXY-protocol (v1, v2) load balancers: connections"
    " only from them, each starting with the header, whose client address the server then uses",
}

CLIENT_KEYS: dict[str, str] = {
    "host": "server host name or IP address (or the first positional argument)",
    "port": "server port (or the second positional argument)",
    "serverName": "name to verify the certificate against and send as SNI (default: host)",
    "trustRoots": "PEM file of CA certificates that may issue the server certificate",
    "pin": "one or more comma-separated sha256/... SPKI pins of the server (or its CA)",
    "tofu": "path of a known-servers file: trust on first use, then insist on the same key",
    "certificate": "PEM client certificate (and chain) for mutual TLS",
    "privateKey": "PEM private key of the client certificate, mode 0600",
    "profile": "intermediate (default) | modern",
    "handshakeTimeout": "seconds a handshake may take (default 10)",
    "timeout": "seconds to wait for the TCP connection (default 30)",
    "bindAddress": "local address to connect from",
    "alpn": "comma-separated ALPN protocol names to offer",
}


class EndpointConfigurationError(TLSConfigurationError):
    """An endpoint string has an unknown key or a bad value."""


def _check_keys(kind: str, kwargs: dict[str, str], allowed: dict[str, str]) -> None:
    for key in kwargs:
        if key not in allowed:
            raise EndpointConfigurationError(f"unknown {kind} endpoint key {key!r}; known keys: {', '.join(allowed)}")


def _number(key: str, value: str, kind: type = float) -> Any:
    try:
        n = kind(value)
    except ValueError:
        raise EndpointConfigurationError(f"{key}={value!r} is not a number") from None
    if not math.isfinite(n):
        # 'inf' would silently disable a timeout; 'nan' breaks timer ordering.
        raise EndpointConfigurationError(f"{key}={value!r} is not a finite number")
    if n < 0:
        raise EndpointConfigurationError(f"{key}={value!r} must not be negative")
    return n


def _yes_no(key: str, value: str) -> bool:
    v = value.lower()
    if v in ("yes", "true", "on", "1"):
        return True
    if v in ("no", "false", "off", "0"):
        return False
    raise EndpointConfigurationError(f"{key}={value!r}: use yes or no")


def listening_socket_family(fd: int) -> socket.AddressFamily:
    """
    The address family of the listening TCP socket C{fd}.

    @raise EndpointConfigurationError: C{fd} is not open, not a socket, not
        TCP or not listening.
    """
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError as e:
        raise EndpointConfigurationError(f"fd={fd}: not an open socket ({e.strerror or e})") from None
    try:
        if probe.type != socket.SOCK_STREAM or probe.family not in (socket.AF_INET, socket.AF_INET6):
            raise EndpointConfigurationError(f"fd={fd}: not a TCP socket")
        if not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise EndpointConfigurationError(f"fd={fd}: the socket is not listening")
        return probe.family
    finally:
        probe.close()


def _networks(key: str, value: str) -> tuple[str, ...]:
    networks = tuple(v.strip() for v in value.split(",") if v.strip())
    if not networks:
        raise EndpointConfigurationError(f"{key} is empty: give the addresses or networks of the load balancers")
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise EndpointConfigurationError(f"{key}: {network!r} is not an IP address or network") from None
    return networks


def _alpn(value: str) -> tuple[bytes, ...]:
    return tuple(p.strip().encode("ascii") for p in value.split(",") if p.strip())


def _profile(value: str) -> Any:
    try:
        return profile_named(value)
    except TLSConfigurationError as e:
        raise EndpointConfigurationError(f"profile: {e}") from None


@implementer(IStreamServerEndpoint)
class SecureServerEndpoint:
    """Listens with TLS under a L{ServerTLSPolicy}, guarding every connection."""

    def __init__(
        self,
        reactor: Any,
        policy: ServerTLSPolicy,
        port: int,
        interface: str = "127.0.0.1",
        backlog: int = DEFAULT_BACKLOG,
        *,
        crl_poll: float = DEFAULT_CRL_POLL,
        proxy_sources: Sequence[str] = (),
        fd: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.creator = ServerTLSCreator(policy, reactor)
        #: Seconds between looks at the CRL file for a new CRL (0: none); C{twistd securenet} polls.
        self.crl_poll = crl_poll
        #: The networks of the PROXY-protocol balancers (empty: no PROXY protocol).
        self.proxy_sources = tuple(ipaddress.ip_network(s, strict=False) for s in proxy_sources)
        self.interface = interface
        self.port = port
        #: Whether it adopts an inherited socket (fd=): its address is the socket's.
        self.adopted = fd is not None
        self._shown = f"[{interface}]" if ":" in interface else interface
        #: The metrics' label of its connections: interface:port (the bound address, once listening).
        self.listener = f"{self._shown}:{port}"
        self._tcp: IStreamServerEndpoint
        if fd is not None:
            self._tcp = AdoptedStreamServerEndpoint(reactor, fd, listening_socket_family(fd))
        else:
            endpoint = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
            self._tcp = endpoint(reactor, port, backlog=backlog, interface=interface)
        if self.proxy_sources:
            # Twisted's PROXY-protocol wrapper (v1 and v2) reads the header;
            # connections from anywhere but the balancers never reach it.
            self._tcp = proxyEndpoint(_FromSources(self._tcp, self.proxy_sources))

    @property
    def policy(self) -> ServerTLSPolicy:
        """The policy new connections get (its creator's current one: a reload replaces it)."""
        return self.creator.policy

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        if not isinstance(protocolFactory, TLSGuardFactory):
            protocolFactory = TLSGuardFactory(protocolFactory, self.reactor)
        guard = protocolFactory
        # The reactor is also Twisted's clock for aggregating TLS writes (by
        # default it would take the global reactor).
        listening = self._tcp.listen(TLSMemoryBIOFactory(self.creator, False, guard, clock=self.reactor))

        def label(port: IListeningPort) -> IListeningPort:
            # The metrics' listener label: the bound address (the port the
            # kernel chose for port 0; an adopted socket's own address).
            address = port.getHost()
            host = getattr(address, "host", self.interface) if self.adopted else self.interface
            shown = f"[{host}]" if ":" in host else host
            self.listener = guard.listener = f"{shown}:{getattr(address, 'port', self.port)}"
            return port

        return listening.addCallback(label)


@implementer(IProtocolFactory, ILoggingContext)
class _SourceFilter:
    """Refuses connections from outside C{networks} (closed before a byte is read)."""

    def __init__(self, wrapped: IProtocolFactory, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.wrapped = wrapped
        self.networks = networks

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def logPrefix(self) -> str:
        wrapped = self.wrapped
        return str(wrapped.logPrefix()) if ILoggingContext.providedBy(wrapped) else type(wrapped).__name__

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        host = getattr(addr, "host", None)
        try:
            source = ipaddress.ip_address(host) if host is not None else None
        except ValueError:
            source = None
        if source is None or not any(source in network for network in self.networks):
            log.warn("refused a connection from {peer}: not a proxyProtocol source", peer=host)
            return None
        protocol: IProtocol | None = self.wrapped.buildProtocol(addr)
        return protocol


@implementer(IStreamServerEndpoint)
class _FromSources:
    """A server endpoint whose connections come only from C{networks}."""

    def __init__(
        self, endpoint: IStreamServerEndpoint, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
    ) -> None:
        self._endpoint = endpoint
        self._networks = networks

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self._endpoint.listen(_SourceFilter(protocolFactory, self._networks))


@implementer(IStreamClientEndpoint)
class SecureClientEndpoint:
    """
    Connects with TLS under a L{ClientTLSPolicy}: the TLS layer alone.  A
    securenet service also runs the authentication exchange; for it use
    L{securenet.connect}, or C{clientFromString(reactor, "securenet:...")},
    whose endpoint does both.
    """

    def __init__(
        self,
        reactor: Any,
        policy: ClientTLSPolicy,
        host: str,
        port: int,
        *,
        server_name: str | None = None,
        timeout: float = 30,
        bind_address: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.policy = policy
        self.host = host
        self.port = port
        self.server_name = server_name or host
        endpoint = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        bind = (bind_address, 0) if bind_address else None
        self._tcp = endpoint(reactor, host.strip("[]"), port, timeout=timeout, bindAddress=bind)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect C{protocolFactory}'s protocol over TLS.

        @return: a Deferred that fires with that protocol once the server is
            verified and the protocol is connected (its C{connectionMade} has
            run); given a L{TLSGuardFactory} (such as the session layer's,
            which authenticates first), once that factory has connected its
            application.  It fails with the typed L{TLSError} (e.g.
            L{PinMismatch}) or the TCP error.  Cancelling it stops the
            connection attempt, or closes the connection if the application
            is not connected yet.
        """
        if isinstance(protocolFactory, TLSGuardFactory):
            guard = protocolFactory
            if guard.ready is not None:
                raise ValueError("this TLSGuardFactory is already waiting for a connection (its ready is set)")
        else:
            guard = TLSGuardFactory(protocolFactory, self.reactor)
        connected: list[Any] = []

        def cancel(_: Deferred[IProtocol]) -> None:
            guard.ready = None
            if connected:
                connected[0].abortConnection()
            else:
                tcp.cancel()

        ready: Deferred[IProtocol] = Deferred(cancel)
        # The guard fires it with the application, or fails it with the typed error.
        guard.ready = ready

        def tcpFailed(failure: Failure) -> None:
            if guard.ready is ready:
                guard.ready = None
                ready.errback(failure)

        creator = self.policy.creator(self.server_name, self.port)
        # The reactor is also Twisted's clock for aggregating TLS writes.
        tcp = self._tcp.connect(TLSMemoryBIOFactory(creator, True, guard, clock=self.reactor))
        tcp.addCallbacks(connected.append, tcpFailed)
        return ready


def server_endpoint_from_args(reactor: Any, *args: str, **kwargs: str) -> SecureServerEndpoint:
    """Build a server endpoint from the parts of a C{securenet:} string."""
    _check_keys("server", kwargs, SERVER_KEYS)
    if len(args) > 1:
        raise EndpointConfigurationError(f"unexpected positional values {args[1:]!r}; use key=value")
    if args and "port" in kwargs:
        raise EndpointConfigurationError("port is given twice (positionally and as port=)")
    port_text = args[0] if args else kwargs.pop("port", None)
    kwargs.pop("port", None)
    fd = None
    if "fd" in kwargs:
        if port_text is not None or "interface" in kwargs or "backlog" in kwargs:
            raise EndpointConfigurationError(
                "fd= adopts a socket already bound and listening: give no port, interface or backlog"
            )
        fd = _number("fd", kwargs["fd"], int)
        listening_socket_family(fd)
        port_text = "0"
    if port_text is None:
        raise EndpointConfigurationError("port is required (securenet:PORT:...)")
    port = _number("port", port_text, int)
    for required in ("certKey", "privateKey"):
        if required not in kwargs:
            raise EndpointConfigurationError(f"{required} is required for a securenet server endpoint")
    client_auth = kwargs.get("clientAuth", "required" if "trustRoots" in kwargs else "none")
    if client_auth not in CLIENT_AUTH_MODES:
        raise EndpointConfigurationError(f"clientAuth={client_auth!r}: use one of {', '.join(CLIENT_AUTH_MODES)}")
    options: dict[str, Any] = {"client_auth": client_auth}
    if "profile" in kwargs:
        options["profile"] = _profile(kwargs["profile"])
    if "handshakeTimeout" in kwargs:
        options["handshake_timeout"] = _number("handshakeTimeout", kwargs["handshakeTimeout"])
    if "sessionTickets" in kwargs:
        options["session_tickets"] = _yes_no("sessionTickets", kwargs["sessionTickets"])
    if "alpn" in kwargs:
        options["alpn"] = _alpn(kwargs["alpn"])
    if "expectPins" in kwargs:
        options["expect_pins"] = [p.strip() for p in kwargs["expectPins"].split(",") if p.strip()]
        if not options["expect_pins"]:
            raise EndpointConfigurationError("expectPins is empty: give the sha256/... pins the clients hold")
    crl_poll = _number("crlPoll", kwargs.get("crlPoll", str(DEFAULT_CRL_POLL)))
    proxy_sources = _networks("proxyProtocol", kwargs["proxyProtocol"]) if "proxyProtocol" in kwargs else ()
    if "crlPoll" in kwargs and "crl" not in kwargs:
        raise EndpointConfigurationError("crlPoll needs crl (the CRL file to watch)")
    policy = ServerTLSPolicy.from_files(
        kwargs["certKey"],
        kwargs["privateKey"],
        trust_roots=kwargs.get("trustRoots"),
        crl=kwargs.get("crl"),
        expect_roots=kwargs.get("expectRoots"),
        **options,
    )
    # What clients hold is checked at start-up too: a server whose certificate
    # its pinned clients would refuse does not start.
    check_expectations(policy, now=datetime.datetime.now(datetime.UTC))
    return SecureServerEndpoint(
        reactor,
        policy,
        port,
        interface=kwargs.get("interface", "127.0.0.1"),
        backlog=_number("backlog", kwargs.get("backlog", str(DEFAULT_BACKLOG)), int),
        crl_poll=crl_poll,
        proxy_sources=proxy_sources,
        fd=fd,
    )


def client_endpoint_from_args(reactor: Any, *args: str, **kwargs: str) -> SecureClientEndpoint:
    """Build a client endpoint from the parts of a C{securenet:} string."""
    _check_keys("client", kwargs, CLIENT_KEYS)
    if len(args) > 2:
        raise EndpointConfigurationError(f"unexpected positional values {args[2:]!r}; use key=value")
    if (args and "host" in kwargs) or (len(args) > 1 and "port" in kwargs):
        raise EndpointConfigurationError("host or port is given twice (positionally and as a key)")
    host = args[0] if args else kwargs.get("host")
    port_text = args[1] if len(args) > 1 else kwargs.get("port")
    if not host:
        raise EndpointConfigurationError("host is required (securenet:host=...:port=...)")
    if port_text is None:
        raise EndpointConfigurationError("port is required (securenet:host=...:port=...)")
    port = _number("port", port_text, int)
    options: dict[str, Any] = {}
    if "profile" in kwargs:
        options["profile"] = _profile(kwargs["profile"])
    if "handshakeTimeout" in kwargs:
        options["handshake_timeout"] = _number("handshakeTimeout", kwargs["handshakeTimeout"])
    if "alpn" in kwargs:
        options["alpn"] = _alpn(kwargs["alpn"])
    pins = [p for p in kwargs.get("pin", "").split(",") if p.strip()]
    policy = ClientTLSPolicy.from_files(
        trust_roots=kwargs.get("trustRoots"),
        pins=pins,
        tofu=kwargs.get("tofu"),
        certificate=kwargs.get("certificate"),
        private_key=kwargs.get("privateKey"),
        **options,
    )
    return SecureClientEndpoint(
        reactor,
        policy,
        host,
        port,
        server_name=kwargs.get("serverName"),
        timeout=_number("timeout", kwargs.get("timeout", "30")),
        bind_address=kwargs.get("bindAddress"),
    )


def split_description(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split C{securenet:a:k=v:...} into positional values and keys, with
    Twisted's escaping (C{\\:} is a literal colon).  Twisted's own splitter
    is private, so this is the same small grammar written out.
    """
    prefix, sep, rest = description.partition(":")
    if prefix != "securenet" or not sep:
        raise EndpointConfigurationError(f"not a securenet endpoint: {description!r} (it must start with 'securenet:')")
    parts: list[str] = []
    current: list[str] = []
    chars = iter(rest)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if eq:
            if key in kwargs:
                raise EndpointConfigurationError(f"key {key!r} is given twice")
            kwargs[key] = value
        elif kwargs:
            raise EndpointConfigurationError(f"positional value {part!r} after key=value parts")
        else:
            args.append(part)
    return args, kwargs


def client_endpoint(reactor: Any, description: str) -> SecureClientEndpoint:
    """Parse a C{securenet:...} client endpoint string."""
    args, kwargs = split_description(description)
    return client_endpoint_from_args(reactor, *args, **kwargs)


def server_endpoint(reactor: Any, description: str) -> SecureServerEndpoint:
    """Parse a C{securenet:...} server endpoint string."""
    args, kwargs = split_description(description)
    return server_endpoint_from_args(reactor, *args, **kwargs)
