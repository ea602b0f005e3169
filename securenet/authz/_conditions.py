"""
Attribute conditions (ABAC): the C{when} and C{unless} tables of a rule.

A condition table maps references to tests, and all of them must hold::

    when = { "identity.mechanism" = ["EXTERNAL", "SCRAM-SHA-256-PLUS"], "context.peer" = { cidr = "10.0.0.0/8" } }

A test is a value (equality), an array (one of), or a table of operators
(C{equals}, C{in}, C{glob}, C{cidr}, C{between}, C{present}), all of which
must hold.  The keys C{all}, C{any} (arrays of condition tables) and
C{not} (a condition table) combine conditions.

A test on a multi-valued reference (scopes, SANs, subject attributes, a
list attribute) holds if it holds for one of the values, as in LDAP.  A
test on a missing value is false, except C{present = false}.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from securenet.authz._attributes import WEEKDAYS, Facts, Reference, parse_reference, peer_address
from securenet.authz._patterns import Glob, PatternError
from securenet.authz._source import Invalid, TomlPath

_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")

#: The operators of a test table.
OPERATORS: tuple[str, ...] = ("equals", "in", "glob", "cidr", "between", "present")

Scalar = str | int | float | bool


class Condition(Protocol):
    def holds(self, facts: Facts) -> bool:
        """Whether the condition holds for the request."""

    def describe(self) -> str:
        """The condition in words, for explanations and C{securenet authz lint}."""


def _text(value: Any) -> str:
    if isinstance(value, (str, bool, int, float)):
        return json.dumps(value)
    return str(value)


def _same(expected: Scalar, value: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and expected == value
    if isinstance(expected, str) or isinstance(value, str):
        return isinstance(expected, str) and isinstance(value, str) and expected == value
    if isinstance(value, (int, float)):
        return bool(expected == value)
    return False


def _values(value: Any) -> Sequence[Any]:
    """A value as the sequence of values a test considers (multi-valued attributes hold several)."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return value
    return (value,)


class _Operator(Protocol):
    def test(self, value: Any) -> bool: ...

    def describe(self) -> str: ...


@attrs.frozen
class Equals:
    expected: Scalar

    def test(self, value: Any) -> bool:
        return _same(self.expected, value)

    def describe(self) -> str:
        return f"= {_text(self.expected)}"


@attrs.frozen
class OneOf:
    expected: tuple[Scalar, ...]

    def test(self, value: Any) -> bool:
        return any(_same(e, value) for e in self.expected)

    def describe(self) -> str:
        return f"in [{', '.join(_text(e) for e in self.expected)}]"


@attrs.frozen
class GlobMatch:
    globs: tuple[Glob, ...]

    def test(self, value: Any) -> bool:
        return isinstance(value, str) and any(g.matches(value) for g in self.globs)

    def describe(self) -> str:
        return "glob " + " or ".join(_text(g.text) for g in self.globs)


@attrs.frozen
class InNetwork:
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def test(self, value: Any) -> bool:
        address = peer_address(value) if isinstance(value, str) else None
        return address is not None and any(address in n for n in self.networks)

    def describe(self) -> str:
        return "in network " + ", ".join(str(n) for n in self.networks)


@attrs.frozen
class Between:
    """From C{start} (included) to C{end} (excluded), minutes since midnight UTC; wraps past midnight."""

    start: int
    end: int

    def test(self, value: Any) -> bool:
        if not isinstance(value, int):
            return False
        if self.start < self.end:
            return self.start <= value < self.end
        return value >= self.start or value < self.end

    def describe(self) -> str:
        return f"between {self.start // 60:02}:{self.start % 60:02} and {self.end // 60:02}:{self.end % 60:02} UTC"


@attrs.frozen
class Test:
    """Tests of one reference, all of which must hold."""

    reference: Reference
    operators: tuple[_Operator, ...]
    present: bool | None = None  # the "present" operator, which looks at the whole value

    def holds(self, facts: Facts) -> bool:
        values = _values(self.reference.get(facts))
        if self.present is not None and bool(values) != self.present:
            return False
        return all(any(op.test(v) for v in values) for op in self.operators)

    def describe(self) -> str:
        words = [f"{self.reference} {op.describe()}" for op in self.operators]
        if self.present is not None:
            words.insert(0, f"{self.reference} {'present' if self.present else 'absent'}")
        return " and ".join(words)


@attrs.frozen
class AllOf:
    conditions: tuple[Condition, ...]

    def holds(self, facts: Facts) -> bool:
        return all(c.holds(facts) for c in self.conditions)

    def describe(self) -> str:
        return " and ".join(_grouped(c) for c in self.conditions)


@attrs.frozen
class AnyOf:
    conditions: tuple[Condition, ...]

    def holds(self, facts: Facts) -> bool:
        return any(c.holds(facts) for c in self.conditions)

    def describe(self) -> str:
        return " or ".join(_grouped(c) for c in self.conditions)


@attrs.frozen
class Not:
    condition: Condition

    def holds(self, facts: Facts) -> bool:
        return not self.condition.holds(facts)

    def describe(self) -> str:
        return f"not {_grouped(self.condition)}"


def _grouped(condition: Condition) -> str:
    text = condition.describe()
    if isinstance(condition, (AllOf, AnyOf)) or (
        isinstance(condition, Test) and len(condition.operators) + (condition.present is not None) > 1
    ):
        return f"({text})"
    return text


# -- compiling -----------------------------------------------------------------


def compile_condition(table: Any, path: TomlPath) -> Condition:
    """
    The condition a C{when}/C{unless} table (at C{path} in the policy) says.

    @raise Invalid: the table is malformed; the path and reason say where and why.
    """
    if not isinstance(table, dict):
        raise Invalid(path, f"a condition is a table of tests, not {_text(table)}")
    if not table:
        raise Invalid(path, "a condition table must not be empty")
    parts: list[Condition] = []
    for key, value in table.items():
        here = (*path, key)
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise Invalid(here, f"'{key}' is a non-empty array of condition tables")
            subs = tuple(compile_condition(v, (*here, i)) for i, v in enumerate(value))
            parts.append(AllOf(subs) if key == "all" else AnyOf(subs))
        elif key == "not":
            parts.append(Not(compile_condition(value, here)))
        else:
            try:
                reference = parse_reference(key)
            except ValueError as e:
                raise Invalid(here, str(e)) from None
            parts.append(_compile_test(reference, value, here))
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _compile_test(reference: Reference, value: Any, path: TomlPath) -> Test:
    if isinstance(value, dict):
        if not value:
            raise Invalid(path, f"the test of {reference} is an empty table")
        operators: list[_Operator] = []
        present: bool | None = None
        for name, operand in value.items():
            here = (*path, name)
            if name == "present":
                if not isinstance(operand, bool):
                    raise Invalid(here, f"'present' is true or false, not {_text(operand)}")
                if reference.kind in ("time", "weekday", "boolean"):
                    raise Invalid(here, f"{reference} always has a value; 'present' cannot be tested")
                present = operand
            elif name in OPERATORS:
                operators.append(_operator(reference, name, operand, here))
            else:
                raise Invalid(here, f"unknown test {name!r} for {reference} (known: {', '.join(OPERATORS)})")
        return Test(reference, tuple(operators), present)
    if isinstance(value, list):
        return Test(reference, (_operator(reference, "in", value, path),))
    return Test(reference, (_operator(reference, "equals", value, path),))


def _operator(reference: Reference, name: str, operand: Any, path: TomlPath) -> _Operator:
    kind = reference.kind
    if name == "equals":
        return Equals(_scalar(reference, operand, path))
    if name == "in":
        if not isinstance(operand, list) or not operand:
            raise Invalid(path, f"the values {reference} is tested against form a non-empty array")
        return OneOf(tuple(_scalar(reference, v, (*path, i)) for i, v in enumerate(operand)))
    if name == "glob":
        if kind in ("boolean", "time", "weekday"):
            raise Invalid(path, f"{reference} is a {kind}; 'glob' tests text")
        globs = []
        for i, text in enumerate(_one_or_more(operand, path, "a glob")):
            try:
                globs.append(Glob.parse(text))
            except PatternError as e:
                raise Invalid((*path, i) if isinstance(operand, list) else path, str(e)) from None
        return GlobMatch(tuple(globs))
    if name == "cidr":
        if kind in ("boolean", "time", "weekday", "path"):
            raise Invalid(path, f"{reference} is not an address; 'cidr' tests an IP address (context.peer)")
        networks = []
        for i, text in enumerate(_one_or_more(operand, path, "a CIDR network")):
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
            except ValueError as e:
                raise Invalid(
                    (*path, i) if isinstance(operand, list) else path, f"bad CIDR {text!r} for {reference}: {e}"
                ) from None
        return InNetwork(tuple(networks))
    assert name == "between"
    if kind != "time":
        raise Invalid(path, f"'between' tests context.time, not {reference}")
    if not isinstance(operand, list) or len(operand) != 2:
        raise Invalid(path, 'between is ["HH:MM", "HH:MM"] (start included, end excluded, UTC)')
    start = _minutes(operand[0], (*path, 0), end=False)
    end = _minutes(operand[1], (*path, 1), end=True)
    if start == end % (24 * 60):
        raise Invalid(path, f"between {operand[0]} and {operand[1]} is an empty (or whole-day) range")
    return Between(start, end)


def _one_or_more(operand: Any, path: TomlPath, what: str) -> list[str]:
    values = operand if isinstance(operand, list) else [operand]
    if not values:
        raise Invalid(path, f"expected {what} or a non-empty array of them")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise Invalid((*path, i) if isinstance(operand, list) else path, f"expected {what} (a string), not {_text(v)}")
    return values


def _minutes(text: Any, path: TomlPath, *, end: bool) -> int:
    if end and text == "24:00":
        return 24 * 60
    found = _TIME.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise Invalid(path, f"bad time {_text(text)}: expected HH:MM (00:00 to 23:59, UTC{'; or 24:00' if end else ''})")
    return int(found.group(1)) * 60 + int(found.group(2))


def _scalar(reference: Reference, value: Any, path: TomlPath) -> Scalar:
    kind = reference.kind
    if not isinstance(value, (str, int, float, bool)):
        raise Invalid(path, f"{reference} can only be compared with a string, number or boolean, not {_text(value)}")
    if kind == "time":
        raise Invalid(path, 'context.time is tested with between = ["HH:MM", "HH:MM"]')
    if kind == "boolean" and not isinstance(value, bool):
        raise Invalid(path, f"{reference} is true or false, not {_text(value)}")
    if kind in ("string", "strings", "path") and not isinstance(value, str):
        raise Invalid(path, f"{reference} is text; compare it with a string, not {_text(value)}")
    if kind == "weekday" and value not in WEEKDAYS:
        raise Invalid(path, f"bad weekday {_text(value)}: one of {', '.join(WEEKDAYS)}")
    return value
