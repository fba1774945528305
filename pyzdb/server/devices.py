"""The ROUTER/DEALER queue device that carries reads from clients to the read-only servers.

The device is a ``zmq.proxy_steerable`` running in a thread of the read-write
server's process: libzmq moves the messages without holding the GIL, and the
device stops cleanly when it receives ``TERMINATE`` on its control socket.
The write path has no device: the request loop owns its ROUTER.  See
docs/decisions/0002-server-owns-the-write-router.md for the measurements
behind both choices.
"""

from __future__ import annotations

import itertools
import threading

import zmq

from pyzdb.server.auth import CLIENT_DOMAIN, REPLICA_DOMAIN, KeyRing, secure

_ids = itertools.count()


class QueueDevice:
    """A ROUTER (clients connect) to DEALER (servers connect) proxy thread."""

    def __init__(
        self,
        context: zmq.Context,
        frontend: str,
        backends: list[str],
        name: str,
        ring: KeyRing | None = None,
    ) -> None:
        """Bind ``frontend`` (clients) and ``backends`` (servers); with ``ring``, both under CURVE.

        Under CURVE the frontend takes client keys and the backends replica keys
        only, so a process without a replica key never receives a request.
        """
        self.name = name
        self._context = context
        self._ring = ring
        self._control_uri = f"inproc://pyzdb-{name}-control-{next(_ids)}"
        self._frontend = self._bound(zmq.ROUTER, [frontend], CLIENT_DOMAIN)
        try:
            self._backend = self._bound(zmq.DEALER, backends, REPLICA_DOMAIN)
        except zmq.ZMQError:
            self._frontend.close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"pyzdb-{name}", daemon=True)
        self._control = context.socket(zmq.PAIR)
        self._control.bind(self._control_uri)

    def _bound(self, kind: int, uris: list[str], domain: str) -> zmq.Socket:
        sock = self._context.socket(kind)
        sock.linger = 0
        try:
            if self._ring is not None:
                secure(sock, self._ring, domain)
            for uri in uris:
                sock.bind(uri)
        except zmq.ZMQError:
            sock.close()
            raise
        return sock

    def start(self) -> None:
        """Start moving messages."""
        self._thread.start()

    def _run(self) -> None:
        peer = self._context.socket(zmq.PAIR)
        peer.connect(self._control_uri)
        try:
            zmq.proxy_steerable(self._frontend, self._backend, None, peer)
        except zmq.ContextTerminated:
            pass
        finally:
            peer.close(linger=0)
            self._frontend.close()
            self._backend.close()

    def stop(self) -> None:
        """Stop the device and close its sockets."""
        if self._thread.is_alive():
            self._control.send(b"TERMINATE")
            self._thread.join(timeout=5)
        else:
            self._frontend.close()
            self._backend.close()
        self._control.close(linger=0)
