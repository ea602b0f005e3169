"""
End to end: C{securenet:} endpoints on real loopback sockets, seen by
clients we did not write (C{openssl s_client}) and through Twisted's own
C{serverFromString} / C{clientFromString}.
"""

from __future__ import annotations

import re

from tests.e2e.test_service import E2EBase, server_listen
from tests.support import run


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
