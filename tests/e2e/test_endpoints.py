"""
End to end: C{securenet:} endpoints on real loopback sockets, seen by
clients we did not write (C{openssl s_client}) and through Twisted's own
C{serverFromString} / C{clientFromString}.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from securenet.session import AuthenticationFailed, ClientSession
from securenet.tls import PinMismatch
from tests.e2e.test_auth import credentials
from tests.support import Twistd, run
from tests.support.e2e import E2EBase, dev_pki, server_listen, sslyze


class ServerChainTests(E2EBase):
    """What the server sends as its certificate chain."""

    def test_trustRootsNotSent(self) -> None:
        """
        With trustRoots (here the CA that issued the server certificate too),
        openssl s_client -showcerts receives one certificate, the server's:
        the CA is for verifying clients, and an anchor is never sent.
        """
        server = self.startServer("--listen", server_listen(self.certs))
        result = run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{server.port}",
                "-CAfile",
                str(self.certs / "ca.pem"),
                "-verify_return_error",
                "-cert",
                str(self.certs / "dev-client.pem"),
                "-key",
                str(self.certs / "dev-client.key"),
                "-showcerts",
            ],
            input=b"",
            timeout=30,
        )
        out = result.stdout.decode("utf-8", "replace")
        self.assertIn("Verify return code: 0 (ok)", out)
        chain = out.partition("Certificate chain\n")[2].partition("\n---\n")[0]
        self.assertEqual(re.findall(r"^ *(\d+) s:(.*)$", chain, re.M), [("0", "CN = server")], out)
        self.assertEqual(chain.count("-----BEGIN CERTIFICATE-----"), 1, out)

    def test_sslyzeFindsNoAnchor(self) -> None:
        """sslyze's certificate check, which reported "Received chain contains anchor"."""
        server = self.startServer("--listen", server_listen(self.certs, clientAuth="optional"), "--auth", "anonymous")
        result = run(
            [sslyze(), "--certinfo", f"--certinfo_ca_file={self.certs / 'ca.pem'}", f"localhost:{server.port}"], timeout=300
        )
        out = result.stdout.decode()
        self.assertEqual(result.returncode, 0, out[-3000:])
        self.assertRegex(out, r"Received Chain: +server\n")
        self.assertRegex(out, r"Received Chain Contains Anchor: +OK - Anchor certificate not sent")


class Hello(Protocol):
    """Says hello when connected; C{echoed} fires once the echo came back, C{lost} when the connection ends."""

    def __init__(self) -> None:
        self.made = False
        self.received = b""
        self.echoed: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.made = True
        self.transport.write(b"hello\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received.endswith(b"\n") and not self.echoed.called:
            self.echoed.callback(self.received)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008 - the protocol's signature
        self.lost.callback(None)


def session_of(protocol: Protocol) -> ClientSession:
    """The client session a connected application protocol runs over (its transport)."""
    return cast(ClientSession, protocol.transport)


class ClientEndpointTests(TestCase):
    """
    clientFromString(reactor, "securenet:...").connect(factory) against a
    real twistd securenet (echo app, certificates and the credential
    database) on loopback.
    """

    def setUp(self) -> None:
        self.certs = dev_pki(Path(self.mktemp()).resolve())
        self.creds = credentials(Path(self.mktemp()).resolve())
        self.base: Path = self.creds["base"]  # type: ignore[assignment]
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        db = work / "securenet.db"
        shutil.copyfile(str(self.creds["db"]), db)
        db.chmod(0o600)
        self.server = Twistd(
            work,
            [
                "--listen",
                server_listen(self.certs, clientAuth="optional"),
                "--auth",
                "certificate",
                "--auth",
                f"sqlite:db={db},scramIterations=4096",
                "--app",
                "echo",
            ],
        )
        self.addCleanup(self.server.stop)

    def connect(self, **keys: str) -> Deferred[Any]:
        parts = {"host": "127.0.0.1", "port": str(self.server.port), "trustRoots": str(self.certs / "ca.pem"), **keys}
        endpoint: IStreamClientEndpoint = clientFromString(reactor, "securenet:" + ":".join(f"{k}={v}" for k, v in parts.items()))
        return endpoint.connect(Factory.forProtocol(Hello))

    async def assertEchoed(self, d: Deferred[Any], identity: str) -> None:
        """
        The Deferred fired with our protocol, after its connectionMade and
        before any byte; it gets back exactly what it sent.
        """
        at_fire: list[tuple[bool, bytes]] = []

        def record(p: Hello) -> Hello:
            at_fire.append((p.made, p.received))
            return p

        d.addCallback(record)
        protocol: Hello = await d
        self.assertIsInstance(protocol, Hello)
        self.assertEqual(at_fire, [(True, b"")])

        def close() -> Deferred[None]:
            session_of(protocol).loseConnection()
            return protocol.lost

        self.addCleanup(close)
        self.assertEqual(await protocol.echoed, b"hello\n")
        self.assertEqual(session_of(protocol).authenticated_as, identity)

    async def test_certificate(self) -> None:
        """The endpoint's client certificate: EXTERNAL."""
        d = self.connect(certificate=str(self.certs / "dev-client.pem"), privateKey=str(self.certs / "dev-client.key"))
        await self.assertEchoed(d, "dev-client")
        self.assertIn("by EXTERNAL: dev-client", self.server.waitForLog("by EXTERNAL: dev-client"))

    async def test_passwordFile(self) -> None:
        """user= and passwordFile=: SCRAM-SHA-256-PLUS."""
        await self.assertEchoed(self.connect(user="alice", passwordFile=str(self.base / "alice.pw")), "alice")
        self.assertIn("by SCRAM-SHA-256-PLUS: alice", self.server.waitForLog("by SCRAM-SHA-256-PLUS: alice"))

    async def test_wrongPin(self) -> None:
        """A pin mismatch: the Deferred fails with PinMismatch."""
        d = self.connect(
            pin="sha256/" + "A" * 43 + "=",
            certificate=str(self.certs / "dev-client.pem"),
            privateKey=str(self.certs / "dev-client.key"),
        )
        await self.assertFailure(d, PinMismatch)

    async def test_refusedPassword(self) -> None:
        """A refused password: AuthenticationFailed with the server's code."""
        error = await self.assertFailure(
            self.connect(user="alice", passwordFile=str(self.base / "wrong.pw")), AuthenticationFailed
        )
        self.assertEqual(error.code, "AUTH-FAILED")
