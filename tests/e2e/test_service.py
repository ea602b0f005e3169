"""
End to end: what a user sees.  A real C{twistd securenet} process with a PKI
made by the real C{securenet pki} CLI, the C{securenet connect} client,
C{openssl s_client}, and sslyze's Mozilla compliance check.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import REPO, child_env, converse, run, run_twistd_expecting_failure, script
from tests.support.e2e import E2EBase, client_endpoint, free_port, pin_of, server_listen, sslyze


class PluginDiscoveryTests(SynchronousTestCase):
    def test_twistdListsSecurenet(self) -> None:
        """
        After a plain install (no source tree on the path, another working
        directory), twistd finds the securenet plugin.
        """
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        cwd = Path(self.mktemp()).resolve()
        cwd.mkdir(parents=True)
        result = run([script("twistd"), "--help"], cwd=cwd, env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout.decode(), r"\n\s+securenet\s+Serve an application")

    def test_authTypeListed(self) -> None:
        """--help-auth lists the certificate checker from our cred plugin."""
        result = run([script("twistd"), "securenet", "--help-auth"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout.decode(), r"certificate\s+map=cn\|dns")


class EchoTests(E2EBase):
    def test_echoThroughTwistd(self) -> None:
        """A line sent by `securenet connect` comes back through `twistd securenet` (mTLS + pin)."""
        server = self.startServer("--listen", server_listen(self.certs), "--app", "echo")
        pin = pin_of(self.certs / "server.pem")
        result = self.connect(client_endpoint(self.certs, server.port, pin=pin), b"hello securenet\n", "-q")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, b"hello securenet\n", b""))
        log = server.waitForLog("by EXTERNAL: dev-client")
        # One line per connection: the decision carries the handshake's facts.
        self.assertRegex(log, r"authentication ok for 127\.0\.0\.1:\d+ by EXTERNAL: dev-client over TLSv1\.3 TLS_")
        self.assertNotIn("TLS handshake with", log)

    def test_summaryOnStderr(self) -> None:
        """Without -q the client names the server, TLS version and pin on stderr."""
        server = self.startServer("--listen", server_listen(self.certs))
        result = self.connect(client_endpoint(self.certs, server.port), b"x")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(pin_of(self.certs / "server.pem").encode(), result.stderr)
        self.assertIn(b"TLSv1.3", result.stderr)

    def test_wrongPin(self) -> None:
        """A wrong pin: exit 1, one line naming both pins; the server echoed nothing."""
        server = self.startServer("--listen", server_listen(self.certs))
        wrong = "sha256/" + "A" * 43 + "="
        result = self.connect(client_endpoint(self.certs, server.port, pin=wrong), b"secret\n")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"")
        lines = result.stderr.decode().strip().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(
            lines[0],
            f"securenet: error: pin mismatch: expected {wrong}, server presented "
            f"{pin_of(self.certs / 'server.pem')}, {pin_of(self.certs / 'ca.pem')}",
        )
        log = server.waitForLog("failed: peer aborted the handshake")
        self.assertIn("failed: peer aborted the handshake", log)
        self.assertNotIn("authentication ok", log)

    def test_noClientCertificate(self) -> None:
        """clientAuth=required and no client certificate: refused, the reason named, nothing echoed."""
        server = self.startServer("--listen", server_listen(self.certs))
        result = self.connect(client_endpoint(self.certs, server.port, certificate="", privateKey=""), b"secret\n")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"")
        self.assertIn(b"securenet: error: server requires a client certificate", result.stderr)
        log = server.waitForLog("client sent no certificate, but one is required")
        self.assertIn("client sent no certificate, but one is required", log)
        self.assertNotIn("authentication ok", log)

    def test_connectionRefused(self) -> None:
        """Nobody listening: exit 1 and a clear line."""
        result = self.connect(client_endpoint(self.certs, 1), b"")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, b"securenet: error: connection refused (is the server running?)\n")

    def test_unknownEndpointKey(self) -> None:
        """An unknown client endpoint key is refused naming the key, before any connection."""
        result = self.connect("securenet:host=127.0.0.1:port=1:trustRoots=x:pim=y")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"unknown client endpoint key 'pim'", result.stderr)

    def test_configFile(self) -> None:
        """--config FILE (TOML) gives the same settings as the command line."""
        config = self.base / "securenet.toml"
        config.write_text(f'listen = ["{server_listen(self.certs)}"]\napp = "echo"\nauth = ["certificate:map=cn"]\n')
        server = self.startServer("--config", str(config))
        result = self.connect(client_endpoint(self.certs, server.port), b"from config\n", "-q")
        self.assertEqual((result.returncode, result.stdout), (0, b"from config\n"), result.stderr)


class StartupRefusalTests(E2EBase):
    def test_keyWithGroupReadableMode(self) -> None:
        """A server key readable by others stops twistd with one line naming the file."""
        key = self.base / "server.key"
        key.write_bytes((self.certs / "server.key").read_bytes())
        key.chmod(0o644)
        result = run_twistd_expecting_failure(self.base, ["--listen", server_listen(self.certs, privateKey=str(key))])
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"{key}: private key file has mode 0644".encode(), result.stderr)
        self.assertNotIn(b"Traceback", result.stderr + result.stdout)

    def test_unknownServerKey(self) -> None:
        result = run_twistd_expecting_failure(self.base, ["--listen", server_listen(self.certs, bogus="1")])
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"unknown server endpoint key 'bogus'", result.stderr)
        self.assertNotIn(b"Traceback", result.stderr + result.stdout)

    def test_unknownApp(self) -> None:
        result = run_twistd_expecting_failure(self.base, ["--listen", server_listen(self.certs), "--app", "no.such.thing"])
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"--app no.such.thing: cannot import it", result.stderr)

    def test_devDefaultsWithoutPKI(self) -> None:
        """No --listen and no ./certs: a hint to create the development PKI."""
        result = run_twistd_expecting_failure(self.base, [])
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"development PKI in ./certs is missing", result.stderr)


class OpenSSLClientTests(E2EBase):
    """openssl s_client, a client we did not write, against our server."""

    def s_client(self, port: int, *args: str) -> list[str]:
        return [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-CAfile",
            str(self.certs / "ca.pem"),
            "-verify_return_error",
            *args,
        ]

    def test_echoWithClientCertificate(self) -> None:
        server = self.startServer("--listen", server_listen(self.certs))
        out, _ = converse(
            self.s_client(
                server.port, "-cert", str(self.certs / "dev-client.pem"), "-key", str(self.certs / "dev-client.key"), "-quiet"
            ),
            b"AUTH EXTERNAL =\r\nvia openssl\n",
            b"via openssl\n",
        )
        self.assertIn(b"SECURENET 1 AUTH EXTERNAL\r\nOK dev-client\r\nvia openssl\n", out)

    def test_earlyDataByHand(self) -> None:
        """docs/protocol.md, early application data: the line to echo leaves with AUTH ... EARLY, before any answer."""
        server = self.startServer("--listen", server_listen(self.certs))
        out, _ = converse(
            self.s_client(
                server.port, "-cert", str(self.certs / "dev-client.pem"), "-key", str(self.certs / "dev-client.key"), "-quiet"
            ),
            b"AUTH EXTERNAL = EARLY\r\nearly via openssl\n",
            b"early via openssl\n",
        )
        self.assertIn(b"SECURENET 1 AUTH EXTERNAL\r\nOK dev-client\r\nearly via openssl\n", out)

    def test_earlyDataRefused(self) -> None:
        """A server without a certificate checker does not offer EXTERNAL: one NO line, it closes, the early bytes never echo."""
        server = self.startServer("--listen", server_listen(self.certs), "--auth", "anonymous")
        argv = self.s_client(
            server.port, "-cert", str(self.certs / "dev-client.pem"), "-key", str(self.certs / "dev-client.key"), "-quiet"
        )
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env())
        self.addCleanup(proc.kill)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"AUTH EXTERNAL = EARLY\r\nsecret\n")
        proc.stdin.flush()
        # stdin stays open: s_client's output ends only because the server closed the connection.
        out, ended = b"", False
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 20
        while not ended and selector.select(timeout=max(0.0, deadline - time.monotonic())):
            chunk = os.read(proc.stdout.fileno(), 65536)
            out += chunk
            ended = not chunk
        self.assertTrue(ended, f"the server did not close the connection; s_client read {out!r}")
        self.assertIsNotNone(proc.wait(timeout=20))
        proc.stdin.close()
        self.assertEqual(
            out.split(b"\r\n")[:2],
            [b"SECURENET 1 AUTH ANONYMOUS", b"NO UNKNOWN-MECHANISM mechanism not offered; use one of ANONYMOUS"],
        )
        self.assertNotIn(b"secret", out)

    def test_tls11Refused(self) -> None:
        """A TLS 1.1-only client is refused; the server logs the typed reason."""
        server = self.startServer("--listen", server_listen(self.certs, clientAuth="none", trustRoots=""), "--auth", "anonymous")
        result = run(self.s_client(server.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"), input=b"", timeout=30)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"Cipher is (NONE)", result.stdout)
        self.assertIn("no TLS version in common", server.waitForLog("no TLS version in common"))

    def test_x448Refused(self) -> None:
        """Only X25519, P-256 and P-384: a client offering X448 alone is refused."""
        server = self.startServer("--listen", server_listen(self.certs, clientAuth="none", trustRoots=""), "--auth", "anonymous")
        refused = run(self.s_client(server.port, "-groups", "X448"), input=b"", timeout=30)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn(b"Cipher is (NONE)", refused.stdout)
        out, _ = converse(self.s_client(server.port, "-groups", "X25519"), b"", b"Verify return code: 0 (ok)")
        self.assertIn(b"Server Temp Key: X25519", out)

    def test_garbageInsteadOfTLS(self) -> None:
        """Plaintext instead of a ClientHello: the server closes and logs NotTLS."""
        import socket

        server = self.startServer("--listen", server_listen(self.certs))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(10)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        self.assertNotIn(b"HTTP", data)
        self.assertIn(
            "peer sent a plaintext HTTP request, not TLS",
            server.waitForLog("peer sent a plaintext HTTP request, not TLS"),
        )


_PLAIN_TWISTED_SERVER = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor, endpoints, protocol
    from twisted.protocols.wire import Echo
    ep = endpoints.serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={sys.argv[2]}:certKey={sys.argv[1]}")
    def listening(port):
        print(port.getHost().port, flush=True)
    ep.listen(protocol.Factory.forProtocol(Echo)).addCallback(listening)
    reactor.run()
    """
)


class SslyzeComplianceTests(E2EBase):
    def scan(self, port: int, profile: str) -> subprocess.CompletedProcess[bytes]:
        return run(
            [sslyze(), f"--mozilla_config={profile}", f"--certinfo_ca_file={self.certs / 'ca.pem'}", f"localhost:{port}"],
            timeout=300,
        )

    def test_intermediateAndModern(self) -> None:
        """Each profile passes sslyze's Mozilla check for that profile."""
        server = self.startServer(
            "--listen",
            server_listen(self.certs, clientAuth="none", trustRoots=""),
            "--listen",
            server_listen(self.certs, clientAuth="none", trustRoots="", profile="modern"),
            "--auth",
            "anonymous",
        )
        for port, profile in zip(server.ports, ("intermediate", "modern"), strict=True):
            result = self.scan(port, profile)
            out = result.stdout.decode()
            self.assertEqual(result.returncode, 0, out[-3000:])
            self.assertIn(f"localhost:{port}: OK - Compliant.", out)

    def test_intermediateServerIsNotModern(self) -> None:
        """The check can fail: our intermediate profile (TLS 1.2 on) is not Mozilla modern."""
        server = self.startServer("--listen", server_listen(self.certs, clientAuth="none", trustRoots=""), "--auth", "anonymous")
        result = self.scan(server.port, "modern")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"FAILED - Not compliant", result.stdout)

    def test_plainTwistedFailsIntermediate(self) -> None:
        """The control: Twisted's CertificateOptions defaults fail Mozilla intermediate."""
        proc = subprocess.Popen(
            [sys.executable, "-c", _PLAIN_TWISTED_SERVER, str(self.certs / "server.pem"), str(self.certs / "server.key")],
            stdout=subprocess.PIPE,
            env=child_env(),
            cwd=REPO,
        )

        def stop() -> None:
            proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()

        self.addCleanup(stop)
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip())
        result = self.scan(port, "intermediate")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"FAILED - Not compliant", result.stdout)
        self.assertTrue(re.search(rb"tls_curves|ciphersuites|X448|secp521r1", result.stdout), result.stdout[-2000:])


class AuditFailureTests(E2EBase):
    def test_fullLogDiskRefusesAuthentications(self) -> None:
        """
        twistd securenet with --logfile=/dev/full: every audit write fails, so
        the server says so on stderr and refuses authentications with
        NO AUDIT-UNAVAILABLE; the client gets nothing from the application.
        """
        import socket

        port = free_port()
        listen = server_listen(self.certs).replace("securenet:0:", f"securenet:{port}:")
        args = [script("twistd"), "-n", "--pidfile=", "-l", "/dev/full", "securenet", "--listen", listen]
        process = subprocess.Popen(args, cwd=self.base, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def stop() -> None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)

        self.addCleanup(stop)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    self.fail(
                        f"twistd did not listen: exit {process.poll()}, {process.stderr.read() if process.stderr else ''!r}"
                    )
                time.sleep(0.1)
        result = self.connect(client_endpoint(self.certs, port), b"hello\n", "-q")
        self.assertEqual(result.returncode, 1, result)
        self.assertIn(b"AUDIT-UNAVAILABLE", result.stderr)
        self.assertEqual(result.stdout, b"")
        stop()
        assert process.stderr is not None
        stderr = process.stderr.read().decode("utf-8", "replace")
        self.assertIn("securenet: the audit log cannot be written (OSError: [Errno 28] No space left on device)", stderr)
        self.assertEqual(stderr.count("the audit log cannot be written"), 1, stderr)
