"""
The architecture of docs/architecture.md, checked: no module imports a
higher layer, and every package's public list is what its C{__init__}
promises (klein's C{test_exports} style).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = Path(__file__).resolve().parent.parent / "securenet"

#: Bottom to top; a module may import its own layer and the ones below it.
LAYERS: list[tuple[str, ...]] = [
    (
        "securenet._errors",
        "securenet._version",
        "securenet._logs",
        "securenet._metrics",
        "securenet._threads",
        "securenet.interfaces",
        "securenet.audit",
    ),
    ("securenet.pki",),
    ("securenet.tls",),
    ("securenet.store",),
    ("securenet.cred",),
    ("securenet.sasl",),
    ("securenet.session",),
    ("securenet.authz",),
    ("securenet.protocols",),
    ("securenet.apps", "securenet.web"),
    (
        "securenet.tap",
        "securenet._service",
        "securenet._reload",
        "securenet._workers",
        "securenet._monitor",
        "securenet.cli",
        "securenet._plugins",
        "securenet.testing",
    ),
]

PUBLIC_PACKAGES = [
    "securenet",
    "securenet.apps",
    "securenet.authz",
    "securenet.cred",
    "securenet.pki",
    "securenet.sasl",
    "securenet.session",
    "securenet.store",
    "securenet.tls",
    "securenet.web",
]


def layer_of(module: str) -> int | None:
    found = None
    for index, group in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in group):
            found = index
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_imports(path: Path) -> list[tuple[str, int]]:
    """Every securenet module C{path} imports at run time (imports for type checkers only are left out)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "securenet":
                found.extend((f"securenet.{alias.name}", node.lineno) for alias in node.names)
            else:
                found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
    return [(name, line) for name, line in found if name.startswith("securenet.")]


class LayerTests(SynchronousTestCase):
    def test_everyModuleHasALayer(self) -> None:
        unplaced = [
            module_name(p) for p in PACKAGE.rglob("*.py") if module_name(p) != "securenet" and layer_of(module_name(p)) is None
        ]
        self.assertEqual(unplaced, [])

    def test_noImportGoesUp(self) -> None:
        violations = []
        for path in sorted(PACKAGE.rglob("*.py")):
            me = module_name(path)
            mine = layer_of(me)
            if mine is None:
                continue  # the root package: lazy re-exports only
            for imported, line in runtime_imports(path):
                theirs = layer_of(imported)
                if theirs is not None and theirs > mine:
                    violations.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {me} imports {imported}")
        self.assertEqual(violations, [])

    def test_theCheckSeesViolations(self) -> None:
        """The checker itself: an upward import is found, one for type checkers only is not."""
        path = Path(self.mktemp())
        path.write_text(
            "from typing import TYPE_CHECKING\n"
            "from securenet.web import SecureSite\n"
            "from securenet import testing\n"
            "if TYPE_CHECKING:\n"
            "    from securenet.authz import Decision\n"
        )
        self.assertEqual(runtime_imports(path), [("securenet.web", 2), ("securenet.testing", 3)])


class ExportTests(SynchronousTestCase):
    def test_publicListsAreExact(self) -> None:
        """Each package's __all__ names only what it defines or imports, sorted, without duplicates."""
        for name in PUBLIC_PACKAGES:
            module = importlib.import_module(name)
            exported = list(module.__all__)
            self.assertEqual(len(exported), len(set(exported)), name)
            for public in exported:
                self.assertTrue(hasattr(module, public), f"{name}.{public}")

    def test_implementationModulesArePrivate(self) -> None:
        """Inside a package every module but the __init__ is private (_name.py)."""
        public = [
            str(p.relative_to(PACKAGE.parent))
            for p in PACKAGE.rglob("*.py")
            if p.parent != PACKAGE and p.name != "__init__.py" and not p.name.startswith("_")
        ]
        self.assertEqual(public, [])

    def test_publicNamesAreNotPrivateOnes(self) -> None:
        """No package exports a name that starts with an underscore, and every public class says where it lives."""
        for name in PUBLIC_PACKAGES:
            module = importlib.import_module(name)
            self.assertEqual([n for n in module.__all__ if n.startswith("_") and n != "__version__"], [], name)

    def test_oneNameOnePlace(self) -> None:
        """
        A package exports what it defines (its own private modules), and no
        class or function is exported by two packages, but the root's
        shortcuts connect and identity_of.
        """
        homes: dict[int, list[str]] = {}
        for name in PUBLIC_PACKAGES:
            module = importlib.import_module(name)
            for public in module.__all__:
                value = getattr(module, public)
                if not isinstance(value, type) and not callable(value):
                    continue
                defined_in = getattr(value, "__module__", None)
                if isinstance(defined_in, str) and name != "securenet" and type(value).__module__ != "types":
                    self.assertTrue(defined_in == name or defined_in.startswith(name + "."), f"{name}.{public} is {defined_in}'s")
                homes.setdefault(id(value), []).append(f"{name}.{public}")
        shared = sorted(places for places in homes.values() if len(places) > 1)
        expected = [
            ["securenet.connect", "securenet.session.connect"],
            ["securenet.identity_of", "securenet.session.identity_of"],
        ]
        self.assertEqual(shared, expected)

    def test_rootIsLazy(self) -> None:
        """connect and identity_of are the session layer's, reached lazily from the root."""
        import securenet
        import securenet.session

        self.assertIs(securenet.connect, securenet.session.connect)
        self.assertIs(securenet.identity_of, securenet.session.identity_of)
        with self.assertRaises(AttributeError):
            securenet.nothing_here  # noqa: B018 - the attribute access is the test
