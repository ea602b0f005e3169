"""
End to end, behind a real load balancer: HAProxy (Debian) in TCP mode with
the configuration of C{examples/deploy/haproxy.cfg} (PROXY protocol v2,
health checks on each host's C{/readyz}), in front of two C{twistd
securenet} hosts (C{proxyProtocol=127.0.0.1}).  The hosts see the client's address, not the
balancer's; connections not from the balancer are refused; a host that
dies loses no connection the other can serve.
"""

from __future__ import annotations

import signal
import subprocess

from tests.support import Twistd, run, script
from tests.support.e2e import E2EBase, client_endpoint, metrics_base, server_listen
from tests.support.haproxy import HAProxy


class BalancerTests(E2EBase):
    def setUp(self) -> None:
        super().setUp()
        listen = server_listen(self.certs, proxyProtocol="127.0.0.1")
        self.hosts = [self.startHost(n, listen) for n in (1, 2)]
        health = [int(metrics_base(h).rsplit(":", 1)[1]) for h in self.hosts]
        self.balancer = HAProxy(self, self.base / "haproxy", [(h.port, m) for h, m in zip(self.hosts, health, strict=True)])

    def startHost(self, n: int, listen: str) -> Twistd:
        directory = self.base / f"host{n}"
        directory.mkdir()
        host = Twistd(directory, ["--listen", listen, "--metrics", "0"])
        self.addCleanup(host.stop)
        return host

    def through(self, data: bytes, source: str = "127.0.0.9") -> subprocess.CompletedProcess[bytes]:
        endpoint = client_endpoint(self.certs, self.balancer.port, bindAddress=source)
        return run([script("securenet"), "connect", "--linger", "0.3", "-q", endpoint], input=data, timeout=60)

    def test_clientAddressReachesBothHosts(self) -> None:
        """
        Four sessions through the balancer from 127.0.0.9 are served, two
        per host (round robin), and each host names the client's address in
        its authentication events, never the balancer's 127.0.0.1.
        """
        for n in range(4):
            result = self.through(b"hello %d\n" % n)
            self.assertEqual((result.returncode, result.stdout), (0, b"hello %d\n" % n), result.stderr)
        for host in self.hosts:
            log = host.logText()
            decisions = [line for line in log.splitlines() if "authentication ok for" in line]
            self.assertEqual(len(decisions), 2, log)
            for line in decisions:
                self.assertIn("authentication ok for 127.0.0.9:", line)

    def test_directConnectionRefused(self) -> None:
        """A client that skips the balancer (from 127.0.0.2) is refused before TLS; the host says why."""
        direct = run(
            [script("securenet"), "connect", "-q", client_endpoint(self.certs, self.hosts[0].port, bindAddress="127.0.0.2")],
            input=b"x\n",
            timeout=60,
        )
        self.assertNotEqual(direct.returncode, 0)
        self.assertEqual(direct.stdout, b"")
        self.assertIn("127.0.0.2: not a proxyProtocol source", self.hosts[0].waitForLog("not a proxyProtocol source"))

    def test_deadHostLosesNothing(self) -> None:
        """With one host killed, every session through the balancer is still served (by the other)."""
        self.hosts[0].process.send_signal(signal.SIGKILL)
        self.hosts[0].process.wait(10)
        for n in range(4):
            result = self.through(b"after %d\n" % n)
            self.assertEqual((result.returncode, result.stdout), (0, b"after %d\n" % n), result.stderr)
