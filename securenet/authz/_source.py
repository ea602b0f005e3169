"""
Reading a policy file: TOML text to Python values, and the line of every
table, key and array element in it.

C{tomllib} reports the line of a syntax error but keeps no positions for
the values it returns, so a semantic error ("unknown role", "bad CIDR")
would have no line.  L{locate} scans the text (already known to be valid
TOML) and maps each value's path (C{("rules", 2, "when",
"context.peer")}) to the line it is written on; L{Locator.line} falls back
to the nearest enclosing table when a path has no line of its own.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from securenet.authz._errors import PolicyError

#: A path into a TOML document: table keys and array indices.
TomlPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SYNTAX_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)\s*$")
_SCALAR_END = frozenset(",]}#\r\n")


@attrs.frozen
class Locator:
    """Lines of a TOML document's values, by path."""

    lines: Mapping[TomlPath, int] = attrs.field(factory=dict)

    def line(self, path: TomlPath) -> int | None:
        """The line of C{path}, else of its nearest enclosing value that has one."""
        while True:
            found = self.lines.get(path)
            if found is not None or not path:
                return found
            path = path[:-1]


def read_policy_text(path: str | Path) -> str:
    """The text of a policy file, or a L{PolicyError} naming the file."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PolicyError(source, None, "policy file does not exist") from None
    except IsADirectoryError:
        raise PolicyError(source, None, "policy file is a directory") from None
    except OSError as e:
        raise PolicyError(source, None, f"cannot read the policy file ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PolicyError(source, line, "policy file is not UTF-8 text") from None


#: How deeply tables and arrays may nest in a policy: far more than any
#: policy needs (a rule's C{any}/C{all} conditions take two levels each),
#: and little enough that nothing that walks the document recurses too deep.
MAX_NESTING = 64

_TOO_DEEP = f"nested too deeply (tables and arrays more than {MAX_NESTING} levels deep)"


def _too_deep(document: dict[str, Any]) -> TomlPath | None:
    """The path of a value nested more than L{MAX_NESTING} levels deep, if any (walked without recursion)."""
    todo: list[tuple[TomlPath, Any]] = [((), document)]
    while todo:
        path, value = todo.pop()
        if len(path) > MAX_NESTING:
            return path
        if isinstance(value, dict):
            todo.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend(((*path, i), v) for i, v in enumerate(value))
    return None


def _deep_line(text: str) -> int | None:
    """
    The line where brackets and braces first nest more than L{MAX_NESTING}
    deep, strings and comments skipped: for a document too deep for
    tomllib, which then reports no position.
    """
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            quote = text[i : i + 3] if text.startswith(c * 3, i) else c
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                i += 2 if c == '"' and text[i] == "\\" else 1
            i += len(quote)
            continue
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return text.count("\n", 0, i) + 1
        elif c in "]}":
            depth -= 1
        i += 1
    return None


def parse_toml(text: str, source: str) -> tuple[dict[str, Any], Locator]:
    """
    Parse C{text}; a syntax error becomes a L{PolicyError} with tomllib's
    line and reason, and so does nesting deeper than L{MAX_NESTING} (which
    would make tomllib, or what reads the document, exceed Python's
    recursion limit).
    """
    try:
        document = tomllib.loads(text)
    except RecursionError:
        raise PolicyError(source, _deep_line(text), _TOO_DEEP) from None
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        lineno: int | None = getattr(e, "lineno", None)
        found = _SYNTAX_LINE.search(message)
        if found is not None:
            message = message[: found.start()]
            lineno = lineno or int(found.group(1))
        elif message.endswith("(at end of document)"):
            message = message[: -len("(at end of document)")].rstrip() + " (at the end of the file)"
            lineno = lineno or max(1, len(text.splitlines()))
        raise PolicyError(source, lineno, f"TOML syntax error: {message}") from None
    deep = _too_deep(document)
    if deep is not None:
        raise PolicyError(source, locate(text).line(deep), _TOO_DEEP)
    return document, locate(text)


def locate(text: str) -> Locator:
    """
    The lines of the values of C{text}, a valid TOML document.  Best effort
    on anything else: it never raises, and paths it cannot place are left
    out (an error then names the line of an enclosing table).
    """
    scanner = _Scanner(text)
    try:
        scanner.document()
    except (IndexError, ValueError, RecursionError):
        pass
    return Locator(scanner.lines)


class _Scanner:
    """A TOML 1.0 reader that records where values are instead of what they are."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.lines: dict[TomlPath, int] = {}
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._arrays_of_tables: dict[TomlPath, int] = {}

    def line_at(self, position: int) -> int:
        return bisect.bisect_left(self._newlines, position) + 1

    def _record(self, path: TomlPath, position: int, *, override: bool = False) -> None:
        if override or path not in self.lines:
            self.lines[path] = self.line_at(position)

    # -- whitespace ------------------------------------------------------------

    def _peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def _skip_blanks(self) -> None:
        while self._peek() in (" ", "\t"):
            self.i += 1

    def _skip_comment(self) -> None:
        if self._peek() == "#":
            while self.i < len(self.s) and self.s[self.i] != "\n":
                self.i += 1

    def _skip_space(self) -> None:
        """Blanks, newlines and comments (between statements and inside arrays)."""
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif c == "#":
                self._skip_comment()
            else:
                return

    # -- structure -------------------------------------------------------------

    def document(self) -> None:
        while True:
            self._skip_space()
            if self.i >= len(self.s):
                return
            start = self.i
            if self.s.startswith("[[", self.i):
                self._array_table_header()
            elif self._peek() == "[":
                self._table_header()
            else:
                self._key_value(self._table)
            if self.i == start:  # no progress: not TOML after all
                return

    _table: TomlPath = ()

    def _resolve(self, keys: list[str]) -> TomlPath:
        """A header's keys as a path, descending into the last table of each array of tables."""
        path: TomlPath = ()
        for key in keys:
            path = (*path, key)
            count = self._arrays_of_tables.get(path)
            if count is not None:
                path = (*path, count - 1)
        return path

    def _table_header(self) -> None:
        start = self.i
        self.i += 1
        keys = self._key()
        self._skip_blanks()
        self._expect("]")
        path = self._resolve(keys)
        for j in range(1, len(path)):
            self._record(path[:j], start)
        self._record(path, start, override=True)
        self._table = path

    def _array_table_header(self) -> None:
        start = self.i
        self.i += 2
        keys = self._key()
        self._skip_blanks()
        self._expect("]]")
        parent = self._resolve(keys[:-1])
        array = (*parent, keys[-1])
        count = self._arrays_of_tables.get(array, 0) + 1
        self._arrays_of_tables[array] = count
        path = (*array, count - 1)
        for j in range(1, len(array) + 1):
            self._record(path[:j], start)
        self._record(path, start, override=True)
        self._table = path

    def _expect(self, token: str) -> None:
        if not self.s.startswith(token, self.i):
            raise ValueError(f"expected {token!r} at {self.i}")
        self.i += len(token)

    def _key(self) -> list[str]:
        keys: list[str] = []
        while True:
            self._skip_blanks()
            c = self._peek()
            if c == '"':
                keys.append(self._basic_string())
            elif c == "'":
                keys.append(self._literal_string())
            else:
                found = _BARE_KEY.match(self.s, self.i)
                if found is None:
                    raise ValueError(f"expected a key at {self.i}")
                keys.append(found.group())
                self.i = found.end()
            self._skip_blanks()
            if self._peek() != ".":
                return keys
            self.i += 1

    def _key_value(self, table: TomlPath) -> None:
        start = self.i
        keys = self._key()
        path = (*table, *keys)
        for j in range(len(table) + 1, len(path)):
            self._record(path[:j], start)
        self._record(path, start, override=True)
        self._skip_blanks()
        self._expect("=")
        self._skip_blanks()
        self._value(path)

    def _value(self, path: TomlPath) -> None:
        c = self._peek()
        if self.s.startswith('"""', self.i):
            self._multiline_string('"""', escapes=True)
        elif self.s.startswith("'''", self.i):
            self._multiline_string("'''", escapes=False)
        elif c == '"':
            self._basic_string()
        elif c == "'":
            self._literal_string()
        elif c == "[":
            self._array(path)
        elif c == "{":
            self._inline_table(path)
        else:
            start = self.i
            while self.i < len(self.s) and self.s[self.i] not in _SCALAR_END:
                self.i += 1
            if self.i == start:
                raise ValueError(f"expected a value at {self.i}")

    def _array(self, path: TomlPath) -> None:
        self.i += 1
        index = 0
        while True:
            self._skip_space()
            if self._peek() == "]":
                self.i += 1
                return
            self._record((*path, index), self.i, override=True)
            self._value((*path, index))
            index += 1
            self._skip_space()
            if self._peek() == ",":
                self.i += 1
            else:
                self._expect("]")
                return

    def _inline_table(self, path: TomlPath) -> None:
        self.i += 1
        while True:
            self._skip_space()
            if self._peek() == "}":
                self.i += 1
                return
            self._key_value(path)
            self._skip_space()
            if self._peek() == ",":
                self.i += 1
            else:
                self._expect("}")
                return

    # -- strings (keys need their value; values only need skipping) ----------------

    def _basic_string(self) -> str:
        start = self.i
        self.i += 1
        while self.s[self.i] != '"':
            self.i += 2 if self.s[self.i] == "\\" else 1
        self.i += 1
        value: str = tomllib.loads(f"k = {self.s[start : self.i]}")["k"]
        return value

    def _literal_string(self) -> str:
        end = self.s.index("'", self.i + 1)
        value = self.s[self.i + 1 : end]
        self.i = end + 1
        return value

    def _multiline_string(self, delimiter: str, *, escapes: bool) -> None:
        quote = delimiter[0]
        self.i += 3
        while True:
            c = self.s[self.i]
            if escapes and c == "\\":
                self.i += 2
            elif c == quote:
                run = 0
                while self._peek(run) == quote:
                    run += 1
                self.i += run
                if run >= 3:
                    return
            else:
                self.i += 1


class Invalid(Exception):
    """
    A semantic error in a policy document, at C{path}; the loader turns it
    into a L{PolicyError} with the line of C{path}.
    """

    def __init__(self, path: TomlPath, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
