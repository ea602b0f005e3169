"""
HTTPS clients (C{twisted.web.client.Agent}, treq) that check the server
the securenet way: a L{ClientTLSPolicy} -- trust roots, pins, TOFU, a
client certificate for mutual TLS -- as the Agent's TLS policy::

    policy = ClientTLSPolicy.from_files(trust_roots="certs/ca.pem",
                                        certificate="certs/dev-client.pem", private_key="certs/dev-client.key")
    http = treq.client.HTTPClient(Agent(reactor, contextFactory=HTTPSPolicy(policy)))
    response = await http.get("https://localhost:8443/me")
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from securenet.tls._policy import ClientTLSPolicy


@implementer(IPolicyForHTTPS)
class HTTPSPolicy:
    """An C{IPolicyForHTTPS} made of a L{ClientTLSPolicy}: each host is checked by it (name, pins, ...)."""

    def __init__(self, policy: ClientTLSPolicy) -> None:
        self.policy = policy

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return self.policy.creator(hostname.decode("idna"), port)


__all__ = ["HTTPSPolicy"]
