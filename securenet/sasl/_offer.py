"""
Which mechanisms a connection is offered, from the portal's checkers.

A mechanism is offered because the portal can check what it produces:
C{PLAIN} for any checker of C{IUsernamePassword} (securenet's
L{securenet.cred.PasswordChecker}, or Twisted's own C{memory}/C{file}/C{unix}
checkers), SCRAM for an L{IScramChecker}, C{OAUTHBEARER} for
L{ITokenCredentials}, C{APIKEY} for L{IAPIKeyCredentials}, C{EXTERNAL} for
L{ICertificateCredentials} on a connection with a verified client
certificate, C{ANONYMOUS} for C{IAnonymous}.  So checkers know nothing of
the wire, and a checker written for C{twisted.cred} works unchanged.  A
checker of credentials no standard mechanism produces offers its own by
providing L{IMechanismProvider}.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import attrs
from twisted.cred.credentials import IAnonymous, IUsernamePassword
from twisted.cred.portal import Portal

from securenet.interfaces import (
    IAPIKeyCredentials,
    ICertificateCredentials,
    IMechanismProvider,
    IScramChecker,
    ITokenCredentials,
)
from securenet.sasl._apikey import APIKeyMechanismFactory
from securenet.sasl._mechanism import ChannelBindings
from securenet.sasl._oauthbearer import OAuthBearerMechanismFactory
from securenet.sasl._plain import PLAIN
from securenet.sasl._scram import ScramMechanismFactory

#: Offered in this order: strongest first.
PREFERENCE = (
    "EXTERNAL",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-256",
    "OAUTHBEARER",
    "APIKEY",
    "PLAIN",
    "ANONYMOUS",
)


@attrs.frozen
class BuiltinMechanism:
    """EXTERNAL and ANONYMOUS: their credentials come from the connection, not the wire."""

    name: str
    second_factor_allowed: bool = False


EXTERNAL = BuiltinMechanism("EXTERNAL")
ANONYMOUS = BuiltinMechanism("ANONYMOUS")

BindingsSource = ChannelBindings | Callable[[], ChannelBindings]

_ORDER = {name: i for i, name in enumerate(PREFERENCE)}
_API_KEY = APIKeyMechanismFactory()
_OAUTHBEARER = OAuthBearerMechanismFactory()

# The wire mechanisms of a portal, by the checkers it had when they were
# worked out (computed once per portal, not once per connection).
_cache: weakref.WeakKeyDictionary[Portal, tuple[tuple[int, ...], list[Any]]] = weakref.WeakKeyDictionary()


def _wire_mechanisms(portal: Portal) -> list[Any]:
    checkers = list({id(c): c for c in portal.checkers.values()}.values())
    key = tuple(id(c) for c in checkers) + tuple(id(i) for i in portal.checkers)
    cached = _cache.get(portal)
    if cached is not None and cached[0] == key:
        return cached[1]
    found: list[Any] = []
    for checker in checkers:
        if IScramChecker.providedBy(checker):
            found.append(ScramMechanismFactory(checker, plus=True))
            found.append(ScramMechanismFactory(checker, plus=False))
    if ITokenCredentials in portal.checkers:
        found.append(_OAUTHBEARER)
    if IAPIKeyCredentials in portal.checkers:
        found.append(_API_KEY)
    if IUsernamePassword in portal.checkers:
        found.append(PLAIN)
    for checker in checkers:
        if IMechanismProvider.providedBy(checker):
            found.extend(checker.mechanisms())
    _cache[portal] = (key, found)
    return found


def offered_mechanisms(portal: Portal, has_certificate: bool, bindings: BindingsSource) -> dict[str, Any]:
    """
    The mechanisms this connection can use, by name, in preference order.

    @param has_certificate: the client presented a verified certificate.
    @param bindings: the connection's channel bindings, or a function
        computing them: it is called only if a -PLUS mechanism is a candidate.
    """
    found: dict[str, Any] = {}
    if has_certificate and ICertificateCredentials in portal.checkers:
        found["EXTERNAL"] = EXTERNAL
    for factory in _wire_mechanisms(portal):
        name = factory.name
        if name.endswith("-PLUS"):
            if not getattr(getattr(factory, "checker", None), "plus", True):
                continue
            if not isinstance(bindings, ChannelBindings):
                bindings = bindings()
            if bindings.tls_exporter is None and bindings.tls_server_end_point is None:
                continue
        found.setdefault(name, factory)
    if IAnonymous in portal.checkers:
        found["ANONYMOUS"] = ANONYMOUS
    return dict(sorted(found.items(), key=lambda item: (_ORDER.get(item[0], len(_ORDER)), item[0])))
