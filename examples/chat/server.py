"""
A multi-user chat on L{SecureLineReceiver}.

Everyone is named by the identity securenet authenticated (their client
certificate's CN): a message is always sent as C{<name> text} with that
name, whatever the client types.  What each person may do is the policy's
call (examples/chat/policy.toml): members list rooms and join any room,
moderators kick, and anyone with a certificate talks in the lobby.

    /rooms          list the rooms and how many are in each   (chat.rooms.list)
    /join ROOM      move to ROOM                              (chat.join on rooms/ROOM)
    /who            who is in your room
    /kick NAME      disconnect NAME                           (chat.kick on users/NAME)
    /quit           leave
    anything else   a message to your room                    (chat.say on rooms/ROOM)

Serve it::

    twistd -n securenet --app examples.chat.server.ChatFactory --policy examples/chat/policy.toml ...
"""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from securenet.authz import AuthorizationDenied, requires
from securenet.protocols import SecureLineReceiver

log = Logger(namespace="examples.chat")

LOBBY = "lobby"
ROOM_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


class ChatProtocol(SecureLineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 4096
    factory: ChatFactory
    room: str | None = None

    @property
    def name(self) -> str:
        return self.identity.avatar_id

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.online.setdefault(self.name, set()).add(self)
        self.tell(f"* welcome {self.name}; /help lists the commands")
        self.obey(self.do_join, LOBBY)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._leaveRoom("left")
        connections = self.factory.online.get(self.name, set())
        connections.discard(self)
        if not connections:
            self.factory.online.pop(self.name, None)

    def tell(self, text: str) -> None:
        self.sendLine(text.encode("utf-8"))

    def lineReceived(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace").strip()
        if not text.startswith("/"):
            if text:
                self.obey(self.say, text)
            return
        command, _, argument = text[1:].partition(" ")
        handler = getattr(self, f"do_{command}", None)
        if handler is None:
            self.tell(f"! unknown command /{command}; /help lists the commands")
        else:
            self.obey(handler, argument.strip())

    def obey(self, handler: Callable[[str], None], argument: str) -> None:
        try:
            handler(argument)
        except AuthorizationDenied as denied:
            # Its message names the missing permission, never the policy's rules.
            self.tell(f"! denied: {denied}")

    def say(self, text: str) -> None:
        if self.room is None:
            self.tell("! you are in no room; /join one")
            return
        self.require("chat.say", f"rooms/{self.room}")
        self.factory.broadcast(self.room, f"[{self.room}] <{self.name}> {text}")

    # -- commands ----------------------------------------------------------------

    def do_help(self, argument: str) -> None:
        self.tell("* /rooms, /join ROOM, /who, /kick NAME, /quit; anything else is said in your room")

    @requires("chat.rooms.list")
    def do_rooms(self, argument: str) -> None:
        rooms = ", ".join(f"{room} ({len(members)})" for room, members in sorted(self.factory.rooms.items()))
        self.tell(f"* rooms: {rooms or 'none'}")

    def do_join(self, room: str) -> None:
        if not ROOM_NAME.fullmatch(room):
            self.tell("! a room name is 1 to 32 letters, digits, '-' or '_'")
            return
        if room == self.room:
            self.tell(f"* you are in {room}")
            return
        self.require("chat.join", f"rooms/{room}")
        self._leaveRoom(f"went to {room}")
        self.room = room
        self.factory.rooms.setdefault(room, set()).add(self)
        self.factory.broadcast(room, f"* {self.name} joined {room}")

    def do_who(self, argument: str) -> None:
        if self.room is None:
            self.tell("! you are in no room; /join one")
            return
        members = self.factory.rooms.get(self.room, set())
        self.tell(f"* in {self.room}: {', '.join(sorted({m.name for m in members}))}")

    def do_kick(self, name: str) -> None:
        if not name:
            self.tell("! /kick NAME")
            return
        self.kick(name)

    @requires("chat.kick", resource=lambda self, name: f"users/{name}")
    def kick(self, name: str) -> None:
        victims = list(self.factory.online.get(name, ()))
        if not victims:
            self.tell(f"! {name} is not here")
            return
        log.info("{moderator} kicked {name}", moderator=self.name, name=name)
        for victim in victims:
            victim.tell(f"* you were kicked by {self.name}")
            victim._leaveRoom(f"was kicked by {self.name}")
            victim.transport.loseConnection()  # type: ignore[union-attr]
        self.tell(f"* kicked {name}")

    def do_quit(self, argument: str) -> None:
        self.tell("* bye")
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _leaveRoom(self, how: str) -> None:
        if self.room is None:
            return
        room, self.room = self.room, None
        members = self.factory.rooms.get(room, set())
        members.discard(self)
        if members:
            self.factory.broadcast(room, f"* {self.name} {how}")
        else:
            self.factory.rooms.pop(room, None)


class ChatFactory(Factory[ChatProtocol]):
    """The chat's shared state: who is online, and who is in which room."""

    protocol = ChatProtocol

    def __init__(self) -> None:
        self.rooms: dict[str, set[ChatProtocol]] = {}
        self.online: dict[str, set[ChatProtocol]] = {}

    def broadcast(self, room: str, text: str) -> None:
        for member in list(self.rooms.get(room, ())):
            member.tell(text)
