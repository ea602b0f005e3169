"""
The supervisor of C{--workers} (L{securenet._workers}), in memory: what a
worker is started with, and the sockets it binds.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from securenet._service import ListenError
from securenet._workers import BoundListener, bind_listener, worker_arguments
from securenet.tls._endpoints import split_description


class WorkerArgumentsTests(SynchronousTestCase):
    def test_listenersReplacedByAdoptedSockets(self) -> None:
        """
        A worker gets the supervisor's arguments without --workers and the
        listeners (both spellings), then each listener adopting its socket,
        every other key kept (escaped colons too).
        """
        a, b = socket.socket(), socket.socket()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        listeners = [
            BoundListener("--listen", "securenet:8443:interface=\\:\\:1:certKey=C\\:/x.pem:privateKey=k", a),
            BoundListener("--http", "securenet:port=9443:backlog=5:certKey=c:privateKey=k:clientAuth=optional", b),
        ]
        args = ["--app", "echo", "--workers", "2", "--listen", "x", "--http=y", "--workers=3", "--auth", "anonymous"]
        out = worker_arguments(args, listeners)
        self.assertEqual(out[:4], ["--app", "echo", "--auth", "anonymous"])
        self.assertEqual(out[4], "--listen")
        self.assertEqual(split_description(out[5]), ([], {"fd": str(a.fileno()), "certKey": "C:/x.pem", "privateKey": "k"}))
        self.assertEqual(out[6], "--http")
        self.assertEqual(
            split_description(out[7]),
            ([], {"fd": str(b.fileno()), "certKey": "c", "privateKey": "k", "clientAuth": "optional"}),
        )
        self.assertEqual(len(out), 8)


class BindTests(SynchronousTestCase):
    def test_bindsAsTheEndpointWould(self) -> None:
        """The supervisor's socket listens on the endpoint's interface and port, and workers can inherit it."""
        bound = bind_listener("--listen", "securenet:0:interface=127.0.0.3:certKey=c:privateKey=k")
        self.addCleanup(bound.sock.close)
        self.assertEqual(bound.sock.getsockname()[0], "127.0.0.3")
        self.assertTrue(bound.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        self.assertTrue(bound.sock.get_inheritable())

    def test_portInUseIsOneLine(self) -> None:
        """A port that cannot be bound stops start-up with ListenError, naming the address and the option."""
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with self.assertRaises(ListenError) as caught:
            bind_listener("--listen", f"securenet:{port}:certKey=c:privateKey=k")
        self.assertIn(
            f"cannot listen on 127.0.0.1:{port}: Address already in use (--listen securenet:{port}:", str(caught.exception)
        )
