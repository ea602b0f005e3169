"""
Permissions: C{action} or C{action:resource-pattern}.

Actions are dot-separated names (C{kv.read}, C{admin.users.delete}); a
name is letters, digits, C{_} and C{-}.  In a permission, a whole name may
be C{*}, which matches one or more names: C{admin.*} matches C{admin.stop}
and C{admin.users.delete}, C{*} matches every action.

Resources are C{/}-separated paths.  In a resource pattern:

  - C{*} matches any characters within one segment (never C{/}), but a
    segment must be non-empty to match: C{data/*} matches C{data/x}, not
    C{data/x/y} nor C{data/};
  - a segment C{**} matches zero or more whole segments: C{data/**}
    matches C{data}, C{data/x} and C{data/x/y};
  - C{{identity.FIELD}} is replaced by a fact of the identity, as a
    literal: C{*}, C{**} or C{/} in a value never act as wildcards or
    separators;
  - everything else is literal and case-sensitive.

A pattern has no empty segments (except a leading C{/}), no C{.} or C{..}
segments, and C{**} only as a whole segment; so a resource that a pattern
matches keeps matching, and nothing else starts to, if the application
normalizes it.  Resources with C{.}, C{..} or empty segments (C{a//b}, a
trailing C{/}) are denied before any pattern is consulted, deny rules
included: so no spelling of a resource reaches an allow that an explicit
deny covers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import attrs

from securenet.authz._attributes import Facts, Reference, parse_reference

_NAME = r"[A-Za-z0-9_-]+"
_ACTION = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_ACTION_PATTERN_SEGMENT = re.compile(rf"{_NAME}|\*")
_TEMPLATE = re.compile(r"\{([^{}]*)\}")

#: How a rule treats a template it cannot fill (a missing or unsafe value):
#: an allow rule does not match, a deny rule matches as if the value were
#: anything (both fail closed).
Mode = Literal["allow", "deny"]


class PatternError(ValueError):
    """A permission or pattern is malformed; C{str()} says why."""


def is_action(text: str) -> bool:
    """Whether C{text} is a concrete action name (no wildcards)."""
    return isinstance(text, str) and _ACTION.fullmatch(text) is not None


def unsafe_segment(resource: str) -> str | None:
    """
    Why C{resource} is always denied, or None: a C{.} or C{..} segment, or
    an empty one (C{a//b}, a trailing C{/}; a single leading C{/} is
    fine).  An application that normalizes paths would read such a
    resource as another one (C{data//audit/x} is C{data/audit/x}), which a
    deny rule written for the normal form would not cover.
    """
    segments = resource.split("/")
    if resource.startswith("/"):
        segments = segments[1:]
    if any(s in (".", "..") for s in segments):
        return "a '.' or '..' segment"
    if len(segments) > 1 and "" in segments:
        return "an empty segment"
    return None


@attrs.frozen
class ActionPattern:
    text: str
    _regex: re.Pattern[str] = attrs.field(repr=False, eq=False)

    @classmethod
    def parse(cls, text: str) -> ActionPattern:
        if not text:
            raise PatternError("the action is empty")
        parts = text.split(".")
        pieces: list[str] = []
        for part in parts:
            if not _ACTION_PATTERN_SEGMENT.fullmatch(part):
                if "*" in part:
                    raise PatternError(f"action {text!r}: '*' must be a whole name (as in admin.*)")
                raise PatternError(f"action {text!r}: names are letters, digits, '_' and '-', separated by '.'")
            pieces.append(rf"{_NAME}(?:\.{_NAME})*" if part == "*" else re.escape(part))
        return cls(text, re.compile(r"\.".join(pieces)))

    def matches(self, action: str) -> bool:
        return self._regex.fullmatch(action) is not None


# -- resource patterns -------------------------------------------------------


@attrs.frozen
class _Star:
    pass


STAR = _Star()


@attrs.frozen
class _GlobStar:
    pass


GLOBSTAR = _GlobStar()

#: One part of a segment: literal text, C{*}, or a template.
Part = str | _Star | Reference


@attrs.frozen
class _Segment:
    parts: tuple[Part, ...]


@attrs.frozen
class _PathTemplate:
    """A template whose value fills one or more whole segments (C{identity.spiffe_path})."""

    reference: Reference


Segment = _Segment | _GlobStar | _PathTemplate

# What matching runs on: a compiled segment, or "zero or more segments".
_Matcher = re.Pattern[str] | _GlobStar


def _segment_regex(parts: Sequence[str | _Star]) -> re.Pattern[str]:
    return re.compile("".join("[^/]*" if isinstance(p, _Star) else re.escape(p) for p in parts))


def _safe_segment(value: str) -> bool:
    return value not in ("", ".", "..") and "/" not in value


def _template_value(reference: Reference, facts: Facts) -> str | None:
    """The text a template stands for, or None if the value is missing or not one string."""
    value = reference.get(facts)
    if isinstance(value, (tuple, list)):
        value = value[0] if len(value) == 1 else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else None


def _match_segments(matchers: Sequence[_Matcher], segments: Sequence[str]) -> bool:
    """
    Whether C{segments} match C{matchers}.  An empty segment is matched only
    by an empty piece (a leading C{/}) or by C{**}: C{*} needs a character.
    """
    n = len(segments)
    # reachable[j]: the matchers so far can consume exactly the first j segments.
    reachable = [True] + [False] * n
    for matcher in matchers:
        following = [False] * (n + 1)
        if isinstance(matcher, _GlobStar):
            seen = False
            for j in range(n + 1):
                seen = seen or reachable[j]
                following[j] = seen
        else:
            for j in range(n):
                segment = segments[j]
                if reachable[j] and (segment or not matcher.pattern) and matcher.fullmatch(segment):
                    following[j + 1] = True
        reachable = following
    return reachable[n]


@attrs.frozen
class ResourcePattern:
    """A compiled resource pattern (see the module docstring)."""

    text: str
    segments: tuple[Segment, ...]
    _static: tuple[_Matcher, ...] | None = attrs.field(repr=False, eq=False)

    @classmethod
    def parse(cls, text: str, *, templates: bool = True) -> ResourcePattern:
        """
        @param templates: whether C{{identity.FIELD}} templates are allowed.
        @raise PatternError: the pattern is malformed.
        """
        if not text:
            raise PatternError("the resource pattern is empty (leave out ':' for any resource)")
        raw = text.split("/")
        segments: list[Segment] = []
        for index, piece in enumerate(raw):
            if piece == "":
                if index == 0:
                    segments.append(_Segment(("",)))
                    continue
                raise PatternError(f"resource pattern {text!r} has an empty segment ('//' or a trailing '/')")
            if piece in (".", ".."):
                raise PatternError(f"resource pattern {text!r} has a '.' or '..' segment")
            if piece == "**":
                segments.append(GLOBSTAR)
                continue
            if "**" in piece:
                raise PatternError(f"resource pattern {text!r}: '**' must be a whole segment (as in data/**)")
            segments.append(cls._segment(text, piece, templates))
        static: tuple[_Matcher, ...] | None = None
        if all(
            isinstance(s, _GlobStar) or (isinstance(s, _Segment) and not any(isinstance(p, Reference) for p in s.parts))
            for s in segments
        ):
            static = tuple(
                GLOBSTAR if isinstance(s, _GlobStar) else _segment_regex([p for p in s.parts if not isinstance(p, Reference)])
                for s in segments
                if not isinstance(s, _PathTemplate)
            )
        return cls(text, tuple(segments), static)

    @staticmethod
    def _segment(text: str, piece: str, templates: bool) -> Segment:
        parts: list[Part] = []
        position = 0
        for found in _TEMPLATE.finditer(piece):
            parts.extend(_literal_parts(text, piece[position : found.start()]))
            if not templates:
                raise PatternError(f"pattern {text!r}: templates ({{...}}) are not allowed here")
            name = found.group(1).strip()
            try:
                reference = parse_reference(name)
            except ValueError as e:
                raise PatternError(f"resource pattern {text!r}: {e}") from None
            if not reference.identity_field:
                raise PatternError(f"resource pattern {text!r}: only identity.* fields may fill a template, not {name!r}")
            if reference.kind in ("boolean", "time", "weekday"):
                raise PatternError(f"resource pattern {text!r}: {name} is a {reference.kind}, not text")
            if reference.kind == "path":
                if piece != found.group(0):
                    raise PatternError(
                        f"resource pattern {text!r}: {{{name}}} may fill several segments, so it must be a whole segment"
                    )
                return _PathTemplate(reference)
            parts.append(reference)
            position = found.end()
        parts.extend(_literal_parts(text, piece[position:]))
        return _Segment(tuple(parts))

    def matches(self, resource: str, facts: Facts | None = None, mode: Mode = "allow") -> bool:
        """
        Whether C{resource} matches, with templates filled from C{facts}.

        A template whose value is missing, empty, C{.}, C{..}, or (for a
        one-segment field) contains C{/}: in C{"allow"} mode the pattern does
        not match; in C{"deny"} mode it stands for any segment(s).
        """
        matchers = self._static if self._static is not None else self._expand(facts, mode)
        if matchers is None:
            return False
        return _match_segments(matchers, resource.split("/"))

    def _expand(self, facts: Facts | None, mode: Mode) -> tuple[_Matcher, ...] | None:
        matchers: list[_Matcher] = []
        for segment in self.segments:
            if isinstance(segment, _GlobStar):
                matchers.append(GLOBSTAR)
            elif isinstance(segment, _PathTemplate):
                value = None if facts is None else _template_value(segment.reference, facts)
                pieces = value.split("/") if value is not None else []
                if value is None or not all(_safe_segment(p) for p in pieces):
                    if mode == "allow":
                        return None
                    matchers.append(GLOBSTAR)
                    continue
                matchers.extend(_segment_regex([p]) for p in pieces)
            else:
                literal: list[str | _Star] = []
                for part in segment.parts:
                    if isinstance(part, Reference):
                        value = None if facts is None else _template_value(part, facts)
                        if value is None or not _safe_segment(value):
                            if mode == "allow":
                                return None
                            literal.append(STAR)
                        else:
                            literal.append(value)
                    else:
                        literal.append(part)
                matchers.append(_segment_regex(literal))
        return tuple(matchers)

    def __str__(self) -> str:
        return self.text


def _literal_parts(text: str, piece: str) -> list[str | _Star]:
    if "{" in piece or "}" in piece:
        raise PatternError(f"resource pattern {text!r}: '{{' and '}}' only enclose a template such as {{identity.avatar_id}}")
    parts: list[str | _Star] = []
    for i, literal in enumerate(piece.split("*")):
        if i:
            parts.append(STAR)
        if literal:
            parts.append(literal)
    return parts


@attrs.frozen
class Permission:
    """A compiled permission: an action pattern and, optionally, a resource pattern."""

    text: str
    action: ActionPattern
    resource: ResourcePattern | None

    @classmethod
    def parse(cls, text: str) -> Permission:
        """@raise PatternError: the permission is malformed; the message says why."""
        if not isinstance(text, str):
            raise PatternError(f"a permission is a string, not {text!r}")
        action, colon, resource = text.partition(":")
        return cls(
            text,
            ActionPattern.parse(action),
            ResourcePattern.parse(resource) if colon else None,
        )

    def matches(self, action: str, resource: str | None, facts: Facts | None = None, mode: Mode = "allow") -> bool:
        """
        Whether the permission covers C{action} on C{resource}.  Without a
        resource pattern it covers every resource (and none); with one, only
        requests that name a resource it matches.
        """
        if not self.action.matches(action):
            return False
        if self.resource is None:
            return True
        if resource is None:
            return False
        return self.resource.matches(resource, facts, mode)

    def __str__(self) -> str:
        return self.text


@attrs.frozen
class Glob:
    """A condition's C{glob}: the resource-pattern syntax without templates, on any text."""

    text: str
    _matchers: tuple[_Matcher, ...] = attrs.field(repr=False, eq=False)

    @classmethod
    def parse(cls, text: str) -> Glob:
        if not isinstance(text, str) or not text:
            raise PatternError(f"a glob is a non-empty string, not {text!r}")
        matchers: list[_Matcher] = []
        for piece in text.split("/"):
            if piece == "**":
                matchers.append(GLOBSTAR)
            elif "**" in piece:
                raise PatternError(f"glob {text!r}: '**' must be a whole segment")
            else:
                parts: list[str | _Star] = []
                for i, literal in enumerate(piece.split("*")):
                    if i:
                        parts.append(STAR)
                    parts.append(literal)
                matchers.append(_segment_regex(parts) if piece else re.compile(""))
        return cls(text, tuple(matchers))

    def matches(self, value: str) -> bool:
        segments = value.split("/")
        return _match_segments(self._matchers, segments)

    def __str__(self) -> str:
        return self.text
