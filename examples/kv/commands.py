"""
The key-value service's AMP commands, shared by the server and its clients.

Each is a L{SecureCommand}: C{permission} and C{resource} say what the
policy must allow before the server's responder runs (the resource is the
key itself, so policies speak of keys: C{kv.write:users/{identity.avatar_id}/**}).
A refused call fails on the client with L{CommandDenied}.

Keys are paths: C{/}-separated non-empty segments, no C{.} or C{..}.
"""

from __future__ import annotations

from twisted.protocols import amp

from securenet.protocols import CommandDenied, SecureCommand


class NoSuchKey(Exception):
    """The key has no value."""


class BadKey(Exception):
    """The key is not a valid path (the message says why)."""


class Get(SecureCommand):
    """The value of C{key}."""

    arguments = [(b"key", amp.Unicode())]
    response = [(b"value", amp.Unicode())]
    errors = {NoSuchKey: b"NO_SUCH_KEY", BadKey: b"BAD_KEY"}
    permission = "kv.read"
    resource = "{key}"


class Set(SecureCommand):
    """Give C{key} a value."""

    arguments = [(b"key", amp.Unicode()), (b"value", amp.Unicode())]
    response = []
    errors = {BadKey: b"BAD_KEY"}
    permission = "kv.write"
    resource = "{key}"


class Delete(SecureCommand):
    """Remove C{key}."""

    arguments = [(b"key", amp.Unicode())]
    response = []
    errors = {NoSuchKey: b"NO_SUCH_KEY", BadKey: b"BAD_KEY"}
    permission = "kv.delete"
    resource = "{key}"


class List(SecureCommand):
    """
    The keys at or below the path C{prefix} (C{""}: every key), sorted;
    C{truncated} when they did not all fit in one answer.
    """

    arguments = [(b"prefix", amp.Unicode())]
    response = [(b"keys", amp.ListOf(amp.Unicode())), (b"truncated", amp.Boolean())]
    errors = {BadKey: b"BAD_KEY"}
    permission = "kv.list"
    resource = "{prefix}"


__all__ = ["BadKey", "Delete", "Get", "List", "NoSuchKey", "Set", "CommandDenied"]
