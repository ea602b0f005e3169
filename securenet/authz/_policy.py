"""
L{Policy}: roles, permissions and rules from a TOML file, and the one
decision API (L{Policy.decide}, L{Policy.can}, L{Policy.require}).

How a request (identity, action, resource, context) is decided:

 1. A request that is not well formed (an action that is not a name, a
    resource with a C{.} or C{..} segment) is denied.
 2. The identity's roles are expanded by inheritance; roles the policy
    does not define give nothing.
 3. A rule applies when it is for one of those roles (or has no C{roles}:
    everyone, the anonymous identity included), one of its permissions
    covers the action and resource, its C{when} holds and its C{unless}
    does not.  A role's C{permissions} are an allow rule for that role.
 4. If a deny rule applies, the request is denied; else if an allow rule
    applies, it is allowed; else it is denied by default.

Any error while deciding is a deny (and a logged failure), never an allow.
"""

from __future__ import annotations

import datetime
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import attrs
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from securenet.authz._attributes import Context, Facts
from securenet.authz._conditions import Condition, compile_condition
from securenet.authz._decisions import AllowLogLevel, Decision, Effect, Location, MatchedRule, audit, log
from securenet.authz._errors import PolicyError, requested_permission
from securenet.authz._patterns import PatternError, Permission, is_action, unsafe_segment
from securenet.authz._source import Invalid, Locator, TomlPath, parse_toml, read_policy_text
from securenet.cred._identity import Identity
from securenet.interfaces import IPolicy

#: What tells a policy the time: a reactor (its C{seconds()}) or a function
#: returning POSIX seconds.
Clock = Union[IReactorTime, Callable[[], float]]  # noqa: UP007 - zope.interface 6.0 has no | for interfaces

#: The policy format this code reads (the optional top-level C{version}).
FORMAT_VERSION = 1

TOP_KEYS = ("version", "audit", "roles", "rules")
ROLE_KEYS = ("description", "inherits", "permissions")
RULE_KEYS = ("name", "description", "effect", "roles", "permissions", "when", "unless")
AUDIT_KEYS = ("log_allows",)


@attrs.frozen
class Role:
    name: str
    permissions: tuple[Permission, ...]
    permission_locations: tuple[Location, ...]
    inherits: tuple[str, ...]
    description: str
    location: Location


@attrs.frozen
class Rule:
    """A compiled rule: an entry of C{[[rules]]}, or a role's permissions (kind C{"role"})."""

    kind: Literal["role", "rule"]
    name: str | None
    number: int | None
    effect: Effect
    roles: frozenset[str] | None
    permissions: tuple[tuple[Permission, Location], ...]
    when: Condition | None
    unless: Condition | None
    location: Location
    description: str = ""
    # (permission text, location) -> what deciding by that permission says;
    # rules are immutable, so each is built once (decisions are per RPC call).
    _answers: dict[tuple[str, Location], tuple[MatchedRule, str]] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    def for_roles(self, roles: frozenset[str]) -> bool:
        return self.roles is None or not self.roles.isdisjoint(roles)

    def covering(self, action: str, resource: str | None, facts: Facts) -> tuple[Permission, Location] | None:
        for permission, location in self.permissions:
            if permission.matches(action, resource, facts, self.effect):
                return permission, location
        return None

    def conditions_hold(self, facts: Facts) -> bool:
        if self.when is not None and not self.when.holds(facts):
            return False
        return self.unless is None or not self.unless.holds(facts)

    def conditions_text(self) -> str:
        words = []
        if self.when is not None:
            words.append(f"when {self.when.describe()}")
        if self.unless is not None:
            words.append(f"unless {self.unless.describe()}")
        return " ".join(words)

    def answer(self, permission: Permission, location: Location) -> tuple[MatchedRule, str]:
        """The rule that decides by C{permission}, and the decision's reason."""
        key = (permission.text, location)
        found = self._answers.get(key)
        if found is None:
            matched = MatchedRule(
                self.kind, self.name, self.number, self.effect, permission.text, location, self.conditions_text()
            )
            found = self._answers[key] = (matched, _because("denied" if self.effect == "deny" else "allowed", matched))
        return found

    @property
    def label(self) -> str:
        if self.kind == "role":
            return f"role {self.name}"
        return f'rule {self.number} "{self.name}"' if self.name else f"rule {self.number}"


#: The context of a request that brings none (Context is immutable).
_NO_CONTEXT = Context()


def _seconds(clock: Clock) -> float:
    if IReactorTime.providedBy(clock):
        return float(clock.seconds())
    return float(clock())


@implementer(IPolicy)
@attrs.frozen
class Policy:
    """
    A loaded, immutable authorization policy.  Make one with L{load} (a
    file) or L{parse} (text); both refuse a bad policy with a L{PolicyError}
    naming the file, line and reason.

    @ivar clock: the time for C{context.time}/C{context.weekday} when a
        request's L{Context} does not give one (C{time.time} by default;
        tests pass a C{task.Clock}).
    @ivar log_allows: the level allowed decisions are logged at
        (C{"debug"} or C{"info"}); denies are always logged at warn.
    """

    source: str
    roles: Mapping[str, Role]
    rules: tuple[Rule, ...]
    clock: Clock = attrs.field(default=time.time, repr=False)
    log_allows: AllowLogLevel = "debug"
    _closure: Mapping[str, frozenset[str]] = attrs.field(factory=dict, repr=False)

    # -- loading ---------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, clock: Clock = time.time) -> Policy:
        """Load the policy file at C{path}."""
        return cls.parse(read_policy_text(path), source=str(path), clock=clock)

    @classmethod
    def parse(cls, text: str, *, source: str = "<policy>", clock: Clock = time.time) -> Policy:
        """The policy C{text} says; C{source} names it in errors and explanations."""
        document, locator = parse_toml(text, source)
        try:
            return _compile(document, locator, source, clock)
        except Invalid as e:
            raise PolicyError(source, locator.line(e.path), e.reason) from None

    # -- roles -------------------------------------------------------------------

    def effective_roles(self, roles: Iterable[str]) -> frozenset[str]:
        """C{roles} and every role they inherit, leaving out roles the policy does not define."""
        result: set[str] = set()
        for role in roles:
            result |= self._closure.get(role, frozenset())
        return frozenset(result)

    def permissions_of(self, role: str) -> tuple[str, ...]:
        """The permissions a role has, its own first, then inherited ones (as written, without repeats)."""
        found: list[str] = []
        order = [role] + [r for r in self.roles if r in self._closure.get(role, ()) and r != role]
        for name in order:
            for permission in self.roles[name].permissions:
                if permission.text not in found:
                    found.append(permission.text)
        return tuple(found)

    # -- deciding ----------------------------------------------------------------

    def decide(
        self,
        identity: Identity,
        action: str,
        resource: str | None = None,
        context: Context | None = None,
        *,
        audit: bool = True,
    ) -> Decision:
        try:
            decision = self._decide(identity, action, resource, context or _NO_CONTEXT)
        except Exception:
            log.failure(
                "error while deciding {action} on {resource} for {identity}",
                action=action,
                resource=resource,
                identity=getattr(identity, "avatar_id", identity),
            )
            decision = Decision(
                False,
                str(getattr(identity, "avatar_id", "?")),
                str(action),
                resource if isinstance(resource, str) else None,
                requested_permission(str(action), resource if isinstance(resource, str) else None),
                None,
                "internal error while evaluating the policy: denied",
                str(getattr(identity, "mechanism", "")),
                str(getattr(identity, "peer", "")),
            )
        if audit:
            _audit(decision, self.log_allows)
        return decision

    def can(self, identity: Identity, action: str, resource: str | None = None, context: Context | None = None) -> bool:
        return self.decide(identity, action, resource, context).allowed

    def require(self, identity: Identity, action: str, resource: str | None = None, context: Context | None = None) -> Decision:
        decision = self.decide(identity, action, resource, context)
        if not decision.allowed:
            raise decision.denied()
        return decision

    def _decide(self, identity: Identity, action: str, resource: str | None, context: Context) -> Decision:
        if resource == "":
            resource = None
        facts: Facts | None = None

        def answer(allowed: bool, rule: MatchedRule | None, reason: str) -> Decision:
            return Decision(
                allowed,
                identity.avatar_id,
                action,
                resource,
                requested_permission(action, resource),
                rule,
                reason,
                identity.mechanism,
                identity.peer,
                # Nothing else varies between two identical requests.
                reusable=facts is None or not facts.time_read,
            )

        if not is_action(action):
            action = str(action)
            return answer(False, None, f"{action!r} is not a valid action name: denied")
        if resource is not None and not isinstance(resource, str):
            resource = str(resource)
            return answer(False, None, "the resource is not a string: denied")
        unsafe = unsafe_segment(resource) if resource is not None else None
        if unsafe is not None:
            return answer(False, None, f"resource {resource!r} has {unsafe}: denied")

        now: datetime.datetime | Callable[[], datetime.datetime] = context.now if context.now is not None else self._now
        facts = Facts(identity, action, resource, context, now)
        roles = self.effective_roles(identity.roles)

        for rule in self.rules:
            if rule.effect != "deny" or not rule.for_roles(roles):
                continue
            covering = rule.covering(action, resource, facts)
            if covering is not None and rule.conditions_hold(facts):
                return answer(False, *rule.answer(*covering))

        near: list[str] = []
        for rule in self.rules:
            if rule.effect != "allow" or not rule.for_roles(roles):
                continue
            covering = rule.covering(action, resource, facts)
            if covering is None:
                continue
            if rule.conditions_hold(facts):
                return answer(True, *rule.answer(*covering))
            near.append(
                f"{rule.label} covers {requested_permission(action, resource)} but {rule.conditions_text()} does not hold"
            )
        reason = "no rule matched: denied by default"
        unknown = sorted(set(identity.roles) - set(self.roles))
        if unknown:
            near.append(f"roles not in the policy: {', '.join(unknown)}")
        if near:
            reason += " (" + "; ".join(near) + ")"
        return answer(False, None, reason)

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(_seconds(self.clock), datetime.UTC)

    # -- description -------------------------------------------------------------

    def summary(self) -> str:
        """The roles and rules, one line each (what C{securenet authz lint} prints)."""
        roles, rules = len(self.roles), len([r for r in self.rules if r.kind == "rule"])
        lines = [f"{self.source}: ok: {roles} role{'s' if roles != 1 else ''}, {rules} rule{'s' if rules != 1 else ''}"]
        for role in self.roles.values():
            extras = [f"line {role.location.line}"]
            if role.inherits:
                extras.append("inherits " + ", ".join(role.inherits))
            own = ", ".join(p.text for p in role.permissions) or "(no permissions of its own)"
            lines.append(f"role {role.name} ({'; '.join(extras)}): {own}")
            if role.inherits:
                lines.append(f"  effective: {', '.join(self.permissions_of(role.name)) or '(none)'}")
        for rule in self.rules:
            if rule.kind != "rule":
                continue
            whom = "roles " + ", ".join(sorted(rule.roles)) if rule.roles is not None else "anyone"
            conditions = rule.conditions_text()
            lines.append(
                f"{rule.label} (line {rule.location.line}): {rule.effect} "
                f"{', '.join(p.text for p, _ in rule.permissions)} for {whom}" + (f" {conditions}" if conditions else "")
            )
        return "\n".join(lines)


def _because(verb: str, matched: MatchedRule) -> str:
    return f"{verb} by {matched.label}" + (f" ({matched.conditions})" if matched.conditions else "")


def _audit(decision: Decision, level: AllowLogLevel) -> None:
    try:
        audit(decision, level)
    except Exception:
        log.failure("could not log an authorization decision")


# -- compiling a document ----------------------------------------------------


def _type_name(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _check_keys(table: Mapping[str, Any], known: Sequence[str], path: TomlPath, where: str) -> None:
    for key in table:
        if key not in known:
            raise Invalid((*path, key), f"unknown key {key!r} in {where} (known: {', '.join(known)})")


def _string(value: Any, path: TomlPath, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(path, f"{what} is a non-empty string, not {_type_name(value)}")
    return value


def _strings(value: Any, path: TomlPath, what: str, *, empty: bool) -> list[str]:
    if not isinstance(value, list):
        raise Invalid(path, f"{what} is an array of strings, not {_type_name(value)}")
    if not value and not empty:
        raise Invalid(path, f"{what} must not be empty")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Invalid((*path, i), f"{what} holds strings, not {_type_name(item)}")
    return value


def _role_name_problem(name: str) -> str | None:
    if not name:
        return "a role name must not be empty"
    if any(c.isspace() or unicodedata.category(c).startswith("C") for c in name) or "," in name:
        return f"role name {name!r} contains whitespace, a control character or a comma"
    return None


def _permissions(
    values: list[str], path: TomlPath, source: str, locator: Locator, where: str
) -> tuple[tuple[Permission, Location], ...]:
    compiled = []
    for i, text in enumerate(values):
        try:
            permission = Permission.parse(text)
        except PatternError as e:
            raise Invalid((*path, i), f"bad permission {text!r} in {where}: {e}") from None
        compiled.append((permission, Location(source, locator.line((*path, i)))))
    return tuple(compiled)


def _compile(document: dict[str, Any], locator: Locator, source: str, clock: Clock) -> Policy:
    _check_keys(document, TOP_KEYS, (), "the policy")
    if "version" in document and (document["version"] != FORMAT_VERSION or isinstance(document["version"], bool)):
        raise Invalid(
            ("version",), f"unsupported policy version {document['version']!r} (this securenet reads version {FORMAT_VERSION})"
        )

    log_allows: AllowLogLevel = "debug"
    if "audit" in document:
        section = document["audit"]
        if not isinstance(section, dict):
            raise Invalid(("audit",), f"audit is a table, not {_type_name(section)}")
        _check_keys(section, AUDIT_KEYS, ("audit",), "[audit]")
        if "log_allows" in section:
            level = section["log_allows"]
            if level not in ("debug", "info"):
                raise Invalid(("audit", "log_allows"), f'log_allows is "debug" or "info", not {level!r}')
            log_allows = level

    roles_table = document.get("roles", {})
    if not isinstance(roles_table, dict):
        raise Invalid(("roles",), f"roles is a table of [roles.NAME] tables, not {_type_name(roles_table)}")
    roles: dict[str, Role] = {}
    for name, body in roles_table.items():
        path: TomlPath = ("roles", name)
        problem = _role_name_problem(name)
        if problem is not None:
            raise Invalid(path, problem)
        if not isinstance(body, dict):
            raise Invalid(path, f"role {name!r} is a table ([roles.{name}]), not {_type_name(body)}")
        where = f"[roles.{name}]"
        _check_keys(body, ROLE_KEYS, path, where)
        permissions = _permissions(
            _strings(body.get("permissions", []), (*path, "permissions"), "permissions", empty=True),
            (*path, "permissions"),
            source,
            locator,
            where,
        )
        inherits = _strings(body.get("inherits", []), (*path, "inherits"), "inherits", empty=True)
        description = body.get("description", "")
        if not isinstance(description, str):
            raise Invalid((*path, "description"), f"description is a string, not {_type_name(description)}")
        roles[name] = Role(
            name,
            tuple(p for p, _ in permissions),
            tuple(loc for _, loc in permissions),
            tuple(inherits),
            description,
            Location(source, locator.line(path)),
        )
    for name, role in roles.items():
        for i, parent in enumerate(role.inherits):
            if parent not in roles:
                raise Invalid(("roles", name, "inherits", i), f"role {name!r} inherits unknown role {parent!r}")
    closure = _closure(roles)

    rules_list = document.get("rules", [])
    if not isinstance(rules_list, list):
        raise Invalid(("rules",), f"rules is an array of tables ([[rules]]), not {_type_name(rules_list)}")
    rules: list[Rule] = []
    names: dict[str, int] = {}
    for index, body in enumerate(rules_list):
        number = index + 1
        path = ("rules", index)
        if not isinstance(body, dict):
            raise Invalid(path, f"rule {number} is a table ([[rules]]), not {_type_name(body)}")
        where = f"rule {number}"
        name = None
        if "name" in body:
            name = _string(body["name"], (*path, "name"), "name")
            if name in names:
                raise Invalid((*path, "name"), f"rule {number} has the same name as rule {names[name]}: {name!r}")
            names[name] = number
            where = f'rule {number} "{name}"'
        _check_keys(body, RULE_KEYS, path, where)
        if "effect" not in body:
            raise Invalid(path, f'{where} needs effect = "allow" or "deny"')
        effect = body["effect"]
        if effect not in ("allow", "deny"):
            raise Invalid((*path, "effect"), f'effect is "allow" or "deny", not {effect!r}')
        if "permissions" not in body:
            raise Invalid(path, f"{where} needs permissions = [...]")
        permissions = _permissions(
            _strings(body["permissions"], (*path, "permissions"), "permissions", empty=False),
            (*path, "permissions"),
            source,
            locator,
            where,
        )
        rule_roles: frozenset[str] | None = None
        if "roles" in body:
            listed = _strings(body["roles"], (*path, "roles"), "roles", empty=False)
            for i, role_name in enumerate(listed):
                if role_name not in roles:
                    raise Invalid((*path, "roles", i), f"{where} is for unknown role {role_name!r}")
            rule_roles = frozenset(listed)
        when = compile_condition(body["when"], (*path, "when")) if "when" in body else None
        unless = compile_condition(body["unless"], (*path, "unless")) if "unless" in body else None
        description = body.get("description", "")
        if not isinstance(description, str):
            raise Invalid((*path, "description"), f"description is a string, not {_type_name(description)}")
        rules.append(
            Rule(
                "rule",
                name,
                number,
                effect,
                rule_roles,
                permissions,
                when,
                unless,
                Location(source, locator.line(path)),
                description,
            )
        )

    grants = [
        Rule(
            "role",
            role.name,
            None,
            "allow",
            frozenset({role.name}),
            tuple(zip(role.permissions, role.permission_locations, strict=True)),
            None,
            None,
            role.location,
            role.description,
        )
        for role in roles.values()
        if role.permissions
    ]
    ordered = sorted([*grants, *rules], key=lambda r: r.location.line or 0)
    return Policy(source, roles, tuple(ordered), clock, log_allows, closure)


def _closure(roles: Mapping[str, Role]) -> dict[str, frozenset[str]]:
    """Each role with every role it inherits, directly or not; a cycle is refused, named."""
    closure: dict[str, frozenset[str]] = {}
    visiting: list[str] = []

    def visit(name: str) -> frozenset[str]:
        done = closure.get(name)
        if done is not None:
            return done
        visiting.append(name)
        found = {name}
        for i, parent in enumerate(roles[name].inherits):
            if parent in visiting:
                cycle = visiting[visiting.index(parent) :] + [parent]
                raise Invalid(("roles", name, "inherits", i), f"role inheritance cycle: {' -> '.join(cycle)}")
            found |= visit(parent)
        visiting.pop()
        closure[name] = frozenset(found)
        return closure[name]

    for name in roles:
        visit(name)
    return closure
