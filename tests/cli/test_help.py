"""
C{securenet ... --help} for every command: plain text (no epytext markup
such as C{C{...}}, which argparse would print as is), and a line of help for
every argument and option.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

from securenet.cli import build_parser

#: Epytext inline markup: C{...}, L{...}, I{...}, B{...}, U{...}, M{...}.
MARKUP = re.compile(r"\b[CLIBUM]\{")

_NO_HELP_NEEDED = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command, with its command line (C{securenet pki pin})."""
    todo = [("securenet", build_parser())]
    while todo:
        name, parser = todo.pop(0)
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend((f"{name} {sub}", p) for sub, p in action.choices.items())


class HelpTests(SynchronousTestCase):
    def test_commandsFound(self) -> None:
        names = [name for name, _ in parsers()]
        for expected in ("securenet connect", "securenet pki pin", "securenet tokens revoke", "securenet users unlock"):
            self.assertIn(expected, names)

    def test_noMarkup(self) -> None:
        """No --help shows epytext markup (securenet connect --help showed C{securenet connect ENDPOINT})."""
        for name, parser in parsers():
            text = parser.format_help()
            self.assertIsNone(MARKUP.search(text), f"{name} --help:\n{text}")

    def test_everyArgumentHasHelp(self) -> None:
        """Every positional argument and option says what it is (pki pin FILE and tokens revoke JTI did not)."""
        missing = [
            f"{name} {action.metavar or action.dest}"
            for name, parser in parsers()
            for action in parser._actions
            if not isinstance(action, _NO_HELP_NEEDED) and not action.help
        ]
        self.assertEqual(missing, [])
