"""
Tests for C{securenet authz check} and C{securenet authz lint}: exact
output and exit codes (0 allowed, 3 denied, 1 error), every identity
option, roles and attributes from a credential database (C{--db}), and
one run of the real command in a child process.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import cast

from twisted.internet import defer
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from securenet.pki import CertificateAuthority, parse_san
from securenet.store._records import User
from securenet.store._sqlite import SQLiteStore
from tests import support
from tests.support import CLIResult, run_cli

REPO = Path(__file__).resolve().parent.parent.parent

POLICY = """\
    [roles.reader]
    permissions = ["kv.read"]

    [roles.writer]
    inherits = ["reader"]
    permissions = ["kv.write:data/**"]

    [[rules]]
    name = "strong admin"
    effect = "deny"
    permissions = ["admin.*"]
    unless = { any = [ { "identity.mechanism" = "EXTERNAL" }, { "identity.mfa" = true } ] }

    [[rules]]
    name = "admins"
    effect = "allow"
    permissions = ["admin.*"]
    when = { "identity.attributes.admin" = true, "context.peer" = { cidr = "10.0.0.0/8" } }

    [[rules]]
    name = "devices"
    effect = "allow"
    permissions = ["telemetry.publish:telemetry/{identity.spiffe_path}/*"]
    when = { "identity.certificate.subject.OU" = "devices" }

    [[rules]]
    name = "scoped tokens"
    effect = "allow"
    permissions = ["kv.read:public/**"]
    when = { "identity.scopes" = "kv:read" }

    [[rules]]
    name = "weekend reports"
    effect = "allow"
    permissions = ["report.run"]
    when = { "context.weekday" = ["sat", "sun"] }
    """


Result = CLIResult
run = run_cli


class AuthzCLITestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.policy = self.dir / "policy.toml"
        self.policy.write_text(textwrap.dedent(POLICY))

    def check(self, *argv: str | Path) -> Result:
        return run("authz", "check", "--policy", self.policy, *argv)

    def assertAllowed(self, result: Result, rule: str, reason: str, head: str) -> None:
        self.assertEqual(result, Result(0, f"ALLOW: {head}\nrule: {rule}\nreason: {reason}\n", ""))

    def assertDenied(
        self, result: Result, head: str, rule: str = "none", reason: str = "no rule matched: denied by default"
    ) -> None:
        self.assertEqual(result, Result(3, f"DENY: {head}\nrule: {rule}\nreason: {reason}\n", ""))

    def assertFails(self, result: Result, message: str) -> None:
        self.assertEqual(result, Result(1, "", f"securenet: error: {message}\n"))


class CheckTests(AuthzCLITestCase):
    def test_allowed(self) -> None:
        self.assertAllowed(
            self.check("--user", "alice", "--role", "writer", "--action", "kv.write", "--resource", "data/x"),
            f"role writer, permission kv.write:data/** ({self.policy}:6)",
            "allowed by role writer",
            "alice may kv.write data/x",
        )

    def test_inherited(self) -> None:
        self.assertAllowed(
            self.check("--user", "alice", "--role", "writer", "--action", "kv.read", "--resource", "x"),
            f"role reader, permission kv.read ({self.policy}:2)",
            "allowed by role reader",
            "alice may kv.read x",
        )

    def test_denied_by_default(self) -> None:
        self.assertDenied(
            self.check("--user", "bob", "--action", "kv.write", "--resource", "data/x"),
            "bob may not kv.write data/x (missing permission kv.write:data/x)",
            reason="no rule matched: denied by default",
        )

    def test_unknown_role_is_explained(self) -> None:
        self.assertDenied(
            self.check("--user", "bob", "--role", "writers", "--action", "kv.read"),
            "bob may not kv.read (missing permission kv.read)",
            reason="no rule matched: denied by default (roles not in the policy: writers)",
        )

    def test_explicit_deny(self) -> None:
        self.assertDenied(
            self.check("--user", "root", "--attr", "admin=true", "--peer", "10.0.0.1:5000", "--action", "admin.stop"),
            "root may not admin.stop (missing permission admin.stop)",
            f'rule 1 "strong admin", permission admin.* ({self.policy}:11)',
            'denied by rule 1 "strong admin" (unless identity.mechanism = "EXTERNAL" or identity.mfa = true)',
        )

    def test_emptySegmentIsDenied(self) -> None:
        """The issue's reproduction: data//audit/x is not a way around a deny on data/audit/**."""
        self.assertDenied(
            self.check("--user", "alice", "--role", "writer", "--action", "kv.write", "--resource", "data//audit/x"),
            "alice may not kv.write data//audit/x (missing permission kv.write:data//audit/x)",
            reason="resource 'data//audit/x' has an empty segment: denied",
        )

    def test_attributes_mfa_and_peer(self) -> None:
        argv = ("--user", "root", "--attr", "admin=true", "--mfa", "--action", "admin.stop")
        allowed = self.check(*argv, "--peer", "10.0.0.1:5000")
        self.assertEqual(allowed.code, 0, allowed)
        self.assertIn('rule: rule 2 "admins"', allowed.out)
        self.assertEqual(self.check(*argv, "--peer", "192.0.2.1:5000").code, 3)
        self.assertEqual(self.check(*argv).code, 3)  # no peer: not in any network
        # A JSON string "true" is not the boolean true.
        self.assertEqual(
            self.check("--user", "root", "--attr", 'admin="true"', "--mfa", "--peer", "10.0.0.1", "--action", "admin.stop").code,
            3,
        )
        self.assertEqual(
            self.check("--user", "root", "--attr", "admin=yes", "--mfa", "--peer", "10.0.0.1", "--action", "admin.stop").code, 3
        )

    def test_mechanism(self) -> None:
        argv = ("--user", "root", "--attr", "admin=true", "--peer", "10.0.0.1", "--action", "admin.stop")
        self.assertEqual(self.check(*argv, "--mechanism", "EXTERNAL").code, 0)
        self.assertEqual(self.check(*argv, "--mechanism", "PLAIN").code, 3)

    def test_scopes(self) -> None:
        self.assertEqual(
            self.check("--user", "svc", "--scope", "kv:read", "--action", "kv.read", "--resource", "public/x").code, 0
        )
        self.assertEqual(
            self.check("--user", "svc", "--scope", "kv:write", "--action", "kv.read", "--resource", "public/x").code, 3
        )

    def test_time(self) -> None:
        argv = ("--user", "bob", "--action", "report.run")
        self.assertEqual(self.check(*argv, "--at", "2025-01-04T12:00:00Z").code, 0)  # a Saturday
        self.assertEqual(self.check(*argv, "--at", "2025-01-06T12:00:00").code, 3)  # a Monday
        self.assertEqual(self.check(*argv, "--at", "2025-01-06T01:00:00+02:00").code, 0)  # Sunday 23:00 UTC

    def test_subject_and_san(self) -> None:
        result = self.check(
            "--user", "pump7", "--subject", "CN=pump7,OU=devices", "--san", "URI:spiffe://example.org/site1/pump7",
            "--action", "telemetry.publish", "--resource", "telemetry/site1/pump7/temperature",
        )  # fmt: skip
        self.assertAllowed(
            result,
            f'rule 3 "devices", permission telemetry.publish:telemetry/{{identity.spiffe_path}}/* ({self.policy}:23)',
            'allowed by rule 3 "devices" (when identity.certificate.subject.OU = "devices")',
            "pump7 may telemetry.publish telemetry/site1/pump7/temperature",
        )
        other = self.check(
            "--user", "pump7", "--subject", "CN=pump7,OU=devices", "--san", "URI:spiffe://example.org/site1/pump7",
            "--action", "telemetry.publish", "--resource", "telemetry/site1/pump8/temperature",
        )  # fmt: skip
        self.assertEqual(other.code, 3)

    def test_certificate_file(self) -> None:
        ca = CertificateAuthority.create()
        issued = ca.issue("client", "pump7", sans=[parse_san("URI:spiffe://example.org/site1/pump7")])
        pem, _ = issued.save(self.dir, "pump7")
        argv = ("--user", "pump7", "--cert", pem, "--action", "telemetry.publish", "--resource", "telemetry/site1/pump7/t")
        # The issued subject has no OU=devices:
        self.assertEqual(self.check(*argv).code, 3)
        policy = self.dir / "cn.toml"
        policy.write_text(
            '[[rules]]\neffect = "allow"\npermissions = ["telemetry.publish:telemetry/{identity.spiffe_path}/*"]\n'
            'when = { "identity.certificate.common_name" = "pump7", "identity.mechanism" = "EXTERNAL" }\n'
        )
        self.assertEqual(run("authz", "check", "--policy", policy, *argv).code, 0)

    def test_cert_and_san_conflict(self) -> None:
        self.assertFails(
            self.check("--user", "x", "--action", "a", "--cert", self.dir / "c.pem", "--san", "DNS:x"),
            "give either --cert or --subject/--san, not both",
        )

    def test_bad_options(self) -> None:
        self.assertFails(self.check("--user", "x", "--action", "a", "--attr", "novalue"), "--attr 'novalue' is not KEY=VALUE")
        self.assertFails(
            self.check("--user", "x", "--action", "a", "--at", "tomorrow"),
            "--at 'tomorrow' is not an ISO 8601 date and time (e.g. 2025-01-06T09:30:00Z)",
        )
        self.assertFails(
            self.check("--user", "x", "--action", "a", "--subject", "not a DN"),
            "--subject 'not a DN' is not an RFC 4514 distinguished name (e.g. CN=dev1,OU=devices)",
        )
        self.assertFails(
            self.check("--user", "x", "--action", "a", "--san", "FTP:x"),
            "--san: unknown SAN kind 'FTP' in 'FTP:x' (use DNS:, IP:, URI:, email:)",
        )
        self.assertFails(
            self.check("--user", "x", "--action", "a", "--cert", self.dir / "none.pem"),
            f"{self.dir / 'none.pem'}: certificate file does not exist",
        )

    def test_bad_request_is_a_deny(self) -> None:
        self.assertDenied(
            self.check("--user", "x", "--action", "kv.*"),
            "x may not kv.* (missing permission kv.*)",
            reason="'kv.*' is not a valid action name: denied",
        )

    def test_bad_policy(self) -> None:
        self.policy.write_text('[roles.reader]\npermissions = ["kv.read"]\n[roles.writer]\ninherits = ["raeder"]\n')
        self.assertFails(
            self.check("--user", "x", "--action", "kv.read"), f"{self.policy}:4: role 'writer' inherits unknown role 'raeder'"
        )

    def test_missing_policy(self) -> None:
        missing = self.dir / "missing.toml"
        self.assertFails(
            run("authz", "check", "--policy", missing, "--user", "x", "--action", "a"), f"{missing}: policy file does not exist"
        )

    def test_usage(self) -> None:
        result = run("authz", "check", "--policy", self.policy, "--user", "x")
        self.assertEqual(result.code, 2)
        self.assertIn("the following arguments are required: --action", result.err)

    def test_nothing_logged(self) -> None:
        events: list[dict[str, object]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.check("--user", "bob", "--action", "kv.write")
        self.assertEqual([e for e in events if e.get("securenet_event")], [])


class DatabaseTests(AuthzCLITestCase):
    def setUp(self) -> None:
        super().setUp()
        self.db = self.dir / "creds.db"
        with SQLiteStore.open(self.db) as store:
            for user in [
                User(name="alice", roles=("writer",)),
                User(name="root", roles=(), attributes={"admin": True}),
                User(name="ghost", roles=("writer",), disabled=True),
            ]:
                d: defer.Deferred[None] = store.add_user(user)
                self.successResultOf(d)

    def test_roles_from_the_database(self) -> None:
        self.assertAllowed(
            self.check("--db", self.db, "--user", "alice", "--action", "kv.write", "--resource", "data/x"),
            f"role writer, permission kv.write:data/** ({self.policy}:6)",
            "allowed by role writer",
            "alice may kv.write data/x",
        )

    def test_attributes_from_the_database(self) -> None:
        argv = ("--db", self.db, "--user", "root", "--action", "admin.stop", "--peer", "10.1.1.1:5", "--mechanism", "EXTERNAL")
        self.assertEqual(self.check(*argv).code, 0)
        # --attr replaces a stored attribute of the same key.
        self.assertEqual(self.check(*argv, "--attr", "admin=false").code, 3)

    def test_options_add_to_the_database(self) -> None:
        self.assertEqual(self.check("--db", self.db, "--user", "root", "--role", "reader", "--action", "kv.read").code, 0)

    def test_disabled_user(self) -> None:
        result = self.check("--db", self.db, "--user", "ghost", "--action", "kv.read")
        self.assertEqual(
            result,
            Result(
                0,
                "ALLOW: ghost may kv.read\n"
                f"rule: role reader, permission kv.read ({self.policy}:2)\n"
                "reason: allowed by role reader\n"
                f"note: user ghost is disabled in {self.db} and cannot log in\n",
                "",
            ),
        )

    def test_unknown_user(self) -> None:
        self.assertFails(
            self.check("--db", self.db, "--user", "mallory", "--action", "kv.read"), f"no user 'mallory' in {self.db}"
        )

    def test_missing_database(self) -> None:
        missing = self.dir / "none.db"
        self.assertFails(
            self.check("--db", missing, "--user", "alice", "--action", "kv.read"), f"{missing}: no credential database here"
        )
        self.assertFalse(missing.exists())

    def test_insecure_database(self) -> None:
        self.db.chmod(0o644)
        result = self.check("--db", self.db, "--user", "alice", "--action", "kv.read")
        self.assertEqual(result.code, 1)
        self.assertIn("credential database has mode 0644", result.err)


class LintTests(AuthzCLITestCase):
    def test_summary(self) -> None:
        self.assertEqual(
            run("authz", "lint", "--policy", self.policy),
            Result(
                0,
                f"{self.policy}: ok: 2 roles, 5 rules\n"
                "role reader (line 1): kv.read\n"
                "role writer (line 4; inherits reader): kv.write:data/**\n"
                "  effective: kv.write:data/**, kv.read\n"
                'rule 1 "strong admin" (line 8): deny admin.* for anyone unless identity.mechanism = "EXTERNAL" or '
                "identity.mfa = true\n"
                'rule 2 "admins" (line 14): allow admin.* for anyone when identity.attributes.admin = true and context.peer in '
                "network 10.0.0.0/8\n"
                'rule 3 "devices" (line 20): allow telemetry.publish:telemetry/{identity.spiffe_path}/* for anyone when '
                'identity.certificate.subject.OU = "devices"\n'
                'rule 4 "scoped tokens" (line 26): allow kv.read:public/** for anyone when identity.scopes = "kv:read"\n'
                'rule 5 "weekend reports" (line 32): allow report.run for anyone when context.weekday in ["sat", "sun"]\n',
                "",
            ),
        )

    def test_refused(self) -> None:
        self.policy.write_text('[roles.a]\ninherits = ["b"]\n\n[roles.b]\ninherits = ["a"]\n')
        self.assertFails(run("authz", "lint", "--policy", self.policy), f"{self.policy}:5: role inheritance cycle: a -> b -> a")

    def test_syntax_error(self) -> None:
        self.policy.write_text('[roles.a]\npermissions = ["x"]\n[[rules]\n')
        self.assertFails(
            run("authz", "lint", "--policy", self.policy),
            f"{self.policy}:3: TOML syntax error: Expected ']]' at the end of an array declaration",
        )


class NestingTests(AuthzCLITestCase):
    """A policy nested hundreds of levels deep is one line and exit 1, never a RecursionError traceback."""

    TOO_DEEP = "nested too deeply (tables and arrays more than 64 levels deep)"

    def test_deepArray(self) -> None:
        for depth in (400, 5000):
            self.policy.write_text("[roles.a]\npermissions = " + "[" * depth + '"x"' + "]" * depth + "\n")
            self.assertFails(run("authz", "lint", "--policy", self.policy), f"{self.policy}:2: {self.TOO_DEEP}")

    def test_deepInlineTables(self) -> None:
        for depth in (400, 5000):
            self.policy.write_text(
                '[roles.a]\npermissions = ["x"]\n\n[[rules]]\nwhen = ' + "{a=" * depth + "1" + "}" * depth + "\n"
            )
            self.assertFails(run("authz", "lint", "--policy", self.policy), f"{self.policy}:5: {self.TOO_DEEP}")

    def test_deepConditions(self) -> None:
        """Conditions nested past the limit; brackets in strings and comments do not count."""
        condition = "{ any = [ " * 400 + '{ "identity.mfa" = true }' + " ] }" * 400
        self.policy.write_text(
            '# [[[[ a comment\n[roles.a]\ndescription = "[[[[{{{{"\npermissions = ["x"]\n\n'
            f'[[rules]]\neffect = "allow"\npermissions = ["x"]\nwhen = {condition}\n'
        )
        self.assertFails(run("authz", "lint", "--policy", self.policy), f"{self.policy}:9: {self.TOO_DEEP}")
        self.assertFails(
            run("authz", "check", "--policy", self.policy, "--user", "u", "--action", "x"), f"{self.policy}:9: {self.TOO_DEEP}"
        )

    def test_reasonableNestingLoads(self) -> None:
        """Twenty nested any/all conditions are well within the limit."""
        condition = "{ any = [ " * 20 + '{ "identity.mfa" = true }' + " ] }" * 20
        self.policy.write_text(f'[[rules]]\neffect = "allow"\npermissions = ["x"]\nwhen = {condition}\n')
        result = run("authz", "check", "--policy", self.policy, "--user", "u", "--action", "x", "--mfa")
        self.assertEqual((result.code, result.err), (0, ""), result)


class DocumentationTests(AuthzCLITestCase):
    def test_documented_check(self) -> None:
        """The C{securenet authz check} example of docs/authz.md prints what the docs show."""
        text = (REPO / "docs" / "authz.md").read_text()
        example = re.search(r"```toml\n(.*?)```", text, re.S)
        session = re.search(r"```sh\n\$ (securenet authz check .*?)\n(ALLOW.*?)\n\$ echo \$\?\n(\d)\n```", text, re.S)
        assert example is not None and session is not None
        self.policy.write_text(example.group(1))
        argv = session.group(1).replace("\\\n", " ").split()[1:]
        argv = [str(self.policy) if a == "policy.toml" else a for a in argv]
        result = run(*argv)
        self.assertEqual(
            result, Result(int(session.group(3)), session.group(2).replace("policy.toml", str(self.policy)) + "\n", "")
        )


class ConsoleScriptTests(SynchronousTestCase):
    def test_exit_codes(self) -> None:
        """The real command in a child process: exit 0 allowed, 3 denied, 1 error."""
        directory = Path(self.mktemp())
        directory.mkdir()
        policy = directory / "policy.toml"
        policy.write_text('[roles.reader]\npermissions = ["kv.read"]\n')
        command = [
            sys.executable,
            "-c",
            "from securenet.cli import run; run()",
            "authz",
            "check",
            "--policy",
            str(policy),
            "--user",
            "u",
        ]
        allowed = support.run([*command, "--role", "reader", "--action", "kv.read"])
        self.assertEqual((allowed.returncode, allowed.stderr), (0, b""), allowed)
        self.assertTrue(allowed.stdout.startswith(b"ALLOW: u may kv.read\n"), allowed)
        denied = support.run([*command, "--action", "kv.write"])
        self.assertEqual((denied.returncode, denied.stderr), (3, b""), denied)
        self.assertTrue(denied.stdout.startswith(b"DENY: u may not kv.write"), denied)
        broken = support.run([*command[:-4], "--policy", str(directory / "nope.toml"), "--user", "u", "--action", "kv.read"])
        self.assertEqual(
            (broken.returncode, broken.stdout, broken.stderr),
            (1, b"", f"securenet: error: {directory / 'nope.toml'}: policy file does not exist\n".encode()),
        )
