"""
Tests for L{securenet.authz.ReloadablePolicy}: the policy every holder of a
running service shares, which a reload (prepare, then commit) points at the
file's new policy; a policy the loader refuses changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from securenet._errors import SecurenetError
from securenet.authz import AuthorizationDenied, PolicyError, ReloadablePolicy, requires
from securenet.cred._identity import Identity
from securenet.interfaces import IPolicy, IReloadable

READERS = '[roles.reader]\npermissions = ["kv.read:**"]\n'
WRITERS = '[roles.reader]\npermissions = ["kv.read:**", "kv.write:**"]\n'


def alice(*roles: str, attributes: Mapping[str, Any] | None = None) -> Identity:
    return Identity("alice", "PLAIN", "192.0.2.1:1", roles=roles or ("reader",), attributes=dict(attributes or {}))


class ReloadablePolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.write_text(READERS)
        self.clock = Clock()
        self.policy = ReloadablePolicy.load(self.path, clock=self.clock)

    def assertDecides(self, writes: bool) -> None:
        """Reading is allowed; writing is allowed exactly when C{writes}."""
        self.assertTrue(self.policy.can(alice(), "kv.read", "a/b"))
        self.assertEqual(self.policy.can(alice(), "kv.write", "a/b"), writes)
        self.assertEqual(self.policy.decide(alice(), "kv.write", "a/b").allowed, writes)

    def test_interfaces(self) -> None:
        self.assertTrue(verifyObject(IPolicy, self.policy))
        self.assertTrue(verifyObject(IReloadable, self.policy))
        self.assertEqual((self.policy.what, self.policy.source), ("policy", str(self.path)))

    def test_loadRefusesLikePolicyLoad(self) -> None:
        """A bad file at start-up is the same PolicyError as Policy.load's."""
        self.path.write_text("bogus = 1\n" + READERS)
        with self.assertRaises(PolicyError) as e:
            ReloadablePolicy.load(self.path)
        self.assertEqual(
            str(e.exception), f"{self.path}:1: unknown key 'bogus' in the policy (known: version, audit, roles, rules)"
        )

    def test_delegates(self) -> None:
        """decide, can, require and summary are the current policy's."""
        self.assertDecides(writes=False)
        self.assertTrue(self.policy.require(alice(), "kv.read", "x").allowed)
        with self.assertRaises(AuthorizationDenied) as e:
            self.policy.require(alice(), "kv.write", "a/b")
        self.assertEqual(str(e.exception), "alice may not kv.write a/b: missing permission kv.write:a/b")
        self.assertEqual(self.policy.summary(), self.policy.current.summary())
        self.assertIs(self.policy.current.clock, self.clock)

    def test_reloadAllows(self) -> None:
        """A denied request is allowed once a policy that allows it is committed, and vice versa."""
        self.path.write_text(WRITERS)
        commit = self.policy.prepare()
        self.assertDecides(writes=False)  # prepare alone swaps nothing
        commit()
        self.assertDecides(writes=True)
        decision = self.policy.decide(alice(), "kv.write", "a/b")
        assert decision.rule is not None
        self.assertEqual((decision.rule.location.source, decision.rule.location.line), (str(self.path), 2))
        self.path.write_text(READERS)
        self.policy.prepare()()
        self.assertDecides(writes=False)

    def test_clockKept(self) -> None:
        """The reloaded policy tells the time with the same clock."""
        self.path.write_text(WRITERS)
        self.policy.prepare()()
        self.assertIs(self.policy.current.clock, self.clock)

    def test_everyHolderSeesTheReload(self) -> None:
        """Holders keep the one object: @requires on a protocol whose factory holds it sees the new policy."""

        class Factory:
            policy = self.policy

        class Protocol:
            factory = Factory()
            identity = alice()

            @requires("kv.write", resource="a/b")
            def write(self) -> str:
                return "written"

        with self.assertRaises(AuthorizationDenied):
            Protocol().write()
        self.path.write_text(WRITERS)
        self.policy.prepare()()
        self.assertEqual(Protocol().write(), "written")

    def test_decisionInFlightKeepsItsPolicy(self) -> None:
        """A commit while a decision is being made (here: while a condition reads an attribute) does not change it."""
        self.path.write_text(
            '[roles.reader]\npermissions = []\n[[rules]]\neffect = "allow"\npermissions = ["kv.write:**"]\n'
            'when = { "identity.attributes.team" = "ops" }\n'
        )
        self.policy.prepare()()
        self.path.write_text(READERS)
        commit = self.policy.prepare()
        policy = self.policy

        class Attributes(Mapping[str, Any]):
            def __getitem__(self, key: str) -> Any:
                commit()  # the reload lands in the middle of the decision
                if key == "team":
                    return "ops"
                raise KeyError(key)

            def __iter__(self) -> Iterator[str]:
                return iter(["team"])

            def __len__(self) -> int:
                return 1

            def __contains__(self, key: object) -> bool:
                return key == "team"

        identity = Identity("alice", "PLAIN", "192.0.2.1:1", roles=("reader",), attributes=Attributes())
        decision = policy.decide(identity, "kv.write", "a/b")
        self.assertTrue(decision.allowed, decision.reason)
        assert decision.rule is not None
        self.assertEqual(decision.rule.location.line, 5)  # the permission of the rule of the old policy
        # ... and the next decision is the new policy's.
        self.assertFalse(policy.can(alice(), "kv.write", "a/b"))

    def assertRefused(self, text: bytes | None, message: str) -> None:
        """Writing C{text} (None: removing the file) makes prepare refuse with C{message}; nothing changes."""
        self.path.write_text(WRITERS)
        self.policy.prepare()()
        before = self.policy.current
        if text is None:
            self.path.unlink()
        else:
            self.path.write_bytes(text)
        with self.assertRaises(PolicyError) as e:
            self.policy.prepare()
        self.assertIsInstance(e.exception, SecurenetError)
        self.assertEqual(str(e.exception), message.format(path=self.path))
        self.assertIs(self.policy.current, before)
        self.assertDecides(writes=True)

    def test_syntaxError(self) -> None:
        self.assertRefused(
            b'[roles.reader]\npermissions = ["kv.read:**"\n',
            "{path}:2: TOML syntax error: Unclosed array (at the end of the file)",
        )

    def test_unknownRole(self) -> None:
        self.assertRefused(
            READERS.encode() + b'[[rules]]\neffect = "allow"\nroles = ["writer"]\npermissions = ["kv.write:**"]\n',
            "{path}:5: rule 1 is for unknown role 'writer'",
        )

    def test_badCondition(self) -> None:
        self.assertRefused(
            READERS.encode()
            + b'[[rules]]\neffect = "allow"\npermissions = ["kv.write:**"]\n'
            + b'when = { "context.peer" = { cidr = "10.0.0.1/8" } }\n',
            "{path}:6: bad CIDR '10.0.0.1/8' for context.peer: 10.0.0.1/8 has host bits set",
        )

    def test_missingFile(self) -> None:
        self.assertRefused(None, "{path}: policy file does not exist")

    def test_notUTF8(self) -> None:
        self.assertRefused(b"# \xff\n", "{path}:1: policy file is not UTF-8 text")

    def test_unreadable(self) -> None:
        if os.getuid() == 0:
            # root reads any file: a directory in its place is unreadable as a policy all the same.
            self.path.unlink()
            self.path.mkdir()
            before = self.policy.current
            with self.assertRaises(PolicyError) as e:
                self.policy.prepare()
            self.assertEqual(str(e.exception), f"{self.path}: policy file is a directory")
            self.assertIs(self.policy.current, before)
            return
        self.path.chmod(0)
        self.addCleanup(self.path.chmod, 0o600)
        with self.assertRaises(PolicyError) as e:
            self.policy.prepare()
        self.assertEqual(str(e.exception), f"{self.path}: cannot read the policy file (Permission denied)")
        self.assertDecides(writes=False)
