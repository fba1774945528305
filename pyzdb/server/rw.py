"""The read-write server: queue devices, the REP loop, the lock, saving and stopping.

``python server.py`` runs :class:`ReadWriteServer`: it binds the write and
read queue devices, connects its REP socket to the write queue over
``inproc://`` and binds the lock socket.  While nobody holds the lock it
answers the write queue and the lock socket; while a client holds it, only
the lock socket (see ``pyzdb.server.lock``).  SIGTERM or SIGINT finish the
current request, save the snapshot and exit 0.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import zmq

from pyzdb import errors, protocol
from pyzdb.protocol import Request
from pyzdb.server.config import ServerConfig, connectable
from pyzdb.server.devices import QueueDevice
from pyzdb.server.handler import Handler
from pyzdb.server.lock import Lock
from pyzdb.server.sessions import Sessions
from pyzdb.storage import snapshot
from pyzdb.store import Store

log = logging.getLogger("pyzdb.server")

POLL_MS = 100
"""How often the loop wakes to notice a stop signal or an expired lease."""


def load_store(config: ServerConfig) -> tuple[Store, Sessions]:
    """Load the snapshot named by ``config.db`` (an empty store if there is none)."""
    state = snapshot.load(config.db) or {}
    store = Store(state.get("root", {}), config.undo_limit)
    if "history" in state:
        store.history = state["history"]
        store.history.resize(config.undo_limit)
    return store, state.get("sessions") or Sessions()


class ReadWriteServer:
    """The one server that changes the store."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store, sessions = load_store(config)
        self.handler = Handler(
            self.store,
            save=self.save,
            allow_exec=config.allow_exec,
            max_message_bytes=config.max_message_size,
            sessions=sessions,
        )
        self.lock = Lock(config.lock_timeout)
        self._stopping = False

    def save(self) -> None:
        """Write the snapshot atomically."""
        started = time.perf_counter()
        snapshot.save(
            self.config.db,
            {"root": self.store.root, "history": self.store.history, "sessions": self.handler.sessions},
        )
        log.info("saved %s in %.3f s", self.config.db, time.perf_counter() - started)

    def stop(self, *_: Any) -> None:
        """Ask the loop to finish the current request and exit."""
        self._stopping = True

    def run(self) -> int:
        """Serve until stopped; return the process exit code."""
        context = zmq.Context()
        inproc = f"inproc://pyzdb-write-{id(self)}"
        devices = [
            QueueDevice(
                context, self.config.write_client_uri, [self.config.write_server_uri, inproc], "write"
            ),
            QueueDevice(context, self.config.read_client_uri, [self.config.read_server_uri], "read"),
        ]
        queue = context.socket(zmq.REP)
        queue.connect(inproc)
        lock_socket = context.socket(zmq.REP)
        lock_socket.bind(self.config.lock_uri)
        for device in devices:
            device.start()
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        if self.config.allow_exec:
            log.warning("--allow-exec: any client can run Python code in this server")
        log.warning(
            "pyzdb read-write server ready: writes %s, reads %s, lock %s, store %s",
            self.config.write_client_uri,
            self.config.read_client_uri,
            self.config.lock_uri,
            self.config.db,
        )
        try:
            self._loop(queue, lock_socket)
        finally:
            self._shutdown(context, devices, [queue, lock_socket])
        return 0

    def _loop(self, queue: zmq.Socket, lock_socket: zmq.Socket) -> None:
        poller_free = zmq.Poller()
        poller_free.register(queue, zmq.POLLIN)
        poller_free.register(lock_socket, zmq.POLLIN)
        poller_locked = zmq.Poller()
        poller_locked.register(lock_socket, zmq.POLLIN)
        while not self._stopping:
            holder = self.lock.holder
            if self.lock.expire_if_silent():
                log.warning("lock of client %s released: silent for %.1f s", holder, self.lock.lease)
            poller = poller_locked if self.lock.held else poller_free
            for sock, _ in poller.poll(POLL_MS):
                frames = sock.recv_multipart()
                sock.send(self.answer(frames, via_lock=sock is lock_socket))

    def answer(self, frames: list[bytes], via_lock: bool) -> bytes:
        """Reply to one message from the write queue or the lock socket."""
        request = self.handler.parse(frames)
        if isinstance(request, bytes):
            return request
        try:
            if via_lock:
                return self._answer_holder(request)
            if request.op == "lock":
                return self._grant(request)
            if request.op == "unlock":
                raise errors.LockError("unlock() must come from the lock holder on the lock socket")
        except errors.LockError as exc:
            return protocol.error_reply(request.id, exc)
        return self.handler.answer(request)

    def _grant(self, request: Request) -> bytes:
        replayed = self.handler.sessions.replay(request)
        if replayed is not None:
            return replayed
        token = self.lock.acquire(request.client)
        log.info("lock taken by client %s", request.client)
        reply = protocol.ok_reply(
            request.id,
            {"token": token, "lock_uri": connectable(self.config.lock_uri), "lease": self.lock.lease},
        )
        self.handler.sessions.remember(request, reply)
        return reply

    def _answer_holder(self, request: Request) -> bytes:
        replayed = self.handler.sessions.replay(request) if request.is_write else None
        if replayed is not None:
            return replayed  # a retry whose first reply was lost, even if the lease ran out since
        self.lock.check(request.token)
        self.lock.touch()
        if request.op == "lock":
            raise errors.LockError("you already hold the lock")
        if request.op != "unlock":
            return self.handler.answer(request)
        self.lock.release()
        log.info("lock released by client %s", request.client)
        reply = protocol.ok_reply(request.id, None)
        self.handler.sessions.remember(request, reply)
        return reply

    def _shutdown(self, context: zmq.Context, devices: list[QueueDevice], sockets: list[zmq.Socket]) -> None:
        try:
            self.save()
        except OSError as exc:
            log.error("could not save on shutdown: %s", exc)
        for sock in sockets:
            sock.close(linger=0)
        for device in devices:
            device.stop()
        context.term()
        log.warning("pyzdb read-write server stopped")
