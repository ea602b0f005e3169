"""
The examples are what new users copy: each is tested in memory (with
securenet.testing) and through a real twistd.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from examples.greeter import GreeterFactory
from securenet.session._server import SessionFactory
from securenet.testing import EphemeralPKI, connect_in_memory
from tests.support import Twistd, run, script
from tests.support.e2e import E2EBase, client_endpoint, server_listen

PKI = EphemeralPKI.create()


class Collect(Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class GreeterInMemoryTests(SynchronousTestCase):
    def converse(self, *lines: bytes) -> bytes:
        clock = Clock()
        client = Collect()
        conn = connect_in_memory(
            server_policy=PKI.server_policy(client_auth="required"),
            client_policy=PKI.client_policy("alice"),
            server_factory=SessionFactory(GreeterFactory(), PKI.certificate_portal(), clock),
            client_factory=Factory.forProtocol(lambda: client),
            clock=clock,
        )
        conn.pump.flush()
        for line in lines:
            client.transport.write(line + b"\n")  # type: ignore[union-attr]
            conn.pump.flush()
        return client.received

    def test_greetsByCertificateName(self) -> None:
        self.assertEqual(self.converse(), b"hello alice (EXTERNAL)\n")

    def test_whoami(self) -> None:
        pin = PKI.client("alice")
        from securenet.pki._pins import spki_pin

        self.assertEqual(
            self.converse(b"whoami"),
            f"hello alice (EXTERNAL)\nalice {spki_pin(pin.certificate)}\n".encode(),
        )

    def test_unknownCommand(self) -> None:
        self.assertIn(b"unknown command 'dance'", self.converse(b"dance"))


class GreeterTwistdTests(E2EBase):
    def test_throughTwistd(self) -> None:
        """The README's command: twistd securenet --app examples.greeter.GreeterFactory."""
        server = Twistd(self.base, ["--listen", server_listen(self.certs), "--app", "examples.greeter.GreeterFactory"])
        self.addCleanup(server.stop)
        result = run(
            [script("securenet"), "connect", "-q", "--linger", "0.5", client_endpoint(self.certs, server.port)],
            input=b"quit\n",
        )
        self.assertEqual((result.returncode, result.stdout), (0, b"hello dev-client (EXTERNAL)\nbye\n"), result.stderr)
