"""
What a policy can see of a request: references such as
C{identity.attributes.team} or C{context.peer}, and L{Facts}, which
resolves them for one request.

Every reference names one value and has a kind; conditions and resource
templates are checked against the kind when the policy is loaded, so a
typo or a meaningless test is refused then, never silently false at run
time.  A value that is missing for a request (no certificate, no such
attribute) resolves to None.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
from cryptography import x509

from securenet.cred._identity import Identity
from securenet.pki._facts import CertificateFacts

#: What a reference's value is:
#:   string   -- a str (or None)
#:   boolean  -- True or False
#:   strings  -- a tuple of str (multi-valued: a test holds if it holds for one of them)
#:   path     -- a str of C{/}-separated segments (in a resource template it may fill several segments)
#:   time     -- minutes since midnight, UTC
#:   weekday  -- mon, tue, ... sun (UTC)
#:   any      -- a JSON value from a store or the application (str, int, float, bool, list, dict)
Kind = Literal["string", "boolean", "strings", "path", "time", "weekday", "any"]

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_NAME_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+(?:\.[0-9]+)+")
_SAN_KINDS = {"dns": "DNS", "ip": "IP", "uri": "URI", "email": "email"}
# SPIFFE ID (spiffe.io SPIFFE-ID standard, section 2): lower-case trust
# domain; path segments of letters, digits, '.', '-', '_', never '.' or '..'.
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


@attrs.frozen
class Context:
    """
    The facts of a request that are not the identity's.

    @ivar now: when the request is decided (UTC; a naive datetime is taken
        as UTC), or None for the policy's clock.
    @ivar peer: the peer's address (C{host}, C{host:port}, C{[v6]:port}),
        or None for the identity's C{peer}.  A web front end behind a proxy
        passes the client's real address here.
    @ivar resource_attributes: facts about the resource the application
        knows (owner, classification, ...): C{resource.attributes.*}.
    @ivar attributes: any other facts of the request: C{context.attributes.*}.
    """

    now: datetime.datetime | None = None
    peer: str | None = None
    resource_attributes: Mapping[str, Any] = attrs.field(factory=dict)
    attributes: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class SpiffeID:
    """A SPIFFE ID (C{spiffe://trust-domain/path}) from a certificate's URI SAN."""

    trust_domain: str
    path: str  # without the leading "/"; "" for a trust domain's own ID

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}/{self.path}" if self.path else f"spiffe://{self.trust_domain}"


def parse_spiffe_id(uri: str) -> SpiffeID | None:
    """C{uri} as a SPIFFE ID, or None if it is not a valid one."""
    if not uri.startswith("spiffe://"):
        return None
    rest = uri[len("spiffe://") :]
    trust_domain, slash, path = rest.partition("/")
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        return None
    if slash:
        segments = path.split("/")
        if any(s in (".", "..") or not _SPIFFE_SEGMENT.fullmatch(s) for s in segments):
            return None
    return SpiffeID(trust_domain, path)


def spiffe_id_of(certificate: CertificateFacts | None) -> SpiffeID | None:
    """
    The SPIFFE ID of a certificate: its one C{spiffe://} URI SAN.  None if
    it has none, or more than one (an SVID has exactly one; several are
    ambiguous, and ambiguity never grants anything).
    """
    if certificate is None:
        return None
    uris = [u for u in certificate.sans_of_kind("URI") if u.lower().startswith("spiffe://")]
    if len(uris) != 1:
        return None
    return parse_spiffe_id(uris[0])


def subject_attributes(subject: str) -> dict[str, tuple[str, ...]]:
    """
    The attributes of an RFC 4514 distinguished name, by short name in upper
    case (C{CN}, C{OU}, C{O}, ...) or dotted OID; an attribute may repeat.
    Empty if the text cannot be parsed.
    """
    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError:
        return {}
    found: dict[str, list[str]] = {}
    for attribute in name:
        value = attribute.value
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        found.setdefault(attribute.rfc4514_attribute_name.upper(), []).append(text)
    return {k: tuple(v) for k, v in found.items()}


def peer_address(text: str | None) -> IPAddress | None:
    """
    The IP address in a peer description (C{192.0.2.1:443}, C{[2001:db8::1]:443},
    a bare address), or None.  An IPv4-mapped IPv6 address is its IPv4
    address, so IPv4 networks match it.
    """
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        host = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        host = text.partition(":")[0]
    else:
        host = text
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


class Facts:
    """The values of references for one request, computed when first asked for."""

    def __init__(
        self,
        identity: Identity,
        action: str,
        resource: str | None,
        context: Context,
        now: datetime.datetime | Callable[[], datetime.datetime],
    ) -> None:
        self.identity = identity
        self.action = action
        self.resource = resource
        self.context = context
        # A function: the clock is read only if a condition asks for the time.
        self._now = now
        #: Whether a condition asked for the time.
        self.time_read = False
        self._spiffe: SpiffeID | None | Literal[False] = False
        self._subject: dict[str, tuple[str, ...]] | None = None

    @property
    def now(self) -> datetime.datetime:
        self.time_read = True
        if not isinstance(self._now, datetime.datetime):
            self._now = self._now()
        return _utc(self._now)

    @property
    def spiffe(self) -> SpiffeID | None:
        if self._spiffe is False:
            self._spiffe = spiffe_id_of(self.identity.certificate)
        return self._spiffe

    def subject(self) -> dict[str, tuple[str, ...]]:
        if self._subject is None:
            certificate = self.identity.certificate
            self._subject = subject_attributes(certificate.subject) if certificate is not None else {}
        return self._subject

    def peer(self) -> IPAddress | None:
        return peer_address(self.context.peer if self.context.peer is not None else self.identity.peer)


@attrs.frozen
class Reference:
    """A named value of a request, e.g. C{identity.spiffe_path}."""

    text: str
    kind: Kind
    get: Callable[[Facts], Any] = attrs.field(repr=False, eq=False)

    @property
    def identity_field(self) -> bool:
        """Whether this is a fact of the identity (only those may fill resource templates)."""
        return self.text.startswith("identity.")

    def __str__(self) -> str:
        return self.text


def _certificate(get: Callable[[CertificateFacts], Any]) -> Callable[[Facts], Any]:
    def getter(facts: Facts) -> Any:
        certificate = facts.identity.certificate
        return None if certificate is None else get(certificate)

    return getter


def _spiffe(get: Callable[[SpiffeID], str]) -> Callable[[Facts], Any]:
    def getter(facts: Facts) -> Any:
        spiffe = facts.spiffe
        return None if spiffe is None else get(spiffe)

    return getter


def _time(facts: Facts) -> int:
    return facts.now.hour * 60 + facts.now.minute


def _peer(facts: Facts) -> str | None:
    address = facts.peer()
    return None if address is None else address.compressed


_FIXED: dict[str, tuple[Kind, Callable[[Facts], Any]]] = {
    "identity.avatar_id": ("string", lambda f: f.identity.avatar_id),
    "identity.mechanism": ("string", lambda f: f.identity.mechanism),
    "identity.second_factor": ("string", lambda f: f.identity.second_factor),
    "identity.mfa": ("boolean", lambda f: f.identity.mfa),
    "identity.anonymous": ("boolean", lambda f: f.identity.anonymous),
    "identity.scopes": ("strings", lambda f: tuple(f.identity.scopes)),
    "identity.spiffe_id": ("string", _spiffe(str)),
    "identity.spiffe_trust_domain": ("string", _spiffe(lambda s: s.trust_domain)),
    "identity.spiffe_path": ("path", _spiffe(lambda s: s.path)),
    "identity.certificate.subject": ("string", _certificate(lambda c: c.subject)),
    "identity.certificate.common_name": ("string", _certificate(lambda c: c.common_name)),
    "identity.certificate.issuer": ("string", _certificate(lambda c: c.issuer)),
    "identity.certificate.pin": ("string", _certificate(lambda c: c.pin)),
    "identity.certificate.sans": ("strings", _certificate(lambda c: tuple(c.sans))),
    "resource.name": ("string", lambda f: f.resource),
    "context.time": ("time", _time),
    "context.weekday": ("weekday", lambda f: WEEKDAYS[f.now.weekday()]),
    "context.peer": ("string", _peer),
}

#: Every fixed reference, for documentation and error messages.
FIXED_REFERENCES: tuple[str, ...] = tuple(_FIXED)

#: The families of references with a variable last part.
REFERENCE_FAMILIES: tuple[str, ...] = (
    "identity.attributes.KEY",
    "identity.certificate.subject.ATTR",
    "identity.certificate.san.KIND",
    "resource.attributes.KEY",
    "context.attributes.KEY",
)


def _mapping_lookup(root: Callable[[Facts], Any], keys: tuple[str, ...]) -> Callable[[Facts], Any]:
    def getter(facts: Facts) -> Any:
        value = root(facts)
        for key in keys:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value

    return getter


_MAPPINGS: dict[str, Callable[[Facts], Any]] = {
    "identity.attributes.": lambda f: f.identity.attributes,
    "resource.attributes.": lambda f: f.context.resource_attributes,
    "context.attributes.": lambda f: f.context.attributes,
}


def parse_reference(text: str) -> Reference:
    """
    The reference named C{text}.

    @raise ValueError: no such reference; the message lists the valid ones.
    """
    fixed = _FIXED.get(text)
    if fixed is not None:
        return Reference(text, fixed[0], fixed[1])
    for prefix, root in _MAPPINGS.items():
        if text.startswith(prefix):
            keys = tuple(text[len(prefix) :].split("."))
            if not all(_ATTRIBUTE_KEY.fullmatch(k) for k in keys):
                raise ValueError(f"{text!r} is not a valid attribute reference (keys are letters, digits, '_', '-')")
            return Reference(text, "any", _mapping_lookup(root, keys))
    prefix = "identity.certificate.subject."
    if text.startswith(prefix):
        attribute = text[len(prefix) :]
        if not _NAME_ATTRIBUTE.fullmatch(attribute):
            raise ValueError(f"{text!r}: {attribute!r} is not a name attribute (CN, OU, O, ... or a dotted OID)")
        key = attribute.upper()
        return Reference(text, "strings", lambda f: f.subject().get(key, ()) if f.identity.certificate is not None else None)
    prefix = "identity.certificate.san."
    if text.startswith(prefix):
        kind = _SAN_KINDS.get(text[len(prefix) :].lower())
        if kind is None:
            raise ValueError(f"{text!r}: the SAN kinds are DNS, IP, URI and email")
        return Reference(text, "strings", _certificate(lambda c: c.sans_of_kind(kind)))
    close = difflib.get_close_matches(text, FIXED_REFERENCES, n=1)
    if close:
        raise ValueError(f"unknown attribute {text!r} (did you mean {close[0]}?)")
    raise ValueError(f"unknown attribute {text!r} (known: {', '.join(FIXED_REFERENCES)}, {', '.join(REFERENCE_FAMILIES)})")
