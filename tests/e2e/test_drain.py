"""
End to end, the graceful stop: a real C{twistd securenet} is sent SIGTERM
while clients are connected (C{securenet connect}, and a raw TLS socket for
the HTTP API).  The application is L{tests.support.drain}'s conversation.
Every wait is bounded and generous; nothing asserts how fast.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import ssl
import subprocess
import time

from tests.e2e.test_web import WebTwistd
from tests.support import Twistd, child_env, script
from tests.support.e2e import E2EBase, client_endpoint, server_listen
from tests.web.test_api import parse_response

APP = "tests.support.drain.ConversationFactory"


class Client:
    """C{securenet connect ENDPOINT} with its standard input kept open: send lines, read what the server sent."""

    def __init__(self, endpoint: str) -> None:
        self.process = subprocess.Popen(
            [script("securenet"), "connect", "-q", "--linger", "0.5", endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        self.out = b""
        self.ended = False

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def read(self, until: bytes | None = None, timeout: float = 30) -> bytes:
        """What the server sent, once it contains C{until} (None: once the connection ended), or when C{timeout} passed."""
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while not self.ended and (until is None or until not in self.out) and time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                self.ended = True
            self.out += chunk
        selector.close()
        return self.out

    def wait(self, timeout: float = 30) -> tuple[int, str]:
        """The exit status and standard error, once the client exited."""
        code = self.process.wait(timeout)
        assert self.process.stderr is not None
        return code, self.process.stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def refused(port: int) -> bool:
    """Whether a new TCP connection to 127.0.0.1:C{port} is refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            return False
    except ConnectionRefusedError:
        return True


class GracefulStopTests(E2EBase):
    def client(self, server: Twistd) -> Client:
        client = Client(client_endpoint(self.certs, server.port))
        self.addCleanup(client.close)
        return client

    def stop(self, server: Twistd, port: int) -> str:
        """SIGTERM; the log once the listener's port has closed."""
        server.process.send_signal(signal.SIGTERM)
        log = server.waitForLog(f"Port {port} Closed", timeout=30)
        self.assertIn(f"Port {port} Closed", log)
        return log

    def exited(self, server: Twistd) -> tuple[int, str]:
        code = server.process.wait(60)
        return code, server.logText()

    def test_conversationCompletesDuringTheDrain(self) -> None:
        """
        SIGTERM while a client is mid-conversation: the port closes (a new
        connection is refused), the application is told, the client's
        exchange completes and the server ends the connection; twistd exits
        0 with the one summary line.
        """
        server = self.startServer("--listen", server_listen(self.certs), "--app", APP)
        client = self.client(server)
        client.send(b"begin\n")
        self.assertEqual(client.read(until=b"started\n"), b"started\n")
        self.stop(server, server.port)
        self.assertTrue(refused(server.port))
        self.assertIn("drain: told dev-client", server.waitForLog("drain: told dev-client"))
        self.assertIsNone(server.process.poll())
        client.send(b"end\n")
        self.assertEqual(client.read(), b"started\ndone\n")
        self.assertEqual(client.wait(), (0, ""))
        code, log = self.exited(server)
        self.assertEqual(code, 0, log)
        summaries = [line for line in log.splitlines() if "[securenet.service#info] stopped: " in line]
        self.assertEqual(len(summaries), 1, log)
        self.assertTrue(
            summaries[0].endswith(
                "stopped: 1 connection drained, 0 closed at the drain deadline (30 s), 0 closed during the handshake"
            ),
            summaries[0],
        )

    def test_connectionOutlivingTheDrainIsClosed(self) -> None:
        """
        --drain 1 and a connection that never ends by itself: the server
        closes it at the deadline, and twistd still exits 0.
        """
        server = self.startServer("--listen", server_listen(self.certs), "--app", APP, "--drain", "1")
        talking, holding = self.client(server), self.client(server)
        holding.send(b"hold\n")
        self.assertEqual(holding.read(until=b"holding\n"), b"holding\n")
        talking.send(b"begin\n")
        self.assertEqual(talking.read(until=b"started\n"), b"started\n")
        self.stop(server, server.port)
        code, log = self.exited(server)
        self.assertEqual(code, 0, log)
        self.assertIn("stopped: 0 connections drained, 2 closed at the drain deadline (1 s), 0 closed during the handshake", log)
        for client in (holding, talking):
            client.read()
            status, err = client.wait()
            self.assertEqual(status, 1, err)
            self.assertIn("the server closed the connection without a TLS close_notify", err)
        self.assertEqual((holding.out, talking.out), (b"holding\n", b"started\n"))

    def test_nothingOpenExitsAtOnce(self) -> None:
        """No connection open: the summary counts none, exit 0 (not the signal's 143)."""
        server = self.startServer("--listen", server_listen(self.certs), "--drain", "600")
        server.process.send_signal(signal.SIGTERM)
        code, log = self.exited(server)
        self.assertEqual(code, 0, log)
        self.assertIn(
            "stopped: 0 connections drained, 0 closed at the drain deadline (600 s), 0 closed during the handshake", log
        )

    def test_httpRequestInFlightCompletes(self) -> None:
        """
        --http: a request whose body is still arriving when SIGTERM comes is
        answered in full, with Connection: close, then the connection closes;
        twistd exits 0.
        """
        http = server_listen(self.certs, clientAuth="optional")
        server = WebTwistd(self.base, ["--http", http, "--auth", "anonymous"])
        self.addCleanup(server.stop)
        [port] = server.http_ports
        context = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        connection = context.wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(connection.close)
        body = json.dumps({"username": "alice", "password": "not alice's"}).encode()
        head = (
            f"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
        connection.sendall(head + body[:10])
        # The 100 Continue says the server has the request's head: the request is in flight.
        continued = b"HTTP/1.1 100 Continue\r\n\r\n"
        received = b""
        while len(received) < len(continued) and (chunk := connection.recv(len(continued) - len(received))):
            received += chunk
        self.assertEqual(received, continued)
        self.stop(server, port)
        self.assertIsNone(server.process.poll())
        connection.sendall(body[10:])
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        # The server's close_notify came; a client then closes (the server waits for that).
        connection.close()
        response = parse_response(received)
        self.assertEqual(response.header("Connection"), "close")
        self.assertEqual(len(response.body), int(response.header("Content-Length") or -1))
        self.assertIn("error", response.json())
        code, log = self.exited(server)
        self.assertEqual(code, 0, log)
        self.assertIn("stopped: 1 connection drained, 0 closed at the drain deadline (30 s), 0 closed during the handshake", log)
