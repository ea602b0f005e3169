"""
The README and the docs stay true: every fenced command names options the
real CLI and twistd plugin accept, every Python snippet compiles with no
undefined name and imports only public names (the quickstart's in-memory
test snippet runs), and every relative link points at a file that exists.
Process-level walkthroughs of the same commands are in tests/e2e.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import re
import shlex
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from securenet.cli import build_parser
from securenet.tap import Options

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "examples" / "README.md",
    REPO / "examples" / "api" / "README.md",
]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def blocks(path: Path, *languages: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text("utf-8")) if lang in languages]


def commands(body: str) -> list[str]:
    """The command lines of a shell block: continuations joined, comments, output and prompts' output dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        found.append(line)
    return found


def words(command: str) -> list[str]:
    command = re.sub(r"\s+#\s.*$", "", command)  # a trailing comment
    command = re.sub(r"\$\([^)]*\)", "VALUE", command)  # command substitution
    return shlex.split(command)


def securenet_argv(argv: list[str]) -> list[str] | None:
    """The arguments of a `securenet ...` command (after env assignments and pipes), or None."""
    for i, word in enumerate(argv):
        if word.endswith("/securenet") or word == "securenet":
            rest = argv[i + 1 :]
            if "|" in rest:
                rest = rest[: rest.index("|")]
            return rest
    return None


def twistd_argv(argv: list[str]) -> list[str] | None:
    """The arguments after `twistd [...] securenet`, or None."""
    if not any(w.endswith("twistd") for w in argv) or "securenet" not in argv:
        return None
    return argv[argv.index("securenet") + 1 :]


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    """The names of the parser's subcommands: the choices of its one subparsers action."""
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(action.choices)


def twistd_options() -> set[str]:
    known = {f"--{name.rstrip('=')}" for name in Options().longOpt}
    return known | {"--help-auth"}


class CommandTests(SynchronousTestCase):
    def test_securenetCommandsParse(self) -> None:
        """Every concrete `securenet ...` command of the docs is accepted by the real parser (nothing runs)."""
        parser = build_parser()
        names = subcommands(parser)
        checked = 0
        for path in DOCUMENTS:
            for body in blocks(path, "sh"):
                for command in commands(body):
                    argv = words(command)
                    rest = securenet_argv(argv)
                    if rest is None or not rest or rest[0] not in names:
                        continue
                    if any(re.search(r"[\[\]]|\b[A-Z]{2,}\b", w) for w in rest) and "=" not in "".join(rest[:1]):
                        # A synopsis line (NAME, [--opt], a|b): the subcommand must exist.
                        continue
                    try:
                        parser.parse_args(rest)
                    except SystemExit as e:
                        self.fail(f"{path.relative_to(REPO)}: `{command}` is refused by the CLI (exit {e.code})")
                    checked += 1
        self.assertGreater(checked, 5)

    def test_twistdCommandsUseRealOptions(self) -> None:
        """Every `twistd ... securenet` command names only options the plugin has, with --pidfile= in the foreground."""
        known = twistd_options()
        checked = 0
        for path in DOCUMENTS:
            for body in blocks(path, "sh"):
                for command in commands(body):
                    argv = words(command)
                    rest = twistd_argv(argv)
                    if rest is None:
                        continue
                    for word in rest:
                        if word.startswith("--"):
                            self.assertIn(word.split("=")[0], known, f"{path.relative_to(REPO)}: `{command}`")
                    if "-n" in argv:
                        self.assertIn("--pidfile=", argv, f"{path.relative_to(REPO)}: `{command}` leaves a pidfile behind")
                    for option in ("--policy", "--config"):
                        if option in rest:
                            target = rest[rest.index(option) + 1]
                            self.assertTrue(
                                (REPO / target).exists(),
                                f"{path.relative_to(REPO)}: `{command}`: {target} is not in the repository",
                            )
                    if "--app" in rest:
                        app = rest[rest.index("--app") + 1]
                        if "." in app:
                            module = app.rsplit(".", 1)[0]
                            self.assertTrue(
                                (REPO / (module.replace(".", "/") + ".py")).exists(), f"{path.relative_to(REPO)}: `{command}`"
                            )
                    checked += 1
        self.assertGreater(checked, 3)

    def test_makeTargetsExist(self) -> None:
        makefile = (REPO / "Makefile").read_text()
        targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
        for path in DOCUMENTS:
            for body in blocks(path, "sh"):
                for command in commands(body):
                    argv = words(command)
                    if argv and argv[0] == "make":
                        self.assertIn(argv[1], targets, f"{path.relative_to(REPO)}: `{command}`")


class SnippetTests(SynchronousTestCase):
    def test_pythonSnippetsCompileWithoutUndefinedNames(self) -> None:
        """
        Each snippet is valid Python whose names are defined, imported or
        builtins; a fragment declares what it assumes on a first line
        C{# given: NAME, NAME (what it is)}.
        """
        for path in DOCUMENTS:
            for body in blocks(path, "python"):
                tree = ast.parse(body)
                defined = set(dir(builtins))
                # A fragment names what it assumes: "# given: portal, store (...)".
                for given in re.findall(r"^# given: (.*)$", body, re.M):
                    defined |= set(re.findall(r"\b([A-Za-z_]\w*)\b(?![^(]*\))", given))
                for node in ast.walk(tree):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
                    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        defined.add(node.name)
                        defined |= (
                            {a.arg for a in node.args.args + node.args.kwonlyargs}
                            if not isinstance(node, ast.ClassDef)
                            else set()
                        )
                    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                        defined.add(node.id)
                    elif isinstance(node, ast.arg):
                        defined.add(node.arg)
                    elif isinstance(node, (ast.ExceptHandler,)) and node.name:
                        defined.add(node.name)
                undefined = sorted(
                    {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - defined - {"self"}
                )
                self.assertEqual(undefined, [], f"{path.relative_to(REPO)}: snippet uses undefined names:\n{body}")

    def test_snippetsImportPublicNames(self) -> None:
        for path in DOCUMENTS:
            for body in blocks(path, "python"):
                for node in ast.walk(ast.parse(body)):
                    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("securenet"):
                        self.assertFalse(
                            any(p.startswith("_") for p in node.module.split(".")), f"{path.relative_to(REPO)}: {node.module}"
                        )
                        module = __import__(node.module, fromlist=["_"])
                        for alias in node.names:
                            self.assertTrue(hasattr(module, alias.name), f"{path.relative_to(REPO)}: {node.module}.{alias.name}")

    def test_quickstartTestSnippetRuns(self) -> None:
        """The README's in-memory test of the greeter runs as written."""
        [snippet] = [b for b in blocks(REPO / "README.md", "python") if "connect_in_memory" in b]
        exec(compile(snippet, "README.md", "exec"), {"__name__": "readme_snippet"})

    def test_drainSnippetRuns(self) -> None:
        """docs/operations.md's IDrainable example runs as written (its asserts check what the peer saw)."""
        path = REPO / "docs" / "operations.md"
        [snippet] = [b for b in blocks(path, "python") if "def drain" in b]
        exec(compile(snippet, str(path), "exec"), {"__name__": "operations_snippet"})

    def test_systemdUnitOutwaitsTheDrain(self) -> None:
        """The systemd unit of docs/operations.md stops with SIGTERM and waits longer than its drain time."""
        [unit] = blocks(REPO / "docs" / "operations.md", "ini")
        settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)
        drain = int(re.search(r"--drain (\d+)", settings["ExecStart"]).group(1))  # type: ignore[union-attr]
        self.assertEqual(settings["KillSignal"], "SIGTERM")
        self.assertGreater(int(settings["TimeoutStopSec"]), drain)
        self.assertEqual(settings["ExecReload"], "/bin/kill -HUP $MAINPID")
        argv = shlex.split(settings["ExecStart"])
        options = Options()
        options.parseOptions([w for w in twistd_argv(argv) or [] if w not in ("--config", "/etc/securenet/securenet.toml")])
        self.assertEqual(options["drain"], drain)


class LinkTests(SynchronousTestCase):
    def test_relativeLinksExist(self) -> None:
        missing = []
        for path in DOCUMENTS:
            for target in LINK.findall(path.read_text("utf-8")):
                if re.match(r"[a-z]+:", target):
                    continue
                if not (path.parent / target).exists():
                    missing.append(f"{path.relative_to(REPO)} -> {target}")
        self.assertEqual(missing, [])


class PrometheusDocsTests(SynchronousTestCase):
    """
    The scrape configuration and alert rules of docs/metrics.md, checked by
    Prometheus' own promtool (Debian C{prometheus}; C{make test} installs
    it): the configuration loads, the rules parse, and the two alerts fire
    on the series securenet exports (a leaf 10 days from expiry, a CRL one
    day from its nextUpdate) and not on a trust root a year away.
    """

    def setUp(self) -> None:
        import shutil

        self.promtool = shutil.which("promtool")
        if self.promtool is None:
            raise AssertionError("promtool is not installed: run `make test`, which installs the Debian prometheus package")
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()
        config, rules = blocks(REPO / "docs" / "metrics.md", "yaml")
        # The TLS files the configuration names, as empty files (promtool checks they exist).
        for name in ("ca.pem", "prometheus.pem", "prometheus.key"):
            (self.dir / name).write_text("")
        (self.dir / "prometheus.yml").write_text(config.replace("/etc/prometheus/securenet/", f"{self.dir}/"))
        (self.dir / "rules.yml").write_text(rules)

    def promtool_ok(self, *args: str) -> str:
        import subprocess

        assert self.promtool is not None
        result = subprocess.run([self.promtool, *args], capture_output=True, text=True, timeout=60, cwd=self.dir)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        return result.stdout + result.stderr

    def test_configurationAndRulesLoad(self) -> None:
        self.assertIn("SUCCESS", self.promtool_ok("check", "config", "prometheus.yml"))
        self.assertIn("SUCCESS: 2 rules found", self.promtool_ok("check", "rules", "rules.yml"))

    def test_alertsFire(self) -> None:
        leaf = 'listener="127.0.0.1:8443",role="leaf",pin="sha256/a"'
        root = 'listener="127.0.0.1:8443",role="trust-root",pin="sha256/b"'
        (self.dir / "tests.yml").write_text(
            "rule_files: [rules.yml]\n"
            "evaluation_interval: 1m\n"
            "tests:\n"
            "  - interval: 1m\n"
            "    input_series:\n"
            f"      - series: 'securenet_certificate_not_after_seconds{{{leaf}}}'\n"
            "        values: '864000+0x120'\n"
            f"      - series: 'securenet_certificate_not_after_seconds{{{root}}}'\n"
            "        values: '31536000+0x120'\n"
            "      - series: 'securenet_crl_next_update_seconds{listener=\"127.0.0.1:8443\"}'\n"
            "        values: '86400+0x120'\n"
            "    alert_rule_test:\n"
            "      - eval_time: 90m\n"
            "        alertname: SecurenetCertificateExpiring\n"
            "        exp_alerts:\n"
            "          - exp_labels: {severity: warning, listener: '127.0.0.1:8443', role: leaf, pin: 'sha256/a'}\n"
            "            exp_annotations:\n"
            "              summary: 'leaf certificate sha256/a of 127.0.0.1:8443 expires in 9d 22h 30m 0s'\n"
            "      - eval_time: 90m\n"
            "        alertname: SecurenetCRLStaleOrExpiring\n"
            "        exp_alerts:\n"
            "          - exp_labels: {severity: critical, listener: '127.0.0.1:8443'}\n"
            "            exp_annotations:\n"
            "              summary: 'the CRL of 127.0.0.1:8443 is stale or expires in 22h 30m 0s:"
            " client certificates are refused once it is past'\n"
        )
        self.assertIn("SUCCESS", self.promtool_ok("test", "rules", "tests.yml"))
