"""
Strict JSON request bodies.

Python's C{json} module accepts more than RFC 8259 interoperably means, and
some of it is dangerous in a server: C{NaN} and C{Infinity}, C{1e999}
(which becomes C{inf}), integers of thousands of digits, duplicate keys
(which JSON parsers resolve differently: the one that checks a field and
the one that uses it may disagree), nesting deep enough to exhaust the
stack, and -- given bytes -- UTF-16 or UTF-32 guessed from the first bytes.
L{parse_json} refuses all of it with a L{JSONBodyError} (a 400 answer)
naming the problem:

  - the body must be UTF-8 (no BOM), and every string must be valid Unicode
    (no lone surrogates written as C{\\ud800} escapes);
  - no C{NaN}/C{Infinity}; a float must be finite;
  - an integer must be at most L{JSONLimits.max_integer} in magnitude
    (2**53 - 1 by default: the integers every JSON implementation reads
    exactly);
  - no key twice in one object;
  - at most L{JSONLimits.max_depth} nested arrays and objects.

L{read_json} reads a request's body: it must be C{application/json}
(L{UnsupportedMediaType}, 415) and at most L{JSONLimits.max_bytes}
(L{PayloadTooLarge}, 413).
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs
from twisted.web.iweb import IRequest

from securenet.web._errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

#: The default largest request body, in bytes.
MAX_BODY = 64 * 1024

#: The default deepest nesting of arrays and objects.
MAX_DEPTH = 32

#: The default largest integer magnitude: 2**53 - 1 (I-JSON, RFC 7493 2.2).
MAX_INTEGER = 2**53 - 1


@attrs.frozen
class JSONLimits:
    """What L{parse_json} and L{read_json} accept."""

    max_bytes: int = MAX_BODY
    max_depth: int = MAX_DEPTH
    max_integer: int = MAX_INTEGER

    def __attrs_post_init__(self) -> None:
        if self.max_bytes < 2 or self.max_depth < 1 or self.max_integer < 1:
            raise ValueError("JSON limits must be positive (max_bytes at least 2)")


class JSONBodyError(BadRequest):
    """The body is not acceptable JSON; the message says why."""

    default_error = "invalid_json"


def _int_parser(limit: int) -> Any:
    digits = len(str(limit))

    def parse_int(text: str) -> int:
        # Refuse by length first: int() of a huge string is slow.
        if len(text.lstrip("-")) > digits or abs(int(text)) > limit:
            raise JSONBodyError(f"integer out of range: JSON integers must be at most {limit} in magnitude")
        return int(text)

    return parse_int


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONBodyError("number out of range: it does not fit a finite double")
    return value


def _parse_constant(name: str) -> Any:
    raise JSONBodyError(f"{name} is not JSON: numbers must be finite")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            shown = key if len(key) <= 40 else key[:37] + "..."
            raise JSONBodyError(f"duplicate key {shown!r} in a JSON object")
        result[key] = value
    return result


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONBodyError("a JSON string holds a lone surrogate (not valid Unicode)") from None


def _check_tree(value: Any, max_depth: int) -> None:
    """Depth and string validity of a parsed document, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, (dict, list)):
            if depth + 1 > max_depth:
                raise JSONBodyError(f"JSON nests deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def parse_json(data: bytes, limits: JSONLimits = JSONLimits()) -> Any:
    """
    Parse C{data} as strict JSON (see the module docstring).

    @raise JSONBodyError: the body is refused; C{message} says why.
    @raise PayloadTooLarge: C{data} is longer than C{limits.max_bytes}.
    """
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"the request body is larger than {limits.max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JSONBodyError(f"the request body is not valid UTF-8 (byte {e.start})", error="invalid_utf8") from None
    if text.startswith("\ufeff"):
        raise JSONBodyError("the request body starts with a byte order mark; JSON must not", error="invalid_utf8")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_int_parser(limits.max_integer),
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except RecursionError:
        raise JSONBodyError(f"JSON nests deeper than {limits.max_depth} levels") from None
    except json.JSONDecodeError as e:
        raise JSONBodyError(f"the request body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except ValueError as e:
        # int() refusing a huge literal (sys.set_int_max_str_digits).
        raise JSONBodyError(f"the request body is not acceptable JSON: {e}") from None
    _check_tree(value, limits.max_depth)
    return value


_JSON_TYPES = (b"application/json",)


def _media_type(request: IRequest) -> tuple[bytes, dict[bytes, bytes]]:
    raw = request.getHeader(b"content-type")
    if raw is None:
        return b"", {}
    kind, _, rest = raw.partition(b";")
    params: dict[bytes, bytes] = {}
    for part in rest.split(b";"):
        name, eq, value = part.strip().partition(b"=")
        if eq:
            params[name.strip().lower()] = value.strip().strip(b'"').lower()
    return kind.strip().lower(), params


def request_body(request: IRequest, max_bytes: int) -> bytes:
    """
    The request's body, at most C{max_bytes}.  A L{securenet.web.SecureSite}
    refuses larger bodies before reading them; this check also holds under a
    plain C{Site}, which reads the whole body first.

    @raise PayloadTooLarge: the body is longer.
    """
    content = getattr(request, "content", None)
    if content is None:
        return b""
    content.seek(0, 2)
    size = content.tell()
    if size > max_bytes:
        raise PayloadTooLarge(f"the request body is larger than {max_bytes} bytes")
    content.seek(0)
    data: bytes = content.read(max_bytes + 1)
    content.seek(0)
    return data


def read_json(request: IRequest, limits: JSONLimits = JSONLimits()) -> Any:
    """
    The request's JSON body.  It must be C{Content-Type: application/json}
    (with no charset, or C{charset=utf-8}).

    @raise UnsupportedMediaType: another content type (415).
    @raise PayloadTooLarge: too long (413).
    @raise JSONBodyError: not acceptable JSON (400).
    """
    kind, params = _media_type(request)
    if kind not in _JSON_TYPES:
        raise UnsupportedMediaType("the request body must be JSON (Content-Type: application/json)")
    charset = params.get(b"charset")
    if charset is not None and charset not in (b"utf-8", b"utf8"):
        raise UnsupportedMediaType("a JSON request body must be UTF-8")
    data = request_body(request, limits.max_bytes)
    if not data.strip():
        raise JSONBodyError("the request body is empty; a JSON object is expected")
    return parse_json(data, limits)


def read_json_object(request: IRequest, limits: JSONLimits = JSONLimits()) -> dict[str, Any]:
    """Like L{read_json}, and the document must be an object."""
    value = read_json(request, limits)
    if not isinstance(value, dict):
        raise JSONBodyError("the request body must be a JSON object")
    return value


def dump_json(value: Any) -> bytes:
    """A response body: compact JSON, ASCII only (safe whatever the client assumes), a final newline."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii") + b"\n"


__all__ = [
    "JSONBodyError",
    "JSONLimits",
    "MAX_BODY",
    "MAX_DEPTH",
    "MAX_INTEGER",
    "dump_json",
    "parse_json",
    "read_json",
    "read_json_object",
    "request_body",
]
