"""
The key-value service: an AMP server on L{SecureAMP}.

The responders hold no authorization code: each command declares its
permission (examples/kv/commands.py), and SecureAMP asks the policy before
a responder runs, answering C{COMMAND-DENIED} otherwise (the connection stays
open).  The values live in memory, for as long as the server runs.

Serve it::

    twistd -n securenet --app examples.kv.server.KVFactory --policy examples/kv/policy.toml ...
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.logger import Logger

from examples.kv.commands import BadKey, Delete, Get, List, NoSuchKey, Set
from securenet.protocols import SecureAMP

log = Logger(namespace="examples.kv")

MAX_KEY = 256
#: Keys answered by one List, at most (an AMP value is limited to 64 KiB).
LIST_BYTES = 60_000


def check_key(key: str, *, empty: bool = False) -> str:
    """C{key} if it is a path of non-empty segments (no C{.}, C{..}, spaces or control characters)."""
    if not key:
        if empty:
            return key
        raise BadKey("the key is empty")
    if len(key) > MAX_KEY:
        raise BadKey(f"the key is longer than {MAX_KEY} characters")
    if any(c.isspace() or not c.isprintable() for c in key):
        raise BadKey("the key has a space or a control character")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise BadKey("the key has an empty, '.' or '..' segment")
    return key


class KVProtocol(SecureAMP):
    factory: KVFactory

    @Get.responder
    def get_value(self, key: str) -> dict[str, str]:
        try:
            return {"value": self.factory.data[check_key(key)]}
        except KeyError:
            raise NoSuchKey(key) from None

    @Set.responder
    def set_value(self, key: str, value: str) -> dict[str, str]:
        self.factory.data[check_key(key)] = value
        log.info("{identity} set {key}", identity=self.identity.avatar_id, key=key)
        return {}

    @Delete.responder
    def delete_key(self, key: str) -> dict[str, str]:
        if self.factory.data.pop(check_key(key), None) is None:
            raise NoSuchKey(key)
        log.info("{identity} deleted {key}", identity=self.identity.avatar_id, key=key)
        return {}

    @List.responder
    def list_keys(self, prefix: str) -> dict[str, object]:
        check_key(prefix, empty=True)
        keys: list[str] = []
        size = 0
        for key in sorted(self.factory.data):
            if prefix and key != prefix and not key.startswith(prefix + "/"):
                continue
            size += len(key.encode("utf-8")) + 2
            if size > LIST_BYTES:
                return {"keys": keys, "truncated": True}
            keys.append(key)
        return {"keys": keys, "truncated": False}


class KVFactory(Factory[KVProtocol]):
    """The store every connection shares."""

    protocol = KVProtocol

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
