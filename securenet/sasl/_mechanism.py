"""
SASL mechanisms (RFC 4422), as the cred layer sees them.

A checker that can be reached over the wire says so by providing
L{IMechanismProvider}: it lists the mechanisms (EXTERNAL, PLAIN,
SCRAM-SHA-256, ...) whose final credentials it checks.  The session layer
(L{securenet.session}) offers every mechanism of every checker in
the portal, runs the chosen one step by step, and hands the credentials it
produces to C{portal.login} -- so the decision is always a checker's.

Server side, a mechanism is a small state machine::

    step(initial response or None) -> Challenge(bytes)   send "+ <base64>", wait for a response
                                   -> Complete(credentials)  log in with these
    step(response) -> ...

Client side, L{IClientMechanism} produces the initial response and answers
challenges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from zope.interface import implementer

from securenet._errors import SecurenetError
from securenet.interfaces import IServerMechanism


class MechanismError(SecurenetError):
    """
    The client's mechanism data is malformed or out of order.  The session
    answers C{NO MALFORMED}: it says nothing about whether the user exists.
    """


@attrs.frozen
class ChannelBindings:
    """
    The TLS channel a mechanism may bind to (RFC 5929, RFC 9266).

    @ivar tls_exporter: 32 bytes of keying material exported with the label
        C{EXPORTER-Channel-Binding} and no context (RFC 9266), or None.
    @ivar tls_server_end_point: the hash of the server's certificate
        (RFC 5929 section 4), or None.
    """

    tls_exporter: bytes | None = None
    tls_server_end_point: bytes | None = None

    def get(self, name: str) -> bytes | None:
        """The binding data for a channel-binding type name, or None if unknown/unavailable."""
        if name == "tls-exporter":
            return self.tls_exporter
        if name == "tls-server-end-point":
            return self.tls_server_end_point
        return None


@attrs.frozen
class Challenge:
    """Send C{data} to the client as a continuation and wait for its response."""

    data: bytes


@attrs.frozen
class Complete:
    """
    The exchange is over: log in with C{credentials}.

    @ivar success_data: called after a successful login; returns the
        "additional data with success" to send the client (e.g. SCRAM's
        server-final message), or None.
    """

    credentials: Any
    success_data: Callable[[], bytes | None] | None = None


Step = Challenge | Complete


@implementer(IServerMechanism)
class SingleMessageMechanism:
    """
    A server mechanism whose whole credential is one client message (APIKEY,
    OAUTHBEARER): the initial response, or the answer to an empty challenge
    when the client sent none.  C{parse} turns the message into credentials,
    raising L{MechanismError} for a malformed one.
    """

    def __init__(self, name: str, parse: Callable[[bytes], Any]) -> None:
        self.name = name
        self.parse = parse
        self._state = "start"

    def step(self, response: bytes | None) -> defer.Deferred[Step]:
        if self._state == "start" and response is None:
            self._state = "waiting"
            return defer.succeed(Challenge(b""))
        if self._state == "done" or response is None:
            return defer.fail(MechanismError(f"{self.name}: unexpected step"))
        self._state = "done"
        try:
            return defer.succeed(Complete(self.parse(response)))
        except MechanismError:
            return defer.fail()


class _NoChallenges:
    name = ""

    def respond(self, challenge: bytes) -> bytes:
        raise MechanismError(f"{self.name} expects no challenge, but the server sent one")

    def verify_success(self, data: bytes | None) -> None:
        if data:
            raise MechanismError(f"{self.name} expects no data with success")
