"""
Tests for C{securenet connect}'s options, help and hints (the connection
itself is tested end to end in tests/e2e/test_auth.py): every hint names
an option the command has, in words, never a Python argument.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import securenet.cli._connect
from securenet.cli import build_parser
from securenet.cli._connect import CredentialError, mechanism_chooser, totp_source
from securenet.sasl._mechanism import ChannelBindings

OFFER = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN")
BINDINGS = ChannelBindings(tls_exporter=b"\x01" * 32, tls_server_end_point=b"\x02" * 32)


class ConnectHintTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(securenet.cli._connect, "_has_tty", lambda: False)
        self.password = Path(self.mktemp())
        self.password.write_text("s3cret\n")

    def args(self, *argv: str) -> argparse.Namespace:
        return build_parser().parse_args(["connect", *argv, "securenet:host=localhost:port=1:pin=sha256/x"])

    def test_scramDowngradeNamesTheOptions(self) -> None:
        """--mechanism SCRAM-SHA-256 against a server offering -PLUS: refused, saying what to give instead."""
        choose = mechanism_chooser(
            self.args("--mechanism", "SCRAM-SHA-256", "--user", "alice", "--password-file", str(self.password))
        )
        assert choose is not None
        e = self.assertRaises(ValueError, choose, OFFER, BINDINGS, False)
        self.assertNotIn("plus=True", str(e))
        self.assertIn("leave out --mechanism, or give --mechanism SCRAM-SHA-256-PLUS", str(e))

    def test_scramWithoutPlusOfferedStillWorks(self) -> None:
        """Plain SCRAM is chosen as before where the server offers no -PLUS (or the connection cannot bind)."""
        choose = mechanism_chooser(
            self.args("--mechanism", "SCRAM-SHA-256", "--user", "alice", "--password-file", str(self.password))
        )
        assert choose is not None
        self.assertEqual(choose(("SCRAM-SHA-256", "PLAIN"), BINDINGS, False).name, "SCRAM-SHA-256")
        self.assertEqual(choose(OFFER, ChannelBindings(), False).name, "SCRAM-SHA-256")

    def test_noTerminalForTheTotpCode(self) -> None:
        e = self.assertRaises(CredentialError, totp_source(self.args()))
        self.assertEqual(str(e), "no TOTP code: give --totp CODE (there is no terminal to prompt on)")

    def test_noTerminalForASecret(self) -> None:
        """Each secret's hint names the option that gives it from a file."""
        cases = {
            ("--user", "alice"): "no password: give --password-file FILE (there is no terminal to prompt on)",
            ("--mechanism", "OAUTHBEARER"): "no token: give --token-file FILE (there is no terminal to prompt on)",
            ("--mechanism", "APIKEY"): "no API key: give --api-key-file FILE (there is no terminal to prompt on)",
        }
        for argv, message in cases.items():
            e = self.assertRaises(CredentialError, mechanism_chooser, self.args(*argv))
            self.assertEqual(str(e), message)
