"""
A small publish/subscribe service for device telemetry, on
L{SecureLineReceiver}.

    PUB TOPIC VALUE     publish (telemetry.publish on telemetry/TOPIC)   -> OK | ERR ...
    SUB PATTERN         subscribe (telemetry.subscribe on telemetry/PATTERN) -> OK | ERR ...
    UNSUB PATTERN       stop                                              -> OK | ERR ...
    QUIT
and, pushed to subscribers:
    MSG TOPIC VALUE

Topics are paths (C{device/dev1/temperature}); a PATTERN may use C{*}
within a segment and C{**} for any number of segments (C{device/**}).
Errors are C{ERR DENIED <why>} (the policy refused) or C{ERR BAD <why>}.

With examples/telemetry/policy.toml, a device whose certificate carries
C{URI:spiffe://example.org/device/dev1} may publish to
C{device/dev1/<metric>} and nowhere else; an C{operator} may subscribe
to anything, once they passed a second factor (TOTP).

Serve it::

    twistd -n securenet --app examples.telemetry.server.TelemetryFactory --policy examples/telemetry/policy.toml ...
"""

from __future__ import annotations

import re

from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from securenet.authz import AuthorizationDenied, Glob
from securenet.protocols import SecureLineReceiver

log = Logger(namespace="examples.telemetry")

SEGMENT = re.compile(r"[A-Za-z0-9_.:-]+")
PATTERN_SEGMENT = re.compile(r"[A-Za-z0-9_.:*-]+")
MAX_TOPIC = 256
MAX_VALUE = 1024
MAX_SUBSCRIPTIONS = 32


class BadRequest(Exception):
    """A malformed line, topic or pattern; the message says why."""


def check_topic(topic: str, *, pattern: bool = False) -> str:
    """C{topic} if it is a valid topic (or, with C{pattern}, topic pattern)."""
    allowed = PATTERN_SEGMENT if pattern else SEGMENT
    if not topic or len(topic) > MAX_TOPIC:
        raise BadRequest(f"a topic is 1 to {MAX_TOPIC} characters")
    for segment in topic.split("/"):
        if segment in (".", "..") or not allowed.fullmatch(segment) or ("**" in segment and segment != "**"):
            what = "pattern" if pattern else "topic"
            raise BadRequest(
                f"bad {what} {topic!r}: segments are letters, digits, '_', '-', '.', ':'" + (", '*' or '**'" if pattern else "")
            )
    return topic


def resource(topic: str) -> str:
    return f"telemetry/{topic}"


class TelemetryProtocol(SecureLineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 2048
    factory: TelemetryFactory

    def connectionMade(self) -> None:
        super().connectionMade()
        self.subscriptions: dict[str, Glob] = {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.subscribers.discard(self)

    def reply(self, text: str) -> None:
        self.sendLine(text.encode("utf-8"))

    def lineReceived(self, line: bytes) -> None:
        try:
            text = line.rstrip(b"\r").decode("utf-8")
            verb, _, rest = text.strip().partition(" ")
            if verb == "PUB":
                topic, _, value = rest.partition(" ")
                self.publish(check_topic(topic), value.strip())
            elif verb == "SUB":
                self.subscribe(check_topic(rest.strip(), pattern=True))
            elif verb == "UNSUB":
                if self.subscriptions.pop(rest.strip(), None) is None:
                    raise BadRequest(f"not subscribed to {rest.strip()!r}")
            elif verb == "QUIT":
                self.reply("OK bye")
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            else:
                raise BadRequest("expected PUB TOPIC VALUE, SUB PATTERN, UNSUB PATTERN or QUIT")
        except AuthorizationDenied as denied:
            self.reply(f"ERR DENIED {denied}")
        except (BadRequest, UnicodeDecodeError) as e:
            self.reply(f"ERR BAD {e}")
        else:
            self.reply("OK")

    def publish(self, topic: str, value: str) -> None:
        if not value or len(value) > MAX_VALUE:
            raise BadRequest(f"a value is 1 to {MAX_VALUE} characters")
        self.require("telemetry.publish", resource(topic))
        self.factory.deliver(topic, value)

    def subscribe(self, pattern: str) -> None:
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS and pattern not in self.subscriptions:
            raise BadRequest(f"at most {MAX_SUBSCRIPTIONS} subscriptions")
        self.require("telemetry.subscribe", resource(pattern))
        self.subscriptions[pattern] = Glob.parse(pattern)
        self.factory.subscribers.add(self)

    def wants(self, topic: str) -> bool:
        """
        Whether a published C{topic} goes to this subscriber: a pattern
        matches, and the policy allows it this very topic (a pattern was
        allowed as a whole; this keeps a wildcard from reaching further
        than the permissions behind it).  Not logged: every delivery would be.
        """
        if not any(glob.matches(topic) for glob in self.subscriptions.values()):
            return False
        policy = self.policy
        return policy is not None and policy.decide(self.identity, "telemetry.subscribe", resource(topic), audit=False).allowed


class TelemetryFactory(Factory[TelemetryProtocol]):
    protocol = TelemetryProtocol

    def __init__(self) -> None:
        self.subscribers: set[TelemetryProtocol] = set()

    def deliver(self, topic: str, value: str) -> None:
        for subscriber in list(self.subscribers):
            if subscriber.wants(topic):
                subscriber.reply(f"MSG {topic} {value}")
