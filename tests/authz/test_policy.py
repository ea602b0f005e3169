"""
Tests for L{securenet.authz}: loading policies (and refusing each kind of
bad one with its file, line and reason), deciding requests (RBAC,
inheritance, deny wins, deny by default), resource patterns and
templates (including attempts to widen them through identity values),
attribute conditions on every source, explanations, audit events, and
the C{@requires} decorator.
"""

from __future__ import annotations

import datetime
import json
import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from securenet._errors import SecurenetError
from securenet.authz import (
    AuthorizationDenied,
    AuthorizationSetupError,
    Context,
    Decision,
    Location,
    MatchedRule,
    Policy,
    PolicyError,
    can,
    parse_spiffe_id,
    peer_address,
    requires,
    spiffe_id_of,
)
from securenet.authz._patterns import ActionPattern, Glob, PatternError, Permission, ResourcePattern
from securenet.authz._source import locate
from securenet.cred._identity import Identity
from securenet.interfaces import IPolicy
from securenet.pki._facts import CertificateFacts
from securenet.testing import debug_events

REPO = Path(__file__).resolve().parent.parent.parent

#: Monday 6 January 2025, 09:30 UTC.
MONDAY_0930 = datetime.datetime(2025, 1, 6, 9, 30, tzinfo=datetime.UTC)


def parse(text: str, clock: Any = None) -> Policy:
    """The policy C{text} (dedented), named C{policy.toml}."""
    return Policy.parse(textwrap.dedent(text), source="policy.toml", clock=clock or Clock())


def certificate(subject: str = "CN=dev1", sans: tuple[str, ...] = ()) -> CertificateFacts:
    epoch = datetime.datetime.fromtimestamp(0, datetime.UTC)
    cns = re.findall(r"CN=([^,]+)", subject)
    return CertificateFacts(
        subject=subject,
        common_name=cns[0] if cns else None,
        issuer="CN=test CA",
        serial=1,
        not_before=epoch,
        not_after=epoch,
        sans=sans,
        pin="sha256/AAAA",
    )


def identity(
    name: str = "alice",
    *roles: str,
    mechanism: str = "PLAIN",
    peer: str = "192.0.2.10:40000",
    attributes: Mapping[str, Any] | None = None,
    cert: CertificateFacts | None = None,
    second_factor: str | None = None,
    scopes: tuple[str, ...] = (),
) -> Identity:
    return Identity(
        avatar_id=name,
        mechanism=mechanism,
        peer=peer,
        certificate=cert,
        attributes=dict(attributes or {}),
        roles=roles,
        second_factor=second_factor,
        scopes=scopes,
    )


def device(spiffe: str, name: str = "pump7", subject: str = "CN=pump7,OU=devices") -> Identity:
    return identity(name, mechanism="EXTERNAL", cert=certificate(subject, (f"URI:{spiffe}",)))


class Events:
    """Collects the C{authz.decision} events logged while a test runs."""

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self._observe)
        globalLogPublisher.addObserver(observer)
        testcase.addCleanup(globalLogPublisher.removeObserver, observer)

    def _observe(self, event: dict[str, Any]) -> None:
        if event.get("securenet_event") == "authz.decision":
            self.events.append(event)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


RBAC = """\
    [roles.reader]
    permissions = ["kv.read", "kv.list"]

    [roles.writer]
    inherits = ["reader"]
    permissions = ["kv.write:data/**"]

    [roles.admin]
    inherits = ["writer"]
    permissions = [
      "admin.*",
      "kv.delete:data/**",
    ]

    [[rules]]
    name = "audit trail is append-only"
    effect = "deny"
    permissions = ["kv.write:data/audit/**", "kv.delete:data/audit/**"]
    """


# -- loading -------------------------------------------------------------------


class LoadTests(SynchronousTestCase):
    def assertRefused(self, text: str, line: int | None, reason: str) -> None:
        with self.assertRaises(PolicyError) as caught:
            parse(text)
        self.assertEqual((caught.exception.source, caught.exception.line, caught.exception.reason), ("policy.toml", line, reason))
        self.assertEqual(str(caught.exception), f"policy.toml:{line}: {reason}" if line else f"policy.toml: {reason}")

    def test_valid_file(self) -> None:
        path = Path(self.mktemp())
        path.write_text(textwrap.dedent(RBAC))
        policy = Policy.load(path)
        self.assertEqual(policy.source, str(path))
        self.assertEqual(list(policy.roles), ["reader", "writer", "admin"])
        self.assertEqual(policy.roles["admin"].inherits, ("writer",))
        self.assertEqual(policy.roles["admin"].location, Location(str(path), 8))
        self.assertEqual(policy.roles["admin"].permission_locations, (Location(str(path), 11), Location(str(path), 12)))
        self.assertEqual(policy.effective_roles(["admin"]), frozenset({"admin", "writer", "reader"}))
        self.assertEqual(policy.effective_roles(["writer", "ghost"]), frozenset({"writer", "reader"}))
        self.assertEqual(
            policy.permissions_of("admin"), ("admin.*", "kv.delete:data/**", "kv.read", "kv.list", "kv.write:data/**")
        )
        self.assertTrue(IPolicy.providedBy(policy))

    def test_empty_policy_denies_everything(self) -> None:
        policy = parse("")
        self.assertFalse(policy.can(identity("root", "admin"), "kv.read", "x"))

    def test_documented_example(self) -> None:
        """The complete example of docs/authz.md loads, and means what the docs say."""
        text = (REPO / "docs" / "authz.md").read_text()
        example = re.search(r"```toml\n(.*?)```", text, re.S)
        assert example is not None
        policy = Policy.parse(example.group(1), source="policy.toml", clock=Clock())
        office = "10.1.2.3:5000"
        self.assertTrue(policy.can(identity("alice", "writer"), "kv.write", "data/x"))
        self.assertFalse(policy.can(identity("alice", "writer"), "kv.write", "data/audit/1"))
        self.assertFalse(policy.can(identity("root", "admin", peer=office), "admin.stop"))
        self.assertTrue(policy.can(identity("root", "admin", peer=office, second_factor="TOTP"), "admin.stop"))
        self.assertFalse(policy.can(identity("root", "admin", peer="203.0.113.1:5", second_factor="TOTP"), "admin.stop"))
        pump = device("spiffe://example.org/site1/pump7")
        self.assertTrue(policy.can(pump, "telemetry.publish", "telemetry/site1/pump7/temperature"))
        self.assertFalse(policy.can(pump, "telemetry.publish", "telemetry/site1/pump8/temperature"))

    def test_missing_file(self) -> None:
        path = self.mktemp()
        with self.assertRaises(PolicyError) as caught:
            Policy.load(path)
        self.assertEqual(str(caught.exception), f"{path}: policy file does not exist")
        self.assertIsInstance(caught.exception, SecurenetError)

    def test_not_utf8(self) -> None:
        path = Path(self.mktemp())
        path.write_bytes(b"version = 1\n# caf\xe9\n")
        with self.assertRaises(PolicyError) as caught:
            Policy.load(path)
        self.assertEqual(str(caught.exception), f"{path}:2: policy file is not UTF-8 text")

    def test_syntax_error(self) -> None:
        self.assertRefused(
            """\
            [roles.reader]
            permissions = ["kv.read"]
            this is not toml
            """,
            3,
            "TOML syntax error: Expected '=' after a key in a key/value pair",
        )

    def test_syntax_error_at_the_end(self) -> None:
        self.assertRefused(
            """\
            [roles.reader]
            permissions = ["kv.read",
            """,
            2,
            "TOML syntax error: Invalid value (at the end of the file)",
        )

    def test_unknown_top_level_key(self) -> None:
        self.assertRefused(
            """\
            version = 1
            [role.reader]
            permissions = []
            """,
            2,
            "unknown key 'role' in the policy (known: version, audit, roles, rules)",
        )

    def test_unknown_role_key(self) -> None:
        self.assertRefused(
            """\
            [roles.reader]
            permissions = ["kv.read"]

            [roles.writer]
            inherits = ["reader"]
            permision = ["kv.write"]
            """,
            6,
            "unknown key 'permision' in [roles.writer] (known: description, inherits, permissions)",
        )

    def test_unknown_rule_key(self) -> None:
        self.assertRefused(
            """\
            [[rules]]
            effect = "allow"
            permissions = ["kv.read"]

            [[rules]]
            name = "second"
            effect = "allow"
            permissions = ["kv.read"]
            role = ["reader"]
            """,
            9,
            "unknown key 'role' in rule 2 \"second\" (known: name, description, effect, roles, permissions, when, unless)",
        )

    def test_unknown_audit_key(self) -> None:
        self.assertRefused('[audit]\nlog_allow = "info"\n', 2, "unknown key 'log_allow' in [audit] (known: log_allows)")

    def test_bad_log_level(self) -> None:
        self.assertRefused('[audit]\nlog_allows = "trace"\n', 2, 'log_allows is "debug" or "info", not \'trace\'')

    def test_bad_version(self) -> None:
        self.assertRefused("version = 2\n", 1, "unsupported policy version 2 (this securenet reads version 1)")

    def test_bad_permissions(self) -> None:
        for permission, reason in [
            ("kv.write:data/../x", "resource pattern 'data/../x' has a '.' or '..' segment"),
            ("kv.write:data//x", "resource pattern 'data//x' has an empty segment ('//' or a trailing '/')"),
            ("kv.write:data/", "resource pattern 'data/' has an empty segment ('//' or a trailing '/')"),
            ("kv.write:data/x**", "resource pattern 'data/x**': '**' must be a whole segment (as in data/**)"),
            ("kv.write:", "the resource pattern is empty (leave out ':' for any resource)"),
            ("adm*", "action 'adm*': '*' must be a whole name (as in admin.*)"),
            ("kv read", "action 'kv read': names are letters, digits, '_' and '-', separated by '.'"),
            ("kv..read", "action 'kv..read': names are letters, digits, '_' and '-', separated by '.'"),
            ("", "the action is empty"),
            (
                "kv.read:home/{identity.avatar_idd}",
                "resource pattern 'home/{identity.avatar_idd}': unknown attribute 'identity.avatar_idd' (did you mean "
                "identity.avatar_id?)",
            ),
            (
                "kv.read:x/{context.peer}",
                "resource pattern 'x/{context.peer}': only identity.* fields may fill a template, not 'context.peer'",
            ),
            ("kv.read:x/{identity.mfa}", "resource pattern 'x/{identity.mfa}': identity.mfa is a boolean, not text"),
            (
                "kv.read:x/a{identity.spiffe_path}",
                "resource pattern 'x/a{identity.spiffe_path}': {identity.spiffe_path} may fill several segments, so it must "
                "be a whole segment",
            ),
            ("kv.read:x/{y", "resource pattern 'x/{y': '{' and '}' only enclose a template such as {identity.avatar_id}"),
        ]:
            with self.subTest(permission=permission):
                self.assertRefused(
                    f'[roles.writer]\npermissions = [\n  "kv.read",\n  {json.dumps(permission)},\n]\n',
                    4,
                    f"bad permission {permission!r} in [roles.writer]: {reason}",
                )

    def test_permissions_not_strings(self) -> None:
        self.assertRefused('[roles.a]\npermissions = "kv.read"\n', 2, "permissions is an array of strings, not a string")
        self.assertRefused('[roles.a]\npermissions = [\n"kv.read",\n3]\n', 4, "permissions holds strings, not an integer")
        self.assertRefused('[[rules]]\neffect = "allow"\npermissions = []\n', 3, "permissions must not be empty")

    def test_unknown_role_inherited(self) -> None:
        self.assertRefused(
            """\
            [roles.reader]
            permissions = ["kv.read"]
            [roles.writer]
            inherits = ["reader", "readers"]
            """,
            4,
            "role 'writer' inherits unknown role 'readers'",
        )

    def test_unknown_role_in_rule(self) -> None:
        self.assertRefused(
            """\
            [roles.reader]
            [[rules]]
            effect = "allow"
            roles = [
              "reader",
              "raeder",
            ]
            permissions = ["kv.read"]
            """,
            6,
            "rule 1 is for unknown role 'raeder'",
        )

    def test_bad_role_name(self) -> None:
        self.assertRefused(
            '[roles."two words"]\n', 1, "role name 'two words' contains whitespace, a control character or a comma"
        )

    def test_inheritance_cycle(self) -> None:
        self.assertRefused(
            """\
            [roles.a]
            inherits = ["b"]
            [roles.b]
            inherits = ["c"]
            [roles.c]
            inherits = [
              "a",
            ]
            """,
            7,
            "role inheritance cycle: a -> b -> c -> a",
        )

    def test_self_inheritance(self) -> None:
        self.assertRefused('[roles.a]\n\n[roles.b]\ninherits = ["a", "b"]\n', 4, "role inheritance cycle: b -> b")

    def test_rule_needs_effect_and_permissions(self) -> None:
        self.assertRefused('version = 1\n[[rules]]\npermissions = ["x"]\n', 2, 'rule 1 needs effect = "allow" or "deny"')
        self.assertRefused('[[rules]]\nname = "r"\neffect = "allow"\n', 1, 'rule 1 "r" needs permissions = [...]')
        self.assertRefused(
            '[[rules]]\neffect = "permit"\npermissions = ["x"]\n', 2, 'effect is "allow" or "deny", not \'permit\''
        )

    def test_duplicate_rule_names(self) -> None:
        self.assertRefused(
            '[[rules]]\nname = "r"\neffect = "allow"\npermissions = ["x"]\n\n'
            '[[rules]]\nname = "r"\neffect = "deny"\npermissions = ["x"]\n',
            7,
            "rule 2 has the same name as rule 1: 'r'",
        )

    def rule(self, condition: str) -> str:
        return f'[[rules]]\neffect = "allow"\npermissions = ["x"]\n{condition}\n'

    def test_bad_conditions(self) -> None:
        for condition, line, reason in [
            (
                'when = { "identity.mecanism" = "PLAIN" }',
                4,
                "unknown attribute 'identity.mecanism' (did you mean identity.mechanism?)",
            ),
            (
                '[rules.when]\n"identity.mechanism" = "PLAIN"\n"identity.mfa" = { is = true }',
                6,
                "unknown test 'is' for identity.mfa (known: equals, in, glob, cidr, between, present)",
            ),
            ('when = { "identity.mfa" = "yes" }', 4, 'identity.mfa is true or false, not "yes"'),
            ('when = { "identity.mechanism" = 1 }', 4, "identity.mechanism is text; compare it with a string, not 1"),
            (
                'when = { "context.weekday" = ["mon", "funday"] }',
                4,
                'bad weekday "funday": one of mon, tue, wed, thu, fri, sat, sun',
            ),
            ("when = {}", 4, "a condition table must not be empty"),
            ('when = "always"', 4, 'a condition is a table of tests, not "always"'),
            ('when = { any = { "identity.mfa" = true } }', 4, "'any' is a non-empty array of condition tables"),
            ('unless = { "identity.mfa" = {} }', 4, "the test of identity.mfa is an empty table"),
            ('when = { "identity.mechanism" = { glob = 3 } }', 4, "expected a glob (a string), not 3"),
            (
                'when = { "identity.attributes.a b" = 1 }',
                4,
                "'identity.attributes.a b' is not a valid attribute reference (keys are letters, digits, '_', '-')",
            ),
            (
                'when = { "identity.certificate.san.X400" = "x" }',
                4,
                "'identity.certificate.san.X400': the SAN kinds are DNS, IP, URI and email",
            ),
            (
                'when = { "context.weekday" = { present = true } }',
                4,
                "context.weekday always has a value; 'present' cannot be tested",
            ),
        ]:
            with self.subTest(condition=condition):
                self.assertRefused(self.rule(condition), line, reason)

    def test_bad_cidr(self) -> None:
        self.assertRefused(
            self.rule('[rules.when]\n"context.peer" = { cidr = [\n  "10.0.0.0/8",\n  "10.0.0.1/8",\n] }'),
            7,
            "bad CIDR '10.0.0.1/8' for context.peer: 10.0.0.1/8 has host bits set",
        )
        self.assertRefused(
            self.rule('when = { "context.peer" = { cidr = "office" } }'),
            4,
            "bad CIDR 'office' for context.peer: 'office' does not appear to be an IPv4 or IPv6 network",
        )
        self.assertRefused(
            self.rule('when = { "identity.mfa" = { cidr = "10.0.0.0/8" } }'),
            4,
            "identity.mfa is not an address; 'cidr' tests an IP address (context.peer)",
        )

    def test_bad_time(self) -> None:
        self.assertRefused(
            self.rule('[rules.when]\n"context.time" = { between = [\n"08:00",\n"25:00"] }'),
            7,
            'bad time "25:00": expected HH:MM (00:00 to 23:59, UTC; or 24:00)',
        )
        self.assertRefused(
            self.rule('when = { "context.time" = { between = ["24:00", "06:00"] } }'),
            4,
            'bad time "24:00": expected HH:MM (00:00 to 23:59, UTC)',
        )
        self.assertRefused(
            self.rule('when = { "context.time" = { between = ["8:00"] } }'),
            4,
            'between is ["HH:MM", "HH:MM"] (start included, end excluded, UTC)',
        )
        self.assertRefused(
            self.rule('when = { "context.time" = { between = ["00:00", "24:00"] } }'),
            4,
            "between 00:00 and 24:00 is an empty (or whole-day) range",
        )
        self.assertRefused(
            self.rule('when = { "context.time" = "09:00" }'),
            4,
            'context.time is tested with between = ["HH:MM", "HH:MM"]',
        )
        self.assertRefused(
            self.rule('when = { "context.peer" = { between = ["08:00", "09:00"] } }'),
            4,
            "'between' tests context.time, not context.peer",
        )

    def test_nothing_loaded_after_an_error(self) -> None:
        """A refused file gives no policy at all (there is nothing half-loaded to use)."""
        path = Path(self.mktemp())
        path.write_text(textwrap.dedent(RBAC) + "\n[roles.broken]\ninherits = ['nobody']\n")
        self.assertRaises(PolicyError, Policy.load, path)


class LocateTests(SynchronousTestCase):
    """The line scanner behind semantic errors, on the TOML forms it must get right."""

    def test_forms(self) -> None:
        text = textwrap.dedent(
            '''\
            title = """a
            [not.a.table]
            """  # comment [x]
            'quoted key'.sub = 'v # not a comment'
            [roles."a.b"]
            permissions = [ # comment
              "x", # one
              # between
              "y",
            ]
            [[rules]]
            effect = "allow"
            [[rules]]
            when = { "context.peer" = { cidr = ["10.0.0.0/8",
              "192.168.0.0/16"] }, x = [ { a = 1 }, { b = 2 } ] }
            [rules.unless]
            "identity.mfa" = true
            date = 1979-05-27 07:32:00Z
            '''
        )
        lines = locate(text).lines
        self.assertNotIn(("not", "a", "table"), lines)
        self.assertEqual(lines[("quoted key", "sub")], 4)
        self.assertEqual(lines[("roles", "a.b")], 5)
        self.assertEqual(lines[("roles", "a.b", "permissions", 0)], 7)
        self.assertEqual(lines[("roles", "a.b", "permissions", 1)], 9)
        self.assertEqual(lines[("rules", 0)], 11)
        self.assertEqual(lines[("rules", 1)], 13)
        self.assertEqual(lines[("rules", 1, "when", "context.peer", "cidr", 1)], 15)
        self.assertEqual(lines[("rules", 1, "when", "x", 1, "b")], 15)
        self.assertEqual(lines[("rules", 1, "unless")], 16)
        self.assertEqual(lines[("rules", 1, "unless", "identity.mfa")], 17)
        self.assertEqual(lines[("rules", 1, "unless", "date")], 18)

    def test_not_toml(self) -> None:
        self.assertEqual(locate("[unclosed\n").lines, {})


# -- deciding ------------------------------------------------------------------


class DecisionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = parse(RBAC)

    def test_allow_by_role(self) -> None:
        decision = self.policy.decide(identity("alice", "reader"), "kv.read", "anything/at/all")
        self.assertEqual(
            decision,
            Decision(
                True,
                "alice",
                "kv.read",
                "anything/at/all",
                "kv.read:anything/at/all",
                MatchedRule("role", "reader", None, "allow", "kv.read", Location("policy.toml", 2)),
                "allowed by role reader",
                "PLAIN",
                "192.0.2.10:40000",
            ),
        )
        self.assertTrue(decision)
        self.assertEqual(decision.result, "allow")

    def test_default_deny(self) -> None:
        decision = self.policy.decide(identity("alice", "reader"), "kv.write", "data/x")
        self.assertFalse(decision.allowed)
        self.assertFalse(decision)
        self.assertIsNone(decision.rule)
        self.assertEqual(decision.reason, "no rule matched: denied by default")
        self.assertEqual(decision.permission, "kv.write:data/x")
        self.assertFalse(self.policy.can(identity("nobody"), "kv.read", "x"))

    def test_multi_level_inheritance(self) -> None:
        admin = identity("root", "admin")
        self.assertTrue(self.policy.can(admin, "kv.read", "x"))  # from reader, two levels up
        self.assertTrue(self.policy.can(admin, "kv.write", "data/x"))  # from writer
        self.assertTrue(self.policy.can(admin, "admin.users.delete"))  # its own
        self.assertFalse(self.policy.can(identity("w", "writer"), "admin.users.delete"))  # never downwards
        self.assertFalse(self.policy.can(identity("r", "reader"), "kv.write", "data/x"))

    def test_rule_for_an_inherited_role(self) -> None:
        """A rule for a role applies to every role that inherits it."""
        policy = parse(
            RBAC
            + """\
            [[rules]]
            name = "readers may not list secrets"
            effect = "deny"
            roles = ["reader"]
            permissions = ["kv.list:secret/**"]
            """
        )
        self.assertFalse(policy.can(identity("root", "admin"), "kv.list", "secret/x"))
        self.assertTrue(policy.can(identity("root", "admin"), "kv.list", "public/x"))

    def test_explicit_deny_wins(self) -> None:
        admin = identity("root", "admin")
        decision = self.policy.decide(admin, "kv.write", "data/audit/2025")
        self.assertFalse(decision.allowed)
        self.assertEqual(
            decision.rule,
            MatchedRule("rule", "audit trail is append-only", 1, "deny", "kv.write:data/audit/**", Location("policy.toml", 18)),
        )
        self.assertEqual(decision.reason, 'denied by rule 1 "audit trail is append-only"')
        self.assertTrue(self.policy.can(admin, "kv.write", "data/auditing"))

    def test_deny_wins_whatever_the_order(self) -> None:
        """A deny written before the allow, or after it, wins over an allow rule too."""
        for deny_first in (True, False):
            deny = '[[rules]]\neffect = "deny"\npermissions = ["kv.read:secret/**"]\n'
            allow = '[[rules]]\neffect = "allow"\npermissions = ["kv.read"]\n'
            policy = parse(deny + allow if deny_first else allow + deny)
            with self.subTest(deny_first=deny_first):
                self.assertFalse(policy.can(identity(), "kv.read", "secret/x"))
                self.assertTrue(policy.can(identity(), "kv.read", "public/x"))

    def test_first_deny_is_reported(self) -> None:
        policy = parse(
            '[[rules]]\nname = "one"\neffect = "deny"\npermissions = ["*"]\n'
            '[[rules]]\nname = "two"\neffect = "deny"\npermissions = ["kv.*"]\n'
        )
        rule = policy.decide(identity(), "kv.read").rule
        assert rule is not None
        self.assertEqual((rule.name, rule.number, rule.label), ("one", 1, 'rule 1 "one"'))

    def test_rules_without_roles_are_for_everyone(self) -> None:
        policy = parse('[[rules]]\neffect = "allow"\npermissions = ["status.read"]\n')
        self.assertTrue(policy.can(identity("anonymous", mechanism="ANONYMOUS"), "status.read"))
        policy = parse('[[rules]]\neffect = "allow"\npermissions = ["status.read"]\nwhen = { "identity.anonymous" = false }\n')
        self.assertFalse(policy.can(identity("anonymous", mechanism="ANONYMOUS"), "status.read"))
        self.assertTrue(policy.can(identity("alice"), "status.read"))

    def test_unknown_roles_give_nothing(self) -> None:
        decision = self.policy.decide(identity("alice", "superuser", "root"), "kv.read", "x")
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.reason, "no rule matched: denied by default (roles not in the policy: root, superuser)")

    def test_resource_patterns_need_a_resource(self) -> None:
        writer = identity("w", "writer")
        self.assertFalse(self.policy.can(writer, "kv.write"))
        self.assertFalse(self.policy.can(writer, "kv.write", ""))
        self.assertTrue(self.policy.can(writer, "kv.read"))  # no pattern: any resource, and none

    def test_malformed_requests_are_denied(self) -> None:
        root = identity("root", "admin")
        for action, resource, reason in [
            ("kv.*", "data/x", "'kv.*' is not a valid action name: denied"),
            ("", None, "'' is not a valid action name: denied"),
            ("kv.write", "data/../etc/passwd", "resource 'data/../etc/passwd' has a '.' or '..' segment: denied"),
            ("kv.write", "data/./x", "resource 'data/./x' has a '.' or '..' segment: denied"),
            ("kv.write", "data//audit/x", "resource 'data//audit/x' has an empty segment: denied"),
            ("kv.write", "data/audit/", "resource 'data/audit/' has an empty segment: denied"),
            ("kv.write", "//data/x", "resource '//data/x' has an empty segment: denied"),
            ("kv.read", 3, "the resource is not a string: denied"),
        ]:
            with self.subTest(action=action, resource=resource):
                decision = self.policy.decide(root, action, resource)  # type: ignore[arg-type]
                self.assertEqual((decision.allowed, decision.rule, decision.reason), (False, None, reason))

    def test_errors_deny(self) -> None:
        """An exception while deciding is a deny and a logged failure, never an allow."""

        class Exploding(Mapping[str, Any]):
            def __getitem__(self, key: str) -> Any:
                raise RuntimeError("boom")

            def __iter__(self) -> Iterator[str]:
                return iter(["x"])

            def __len__(self) -> int:
                return 1

        policy = parse('[[rules]]\neffect = "allow"\npermissions = ["kv.read"]\nwhen = { "identity.attributes.x" = 1 }\n')
        events = Events(self)
        decision = policy.decide(Identity("alice", "PLAIN", "192.0.2.1:1", attributes=Exploding()), "kv.read", "x")
        self.assertEqual((decision.allowed, decision.reason), (False, "internal error while evaluating the policy: denied"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([e["result"] for e in events], ["deny"])


class RequireTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = parse(RBAC)

    def test_require_allowed(self) -> None:
        decision = self.policy.require(identity("w", "writer"), "kv.write", "data/x")
        self.assertTrue(decision.allowed)

    def test_require_denied(self) -> None:
        with self.assertRaises(AuthorizationDenied) as caught:
            self.policy.require(identity("root", "admin"), "kv.delete", "data/audit/1")
        e = caught.exception
        self.assertEqual(
            (e.identity, e.action, e.resource, e.permission), ("root", "kv.delete", "data/audit/1", "kv.delete:data/audit/1")
        )
        self.assertEqual(str(e), "root may not kv.delete data/audit/1: missing permission kv.delete:data/audit/1")
        # The policy's internals stay out of what a peer may be shown.
        self.assertNotIn("audit trail", str(e))
        self.assertNotIn("policy.toml", str(e))
        self.assertNotIn("audit trail", repr(e))
        assert e.decision is not None
        self.assertEqual(e.decision.rule and e.decision.rule.name, "audit trail is append-only")
        self.assertIsInstance(e, SecurenetError)

    def test_require_without_resource(self) -> None:
        with self.assertRaises(AuthorizationDenied) as caught:
            self.policy.require(identity("bob"), "admin.stop")
        self.assertEqual(str(caught.exception), "bob may not admin.stop: missing permission admin.stop")

    def test_identity_side_helper(self) -> None:
        self.assertTrue(can(identity("w", "writer"), "kv.write", "data/x", self.policy))
        self.assertFalse(can(identity("w", "writer"), "kv.write", "other/x", self.policy))


# -- patterns --------------------------------------------------------------------


class ActionPatternTests(SynchronousTestCase):
    def test_matching(self) -> None:
        actions = ["admin", "admin.stop", "admin.users.delete", "kv.read", "kv.reader", "a.b.c", "a.b.x.c"]
        for pattern, expected in [
            ("kv.read", ["kv.read"]),
            ("admin.*", ["admin.stop", "admin.users.delete"]),
            ("*", actions),
            ("a.*.c", ["a.b.c", "a.b.x.c"]),
            ("*.read", ["kv.read"]),
        ]:
            with self.subTest(pattern=pattern):
                compiled = ActionPattern.parse(pattern)
                self.assertEqual([a for a in actions if compiled.matches(a)], expected)

    def test_case_sensitive(self) -> None:
        self.assertFalse(ActionPattern.parse("kv.read").matches("KV.READ"))


class ResourcePatternTests(SynchronousTestCase):
    def matching(self, pattern: str, resources: list[str]) -> list[str]:
        compiled = ResourcePattern.parse(pattern)
        return [r for r in resources if compiled.matches(r)]

    def test_exact(self) -> None:
        self.assertEqual(self.matching("data/x", ["data/x", "data/x/y", "data", "data/xy", "Data/x"]), ["data/x"])

    def test_star(self) -> None:
        resources = ["data", "data/", "data/x", "data/x/y", "data/report.txt", "data/r.txt", "database/x"]
        self.assertEqual(self.matching("data/*", resources), ["data/x", "data/report.txt", "data/r.txt"])
        self.assertEqual(self.matching("data/r*.txt", resources), ["data/report.txt", "data/r.txt"])
        self.assertEqual(self.matching("*", ["x", "", "x/y"]), ["x"])

    def test_globstar(self) -> None:
        resources = ["data", "data/x", "data/x/y", "database", "other/data/x", "data//x"]
        self.assertEqual(self.matching("data/**", resources), ["data", "data/x", "data/x/y", "data//x"])
        self.assertEqual(self.matching("data/*/**", resources), ["data/x", "data/x/y"])
        self.assertEqual(self.matching("**/x", resources), ["data/x", "other/data/x", "data//x"])
        self.assertEqual(self.matching("a/**/b", ["a/b", "a/x/b", "a/x/y/b", "a/b/c"]), ["a/b", "a/x/b", "a/x/y/b"])
        self.assertEqual(self.matching("**", ["x", "x/y/z"]), ["x", "x/y/z"])

    def test_leading_slash(self) -> None:
        self.assertEqual(self.matching("/api/*", ["/api/x", "api/x", "/api/x/y"]), ["/api/x"])

    def test_empty_segments_never_match_a_star(self) -> None:
        """data//x normalizes to data/x: a pattern that matches one must match the other."""
        self.assertEqual(self.matching("data/*/x", ["data//x", "data/y/x"]), ["data/y/x"])

    def test_regex_characters_are_literal(self) -> None:
        self.assertEqual(self.matching("a.b/(x)+", ["a.b/(x)+", "axb/(x)+", "a.b/xx"]), ["a.b/(x)+"])

    def test_permission_without_pattern(self) -> None:
        permission = Permission.parse("kv.read")
        self.assertTrue(permission.matches("kv.read", "any/thing"))
        self.assertTrue(permission.matches("kv.read", None))
        self.assertFalse(permission.matches("kv.write", None))

    def test_glob(self) -> None:
        glob = Glob.parse("spiffe://example.org/device/*")
        self.assertTrue(glob.matches("spiffe://example.org/device/d1"))
        self.assertFalse(glob.matches("spiffe://example.org/device/d1/x"))
        self.assertFalse(glob.matches("spiffe://example.org.evil/device/d1"))
        self.assertFalse(glob.matches("spiffe://evil.org/device/d1"))
        self.assertRaises(PatternError, Glob.parse, "a**")


class TemplateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = parse(
            """\
            [roles.user]
            permissions = ["kv.write:home/{identity.avatar_id}/**", "kv.read:teams/{identity.attributes.team}/*"]

            [[rules]]
            name = "devices"
            effect = "allow"
            permissions = ["telemetry.publish:telemetry/{identity.spiffe_path}/*"]

            [[rules]]
            name = "per-OU inbox"
            effect = "allow"
            permissions = ["inbox.read:ou/{identity.certificate.subject.OU}"]

            [[rules]]
            name = "no one writes their own lock file"
            effect = "deny"
            permissions = ["kv.write:home/{identity.avatar_id}/.lock-{identity.attributes.team}"]
            """
        )

    def test_avatar_id(self) -> None:
        self.assertTrue(self.policy.can(identity("alice", "user"), "kv.write", "home/alice/notes"))
        self.assertTrue(self.policy.can(identity("alice", "user"), "kv.write", "home/alice"))
        self.assertFalse(self.policy.can(identity("alice", "user"), "kv.write", "home/bob/notes"))
        self.assertFalse(self.policy.can(identity("alice", "user"), "kv.write", "home/alice2/notes"))

    def test_store_attribute(self) -> None:
        alice = identity("alice", "user", attributes={"team": "blue"})
        self.assertTrue(self.policy.can(alice, "kv.read", "teams/blue/plan"))
        self.assertFalse(self.policy.can(alice, "kv.read", "teams/red/plan"))
        self.assertFalse(self.policy.can(identity("bob", "user"), "kv.read", "teams/None/plan"))  # no team: nothing
        numbered = identity("carol", "user", attributes={"team": 7})
        self.assertTrue(self.policy.can(numbered, "kv.read", "teams/7/plan"))
        flagged = identity("dave", "user", attributes={"team": True})
        self.assertFalse(self.policy.can(flagged, "kv.read", "teams/True/plan"))

    def test_spiffe_path(self) -> None:
        pump = device("spiffe://example.org/site1/pump7")
        self.assertTrue(self.policy.can(pump, "telemetry.publish", "telemetry/site1/pump7/temperature"))
        self.assertFalse(self.policy.can(pump, "telemetry.publish", "telemetry/site1/pump7/a/b"))
        self.assertFalse(self.policy.can(pump, "telemetry.publish", "telemetry/site1/pump8/temperature"))
        self.assertFalse(self.policy.can(pump, "telemetry.publish", "telemetry/site1/temperature"))
        self.assertFalse(self.policy.can(identity("alice"), "telemetry.publish", "telemetry/site1/pump7/x"))

    def test_subject_attribute(self) -> None:
        one = identity("x", mechanism="EXTERNAL", cert=certificate("CN=x,OU=ops"))
        self.assertTrue(self.policy.can(one, "inbox.read", "ou/ops"))
        self.assertFalse(self.policy.can(one, "inbox.read", "ou/dev"))
        # Two OUs: which one would be meant is ambiguous, so neither is.
        two = identity("y", mechanism="EXTERNAL", cert=certificate("CN=y,OU=ops,OU=dev"))
        self.assertFalse(self.policy.can(two, "inbox.read", "ou/ops"))
        self.assertFalse(self.policy.can(two, "inbox.read", "ou/dev"))

    def test_wildcards_in_values_are_literal(self) -> None:
        for name in ["*", "**", "a*"]:
            with self.subTest(name=name):
                sly = identity(name, "user")
                self.assertFalse(self.policy.can(sly, "kv.write", "home/bob/notes"))
                self.assertFalse(self.policy.can(sly, "kv.write", "home/a/notes"))
                self.assertTrue(self.policy.can(sly, "kv.write", f"home/{name}/notes"))
        star_team = identity("eve", "user", attributes={"team": "*"})
        self.assertFalse(self.policy.can(star_team, "kv.read", "teams/blue/plan"))

    def test_separators_and_dot_segments_in_values_do_not_widen(self) -> None:
        for name in ["bob/x", "bob/", "/bob", "..", ".", "x/../bob", ""]:
            with self.subTest(name=name):
                sly = identity(name, "user")
                self.assertFalse(self.policy.can(sly, "kv.write", "home/bob/x/secret"))
                self.assertFalse(self.policy.can(sly, "kv.write", "home/bob/secret"))
                self.assertFalse(self.policy.can(sly, "kv.write", "home/x/secret"))
                self.assertFalse(self.policy.can(sly, "kv.write", "home//secret"))
        for team in ["blue/..", "blue/x", ""]:
            with self.subTest(team=team):
                self.assertFalse(self.policy.can(identity("eve", "user", attributes={"team": team}), "kv.read", "teams/blue/x"))

    def test_spiffe_paths_that_would_widen(self) -> None:
        for spiffe in [
            "spiffe://example.org/site1/../site2",
            "spiffe://example.org/site1//pump",
            "spiffe://example.org/site1/*",
            "spiffe://example.org",
        ]:
            with self.subTest(spiffe=spiffe):
                sly = device(spiffe)
                for resource in ["telemetry/site2/x", "telemetry/site1/pump/x", "telemetry/site1/x", "telemetry/x"]:
                    self.assertFalse(self.policy.can(sly, "telemetry.publish", resource))

    def test_deny_templates_fail_closed(self) -> None:
        """A deny whose template cannot be filled safely applies as if the value were anything."""
        safe = identity("alice", "user", attributes={"team": "blue"})
        self.assertFalse(self.policy.can(safe, "kv.write", "home/alice/.lock-blue"))
        self.assertTrue(self.policy.can(safe, "kv.write", "home/alice/.lock-red"))
        unknown_team = identity("alice", "user")
        decision = self.policy.decide(unknown_team, "kv.write", "home/alice/.lock-anything")
        self.assertEqual((decision.allowed, decision.rule and decision.rule.name), (False, "no one writes their own lock file"))
        self.assertTrue(self.policy.can(unknown_team, "kv.write", "home/alice/notes"))
        for team in ["blue/x", "..", ""]:
            with self.subTest(team=team):
                unsafe = identity("alice", "user", attributes={"team": team})
                self.assertFalse(self.policy.can(unsafe, "kv.write", "home/alice/.lock-anything"))
                self.assertTrue(self.policy.can(unsafe, "kv.write", "home/alice/notes"))

    def test_deny_path_templates_fail_closed(self) -> None:
        policy = parse(
            '[[rules]]\neffect = "allow"\npermissions = ["cfg.read:cfg/**"]\n'
            '[[rules]]\neffect = "deny"\npermissions = ["cfg.read:cfg/{identity.spiffe_path}/secret"]\n'
        )
        pump = device("spiffe://example.org/site1/pump7")
        self.assertFalse(policy.can(pump, "cfg.read", "cfg/site1/pump7/secret"))
        self.assertTrue(policy.can(pump, "cfg.read", "cfg/site1/pump8/secret"))
        for unknown in [identity("alice"), device("spiffe://example.org/a/../b")]:
            with self.subTest(identity=unknown):
                self.assertFalse(policy.can(unknown, "cfg.read", "cfg/site1/pump8/secret"))
                self.assertFalse(policy.can(unknown, "cfg.read", "cfg/secret"))
                self.assertTrue(policy.can(unknown, "cfg.read", "cfg/site1/public"))


# -- conditions ------------------------------------------------------------------


def rule(when: str, *, effect: str = "allow", permission: str = "x.do", extra: str = "") -> str:
    return f'[[rules]]\neffect = "{effect}"\npermissions = ["{permission}"]\n{extra}when = {when}\n'


class ConditionTests(SynchronousTestCase):
    def test_store_attributes(self) -> None:
        policy = parse(
            rule('{ "identity.attributes.department" = ["finance", "audit"], "identity.attributes.clearance.level" = 3 }')
        )
        self.assertTrue(policy.can(identity(attributes={"department": "audit", "clearance": {"level": 3}}), "x.do"))
        self.assertFalse(policy.can(identity(attributes={"department": "sales", "clearance": {"level": 3}}), "x.do"))
        self.assertFalse(policy.can(identity(attributes={"department": "audit", "clearance": {"level": 2}}), "x.do"))
        self.assertFalse(policy.can(identity(attributes={"department": "audit", "clearance": {"level": "3"}}), "x.do"))
        self.assertFalse(policy.can(identity(attributes={"department": "audit", "clearance": 3}), "x.do"))
        self.assertFalse(policy.can(identity(), "x.do"))

    def test_types_are_strict(self) -> None:
        policy = parse(rule('{ "identity.attributes.admin" = true }'))
        self.assertTrue(policy.can(identity(attributes={"admin": True}), "x.do"))
        self.assertFalse(policy.can(identity(attributes={"admin": 1}), "x.do"))
        self.assertFalse(policy.can(identity(attributes={"admin": "true"}), "x.do"))
        policy = parse(rule('{ "identity.attributes.level" = 1 }'))
        self.assertFalse(policy.can(identity(attributes={"level": True}), "x.do"))
        self.assertTrue(policy.can(identity(attributes={"level": 1.0}), "x.do"))

    def test_multi_valued_attribute(self) -> None:
        policy = parse(rule('{ "identity.attributes.groups" = "ops" }'))
        self.assertTrue(policy.can(identity(attributes={"groups": ["dev", "ops"]}), "x.do"))
        self.assertFalse(policy.can(identity(attributes={"groups": ["dev"]}), "x.do"))
        self.assertFalse(policy.can(identity(attributes={"groups": []}), "x.do"))

    def test_certificate_subject(self) -> None:
        policy = parse(
            rule('{ "identity.certificate.subject.OU" = "devices", "identity.certificate.common_name" = { glob = "pump*" } }')
        )
        self.assertTrue(policy.can(device("spiffe://example.org/a"), "x.do"))
        self.assertTrue(policy.can(identity(cert=certificate("CN=pump1,OU=ops,OU=devices")), "x.do"))
        self.assertFalse(policy.can(identity(cert=certificate("CN=pump1,OU=ops")), "x.do"))
        self.assertFalse(policy.can(identity(cert=certificate("CN=valve1,OU=devices")), "x.do"))
        self.assertFalse(policy.can(identity(), "x.do"))
        # An escaped comma is part of the value, not a new attribute.
        self.assertFalse(policy.can(identity(cert=certificate("CN=pump1\\,OU=devices")), "x.do"))

    def test_certificate_sans(self) -> None:
        policy = parse(rule('{ "identity.certificate.san.DNS" = { glob = "*.devices.example.org" } }'))
        cert = certificate("CN=x", ("DNS:pump7.devices.example.org", "IP:10.0.0.7"))
        self.assertTrue(policy.can(identity(cert=cert), "x.do"))
        self.assertFalse(policy.can(identity(cert=certificate("CN=x", ("DNS:devices.example.org.evil",))), "x.do"))
        policy = parse(rule('{ "identity.certificate.sans" = "IP:10.0.0.7" }'))
        self.assertTrue(policy.can(identity(cert=cert), "x.do"))

    def test_spiffe_id(self) -> None:
        policy = parse(rule('{ "identity.spiffe_id" = { glob = "spiffe://example.org/site1/*" } }'))
        self.assertTrue(policy.can(device("spiffe://example.org/site1/pump7"), "x.do"))
        self.assertFalse(policy.can(device("spiffe://example.org/site2/pump7"), "x.do"))
        self.assertFalse(policy.can(device("spiffe://other.org/site1/pump7"), "x.do"))
        # Two SPIFFE IDs are ambiguous: none.
        two = certificate("CN=x", ("URI:spiffe://example.org/site1/a", "URI:spiffe://example.org/site1/b"))
        self.assertFalse(policy.can(identity(cert=two), "x.do"))

    def test_spiffe_parsing(self) -> None:
        parsed = parse_spiffe_id("spiffe://example.org/ns/prod/sa/web")
        assert parsed is not None
        self.assertEqual(
            (parsed.trust_domain, parsed.path, str(parsed)),
            ("example.org", "ns/prod/sa/web", "spiffe://example.org/ns/prod/sa/web"),
        )
        for bad in [
            "spiffe://Example.org/x",
            "spiffe://example.org/",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a?b",
            "https://example.org/x",
            "spiffe:///x",
        ]:
            with self.subTest(bad=bad):
                self.assertIsNone(parse_spiffe_id(bad))
        self.assertIsNone(spiffe_id_of(None))
        self.assertEqual(spiffe_id_of(certificate(sans=("DNS:x", "URI:spiffe://td/p"))), parse_spiffe_id("spiffe://td/p"))

    def test_token_scopes(self) -> None:
        policy = parse(rule('{ "identity.scopes" = "kv:write" }'))
        self.assertTrue(policy.can(identity(mechanism="OAUTHBEARER", scopes=("kv:read", "kv:write")), "x.do"))
        self.assertFalse(policy.can(identity(mechanism="OAUTHBEARER", scopes=("kv:read",)), "x.do"))
        self.assertFalse(policy.can(identity(), "x.do"))

    def test_mechanism_and_mfa(self) -> None:
        """Only certificate- or MFA-authenticated sessions may admin.*."""
        policy = parse(
            '[roles.admin]\npermissions = ["admin.*"]\n'
            + rule(
                '{ any = [ { "identity.mechanism" = "EXTERNAL" }, { "identity.mfa" = true } ] }',
                effect="deny",
                permission="admin.*",
            ).replace("when =", "unless =")
        )
        self.assertFalse(policy.can(identity("root", "admin"), "admin.stop"))
        self.assertTrue(policy.can(identity("root", "admin", second_factor="TOTP"), "admin.stop"))
        self.assertTrue(policy.can(identity("root", "admin", mechanism="EXTERNAL"), "admin.stop"))
        self.assertFalse(policy.can(identity("root", "admin", mechanism="SCRAM-SHA-256-PLUS"), "admin.stop"))

    def test_time_of_day_with_a_fake_clock(self) -> None:
        clock = Clock()
        policy = parse(
            rule(
                '{ "context.time" = { between = ["08:00", "18:00"] }, "context.weekday" = ["mon", "tue", "wed", "thu", "fri"] }'
            ),
            clock,
        )
        monday = MONDAY_0930.timestamp()
        for moment, allowed in [
            (monday, True),
            (monday - 90 * 60 + 0, True),  # 08:00 is included
            (monday - 90 * 60 - 1, False),  # 07:59:59
            (monday + 510 * 60 - 1, True),  # 17:59:59
            (monday + 510 * 60, False),  # 18:00 is excluded
            (monday + 5 * 86400, False),  # Saturday 09:30
        ]:
            clock.advance(moment - clock.seconds())
            with self.subTest(at=datetime.datetime.fromtimestamp(moment, datetime.UTC)):
                self.assertEqual(policy.can(identity(), "x.do"), allowed)

    def test_time_wraps_past_midnight(self) -> None:
        policy = parse(rule('{ "context.time" = { between = ["22:00", "06:00"] } }'))
        day = MONDAY_0930.replace(hour=0, minute=0)
        for hour, minute, allowed in [
            (22, 0, True),
            (23, 59, True),
            (0, 0, True),
            (5, 59, True),
            (6, 0, False),
            (21, 59, False),
            (12, 0, False),
        ]:
            with self.subTest(time=f"{hour}:{minute}"):
                context = Context(now=day.replace(hour=hour, minute=minute))
                self.assertEqual(policy.can(identity(), "x.do", None, context), allowed)

    def test_context_time_overrides_the_clock(self) -> None:
        policy = parse(rule('{ "context.weekday" = "sun" }'))
        sunday = datetime.datetime(2025, 1, 5, 12, 0)  # naive: taken as UTC
        self.assertTrue(policy.can(identity(), "x.do", None, Context(now=sunday)))
        in_tokyo = datetime.datetime(2025, 1, 6, 8, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=9)))
        self.assertTrue(policy.can(identity(), "x.do", None, Context(now=in_tokyo)))  # Sunday 23:00 UTC
        self.assertFalse(policy.can(identity(), "x.do", None, Context(now=MONDAY_0930)))

    def test_peer_cidr(self) -> None:
        policy = parse(rule('{ "context.peer" = { cidr = ["10.0.0.0/8", "2001:db8::/32"] } }'))
        for peer, allowed in [
            ("10.1.2.3:5000", True),
            ("11.1.2.3:5000", False),
            ("[2001:db8::7]:5000", True),
            ("[2001:db9::7]:5000", False),
            ("[::ffff:10.0.0.1]:5000", True),
            ("10.0.0.1", True),
            ("UNIXAddress('/tmp/s')", False),
            ("", False),
        ]:
            with self.subTest(peer=peer):
                self.assertEqual(policy.can(identity(peer=peer), "x.do"), allowed)
        # The application knows better (a proxy's client address):
        self.assertTrue(policy.can(identity(peer="192.0.2.1:5"), "x.do", None, Context(peer="10.9.9.9")))

    def test_unknown_peer_denied_by_negation(self) -> None:
        policy = parse(
            '[[rules]]\neffect = "allow"\npermissions = ["admin.*"]\n'
            + rule('{ not = { "context.peer" = { cidr = "10.0.0.0/8" } } }', effect="deny", permission="admin.*")
        )
        self.assertTrue(policy.can(identity(peer="10.0.0.5:1"), "admin.stop"))
        self.assertFalse(policy.can(identity(peer="192.0.2.1:1"), "admin.stop"))
        self.assertFalse(policy.can(identity(peer="somewhere"), "admin.stop"))

    def test_resource_and_context_attributes(self) -> None:
        policy = parse(
            rule(
                '{ "resource.attributes.owner" = "alice", "context.attributes.channel" = { present = true }, '
                '"resource.name" = { glob = "docs/*" } }'
            )
        )
        context = Context(resource_attributes={"owner": "alice"}, attributes={"channel": "web"})
        self.assertTrue(policy.can(identity(), "x.do", "docs/a", context))
        self.assertFalse(policy.can(identity(), "x.do", "other/a", context))
        self.assertFalse(
            policy.can(identity(), "x.do", "docs/a", Context(resource_attributes={"owner": "bob"}, attributes={"channel": "web"}))
        )
        self.assertFalse(policy.can(identity(), "x.do", "docs/a", Context(resource_attributes={"owner": "alice"})))

    def test_present_and_absent(self) -> None:
        policy = parse(rule('{ "identity.spiffe_id" = { present = false } }'))
        self.assertTrue(policy.can(identity(), "x.do"))
        self.assertFalse(policy.can(device("spiffe://td/x"), "x.do"))

    def test_all_any_not(self) -> None:
        policy = parse(
            rule(
                '{ all = [ { "identity.mechanism" = "PLAIN" }, { any = [ { "identity.attributes.a" = 1 }, '
                '{ "identity.attributes.b" = 2 } ] } ], not = { "identity.attributes.c" = 3 } }'
            )
        )
        self.assertTrue(policy.can(identity(attributes={"a": 1}), "x.do"))
        self.assertTrue(policy.can(identity(attributes={"b": 2}), "x.do"))
        self.assertFalse(policy.can(identity(attributes={"a": 1, "c": 3}), "x.do"))
        self.assertFalse(policy.can(identity(attributes={}), "x.do"))
        self.assertFalse(policy.can(identity(mechanism="EXTERNAL", attributes={"a": 1}), "x.do"))

    def test_peer_address(self) -> None:
        self.assertEqual(str(peer_address("[fe80::1%eth0]:443")), "fe80::1%eth0")
        self.assertIsNone(peer_address("example.org:443"))
        self.assertIsNone(peer_address(None))


# -- explanations and audit --------------------------------------------------------


class ExplainTests(SynchronousTestCase):
    def test_allow(self) -> None:
        policy = parse(RBAC)
        self.assertEqual(
            policy.decide(identity("w", "writer"), "kv.write", "data/x").explain(),
            "ALLOW: w may kv.write data/x\n"
            "rule: role writer, permission kv.write:data/** (policy.toml:6)\n"
            "reason: allowed by role writer",
        )

    def test_deny_by_rule_with_conditions(self) -> None:
        policy = parse(
            '[roles.admin]\npermissions = ["admin.*"]\n\n[[rules]]\nname = "strong admin"\neffect = "deny"\n'
            'permissions = ["admin.*"]\nunless = { any = [ { "identity.mechanism" = "EXTERNAL" }, { "identity.mfa" = true } ] }\n'
        )
        self.assertEqual(
            policy.decide(identity("root", "admin"), "admin.stop").explain(),
            "DENY: root may not admin.stop (missing permission admin.stop)\n"
            'rule: rule 1 "strong admin", permission admin.* (policy.toml:7)\n'
            'reason: denied by rule 1 "strong admin" (unless identity.mechanism = "EXTERNAL" or identity.mfa = true)',
        )

    def test_default_deny(self) -> None:
        policy = parse(RBAC)
        self.assertEqual(
            policy.decide(identity("bob"), "kv.write", "other/x").explain(),
            "DENY: bob may not kv.write other/x (missing permission kv.write:other/x)\n"
            "rule: none\n"
            "reason: no rule matched: denied by default",
        )

    def test_default_deny_names_rules_whose_conditions_failed(self) -> None:
        policy = parse(
            '[[rules]]\nname = "office hours"\neffect = "allow"\npermissions = ["report.run"]\n'
            'when = { "context.time" = { between = ["08:00", "18:00"] } }\n'
        )
        night = Context(now=MONDAY_0930.replace(hour=23))
        self.assertEqual(
            policy.decide(identity("bob", "intern"), "report.run", None, night).reason,
            'no rule matched: denied by default (rule 1 "office hours" covers report.run but when '
            "context.time between 08:00 and 18:00 UTC does not hold; roles not in the policy: intern)",
        )

    def test_summary(self) -> None:
        policy = parse(
            RBAC
            + """\
            [[rules]]
            effect = "allow"
            roles = ["writer", "reader"]
            permissions = ["report.run", "report.read:reports/*"]
            when = { "context.peer" = { cidr = "10.0.0.0/8" }, "identity.attributes.team" = { present = true, glob = "b*" } }
            """
        )
        self.assertEqual(
            policy.summary(),
            "policy.toml: ok: 3 roles, 2 rules\n"
            "role reader (line 1): kv.read, kv.list\n"
            "role writer (line 4; inherits reader): kv.write:data/**\n"
            "  effective: kv.write:data/**, kv.read, kv.list\n"
            "role admin (line 8; inherits writer): admin.*, kv.delete:data/**\n"
            "  effective: admin.*, kv.delete:data/**, kv.read, kv.list, kv.write:data/**\n"
            'rule 1 "audit trail is append-only" (line 15): deny kv.write:data/audit/**, kv.delete:data/audit/** for anyone\n'
            "rule 2 (line 19): allow report.run, report.read:reports/* for roles reader, writer when "
            'context.peer in network 10.0.0.0/8 and (identity.attributes.team present and identity.attributes.team glob "b*")',
        )


class AuditTests(SynchronousTestCase):
    def test_deny_is_a_warning(self) -> None:
        events = Events(self)
        parse(RBAC).decide(identity("root", "admin", mechanism="SCRAM-SHA-256-PLUS"), "kv.delete", "data/audit/1")
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["log_namespace"], "securenet.authz")
        self.assertEqual(
            {
                k: event[k]
                for k in (
                    "result",
                    "identity",
                    "action",
                    "resource",
                    "permission",
                    "rule",
                    "rule_location",
                    "reason",
                    "mechanism",
                    "peer",
                )
            },
            {
                "result": "deny",
                "identity": "root",
                "action": "kv.delete",
                "resource": "data/audit/1",
                "permission": "kv.delete:data/audit/1",
                "rule": 'rule 1 "audit trail is append-only"',
                "rule_location": "policy.toml:18",
                "reason": 'denied by rule 1 "audit trail is append-only"',
                "mechanism": "SCRAM-SHA-256-PLUS",
                "peer": "192.0.2.10:40000",
            },
        )

    def test_default_deny_event(self) -> None:
        events = Events(self)
        self.assertFalse(parse(RBAC).can(identity("bob"), "kv.read"))
        [event] = events
        self.assertEqual(
            (event["log_level"], event["rule"], event["rule_location"], event["reason"]),
            (LogLevel.warn, None, None, "no rule matched: denied by default"),
        )

    def test_reusable(self) -> None:
        """A decision is reusable unless a condition read the time (whatever its answer)."""
        clock = lambda: 0.0  # noqa: E731 - 1970-01-01 00:00 UTC, a Thursday
        timed = parse(
            '[[rules]]\neffect = "allow"\npermissions = ["kv.read"]\n'
            'when = { "context.weekday" = "thu" }\n'
            '[[rules]]\neffect = "allow"\npermissions = ["kv.list"]\n',
            clock=clock,
        )
        read = timed.decide(identity("a"), "kv.read", audit=False)
        self.assertEqual((read.allowed, read.reusable), (True, False))
        listed = timed.decide(identity("a"), "kv.list", audit=False)
        self.assertEqual((listed.allowed, listed.reusable), (True, True))
        self.assertTrue(parse(RBAC).decide(identity("w", "writer"), "kv.read", audit=False).reusable)
        self.assertTrue(parse(RBAC).decide(identity("w"), "not an action", audit=False).reusable)

    def test_allow_is_debug(self) -> None:
        """Allows are debug events: not emitted at securenet's default level (info), emitted at debug."""
        events = Events(self)
        parse(RBAC).require(identity("w", "writer"), "kv.write", "data/x")
        self.assertEqual(list(events), [])
        debug_events(self)
        parse(RBAC).require(identity("w", "writer"), "kv.write", "data/x")
        [event] = events
        self.assertEqual((event["log_level"], event["result"], event["rule"]), (LogLevel.debug, "allow", "role writer"))

    def test_allow_at_info(self) -> None:
        events = Events(self)
        parse('[audit]\nlog_allows = "info"\n' + RBAC).can(identity("w", "writer"), "kv.read")
        [event] = events
        self.assertEqual((event["log_level"], event["result"]), (LogLevel.info, "allow"))

    def test_no_audit(self) -> None:
        events = Events(self)
        parse(RBAC).decide(identity("bob"), "kv.read", audit=False)
        self.assertEqual(len(events), 0)

    def test_require_denied_is_logged(self) -> None:
        events = Events(self)
        self.assertRaises(AuthorizationDenied, parse(RBAC).require, identity("bob"), "kv.read")
        self.assertEqual([e["result"] for e in events], ["deny"])


# -- the decorator -------------------------------------------------------------------


class Handler:
    """A protocol-like object with a policy and an identity, and protected handlers."""

    def __init__(self, policy: Any, who: Identity | None) -> None:
        self.policy = policy
        self.identity = who
        self.calls: list[tuple[str, ...]] = []

    @requires("kv.write", resource=lambda self, key, value: f"data/{key}")
    def set(self, key: str, value: str) -> str:
        self.calls.append(("set", key, value))
        return "OK"

    @requires("admin.stop")
    def stop(self) -> None:
        self.calls.append(("stop",))

    @requires(
        "kv.read", resource=lambda self, key, **kw: f"data/{key}", context=lambda self, key, **kw: Context(peer=kw.get("via"))
    )
    def get(self, key: str, **kw: Any) -> str:
        self.calls.append(("get", key))
        return "value"

    @requires("kv.write", resource=lambda self, key: f"data/{key}")
    async def delete_later(self, key: str) -> str:
        self.calls.append(("delete", key))
        return "deleted"


class DecoratorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = parse(
            RBAC + '[[rules]]\neffect = "allow"\npermissions = ["kv.read"]\nwhen = { "context.peer" = { cidr = "10.0.0.0/8" } }\n'
        )

    def test_allowed_runs(self) -> None:
        handler = Handler(self.policy, identity("w", "writer"))
        self.assertEqual(handler.set("x", "1"), "OK")
        self.assertEqual(handler.calls, [("set", "x", "1")])

    def test_denied_raises_and_does_not_run(self) -> None:
        handler = Handler(self.policy, identity("r", "reader"))
        events = Events(self)
        with self.assertRaises(AuthorizationDenied) as caught:
            handler.set("x", "1")
        self.assertEqual(caught.exception.permission, "kv.write:data/x")
        self.assertEqual(str(caught.exception), "r may not kv.write data/x: missing permission kv.write:data/x")
        self.assertRaises(AuthorizationDenied, handler.stop)
        self.assertEqual(handler.calls, [])
        self.assertEqual([e["result"] for e in events], ["deny", "deny"])

    def test_keyword_arguments_and_context(self) -> None:
        handler = Handler(
            parse(
                '[[rules]]\neffect = "allow"\npermissions = ["kv.read:data/*"]\n'
                'when = { "context.peer" = { cidr = "10.0.0.0/8" } }\n'
            ),
            identity("r"),
        )
        self.assertEqual(handler.get(key="k", via="10.1.1.1"), "value")
        self.assertRaises(AuthorizationDenied, handler.get, "k", via="192.0.2.1")
        self.assertEqual(handler.calls, [("get", "k")])

    def test_policy_from_the_factory(self) -> None:
        class Factory:
            policy = self.policy

        class Protocol:
            factory = Factory()
            identity = identity("w", "writer")

            @requires("kv.write", resource="data/fixed")
            def write(self) -> str:
                return "written"

        self.assertEqual(Protocol().write(), "written")

    def test_async_handler(self) -> None:
        allowed = Handler(self.policy, identity("w", "writer"))
        self.assertEqual(self.successResultOf(defer.ensureDeferred(allowed.delete_later("x"))), "deleted")
        denied = Handler(self.policy, identity("r", "reader"))
        failure = self.failureResultOf(defer.ensureDeferred(denied.delete_later("x")), AuthorizationDenied)
        self.assertEqual(failure.value.permission, "kv.write:data/x")
        self.assertEqual(denied.calls, [])

    def test_no_policy(self) -> None:
        handler = Handler(None, identity("root", "admin"))
        with self.assertRaises(AuthorizationSetupError) as caught:
            handler.stop()
        self.assertEqual(
            str(caught.exception), "cannot authorize Handler.stop: Handler has no policy (set self.policy or self.factory.policy)"
        )
        self.assertEqual(handler.calls, [])

    def test_not_a_policy(self) -> None:
        handler = Handler(object(), identity("root", "admin"))
        self.assertRaises(AuthorizationSetupError, handler.stop)
        self.assertEqual(handler.calls, [])

    def test_no_identity(self) -> None:
        handler = Handler(self.policy, None)
        with self.assertRaises(AuthorizationSetupError) as caught:
            handler.set("x", "1")
        self.assertEqual(str(caught.exception), "cannot authorize Handler.set: Handler has no identity (self.identity)")
        self.assertEqual(handler.calls, [])

    def test_getters(self) -> None:
        policy = self.policy
        who = identity("w", "writer")

        class Custom:
            @requires("kv.write", resource="data/x", policy=lambda self: policy, identity=lambda self: who)
            def write(self) -> str:
                return "ok"

        self.assertEqual(Custom().write(), "ok")

    def test_bad_action(self) -> None:
        self.assertRaises(ValueError, requires, "kv.*")
        self.assertRaises(ValueError, requires, "kv write")

    def test_wraps(self) -> None:
        self.assertEqual(Handler.set.__name__, "set")
        self.assertEqual(Handler.set.__securenet_requires__[0], "kv.write")  # type: ignore[attr-defined]


class EmptySegmentTests(SynchronousTestCase):
    """
    An explicit deny cannot be bypassed by another spelling of the resource:
    empty segments are refused like '.' and '..', for allow and deny alike.
    """

    DOCS_POLICY = """
        [roles.writer]
        permissions = ["kv.write:data/**"]

        [[rules]]
        name = "nobody touches the audit trail"
        effect = "deny"
        permissions = ["kv.write:data/audit/**"]
    """

    API_POLICY = """
        [roles.user]
        permissions = ["api.get:/api/**"]

        [[rules]]
        name = "no admin"
        effect = "deny"
        permissions = ["api.get:/api/admin/**"]

        [[rules]]
        name = "no secrets"
        effect = "deny"
        permissions = ["api.get:/api/secret/*"]
    """

    def test_theIssuesSpellings(self) -> None:
        docs = Policy.parse(self.DOCS_POLICY, source="policy.toml")
        writer = identity("alice", "writer")
        self.assertTrue(docs.can(writer, "kv.write", "data/x"))
        self.assertFalse(docs.can(writer, "kv.write", "data/audit/x"))
        self.assertFalse(docs.can(writer, "kv.write", "data//audit/x"))
        api = Policy.parse(self.API_POLICY, source="policy.toml")
        user = identity("bob", "user")
        self.assertTrue(api.can(user, "api.get", "/api/x"))
        for resource in ("/api//admin/x", "/api/secret//k", "/api/secret/k/", "/api/admin/x", "/api/secret/k"):
            with self.subTest(resource=resource):
                self.assertFalse(api.can(user, "api.get", resource))

    @given(st.lists(st.sampled_from(["data", "audit", "x", "", ".", "..", "a*"]), min_size=1, max_size=6), st.booleans())
    def test_noSpellingReachesWhatADenyCovers(self, segments: list[str], leading: bool) -> None:
        """
        Whatever the resource string, if it is allowed then it is in normal
        form (no empty, '.' or '..' segments) and no deny pattern covers
        its normal form.
        """
        resource = ("/" if leading else "") + "/".join(segments)
        docs = Policy.parse(self.DOCS_POLICY, source="policy.toml")
        if not docs.can(identity("alice", "writer"), "kv.write", resource):
            return
        parts = resource.split("/")[1:] if leading else resource.split("/")
        self.assertNotIn("", parts[1:] if len(parts) > 1 else [])
        self.assertFalse(set(parts) & {".", ".."})
        normal = "/".join(p for p in parts if p)
        self.assertFalse(normal == "data/audit" or normal.startswith("data/audit/"), resource)
