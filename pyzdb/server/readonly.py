"""Read-only servers: answer reads from the newest snapshot on disk.

``python server.py -ro`` connects a REP socket to the read queue's DEALER,
loads the snapshot and, at most every ``CHECK_INTERVAL`` seconds, looks
whether the file was replaced (by an atomic rename, so it is never
half-written) and reloads it.  Writes get a ``ReadOnlyError`` reply.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import zmq

from pyzdb.server.config import ServerConfig, connectable
from pyzdb.server.handler import Handler
from pyzdb.server.rw import POLL_MS, load_store
from pyzdb.storage import snapshot

log = logging.getLogger("pyzdb.server")

CHECK_INTERVAL = 0.2
"""Seconds between looks at the snapshot file; a new save is served within this."""


class ReadOnlyServer:
    """One replica answering reads behind the read queue."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._stamp = snapshot.stamp(config.db)
        self.handler = self._load()
        self._checked = time.monotonic()
        self._stopping = False

    def _load(self) -> Handler:
        store, _ = load_store(self.config)
        return Handler(store, read_only=True, max_message_bytes=self.config.max_message_size)

    def refresh(self) -> None:
        """Reload the snapshot if a newer one was saved."""
        self._checked = time.monotonic()
        stamp = snapshot.stamp(self.config.db)
        if stamp == self._stamp:
            return
        try:
            self.handler = self._load()
        except (OSError, EOFError, ValueError) as exc:
            log.error("could not reload %s, still serving the previous version: %s", self.config.db, exc)
            return
        self._stamp = stamp
        log.info("reloaded %s", self.config.db)

    def stop(self, *_: Any) -> None:
        """Ask the loop to finish the current request and exit."""
        self._stopping = True

    def bind(self) -> None:
        """Nothing to bind: a read-only server only connects (kept for a uniform start-up)."""

    def run(self) -> int:
        """Serve until stopped; return the process exit code."""
        context = zmq.Context()
        sock = context.socket(zmq.REP)
        sock.connect(connectable(self.config.read_server_uri))
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        log.warning(
            "pyzdb read-only server ready: serving %s from %s", self.config.db, self.config.read_server_uri
        )
        try:
            while not self._stopping:
                if time.monotonic() - self._checked >= CHECK_INTERVAL:
                    self.refresh()
                if sock.poll(POLL_MS):
                    sock.send(self.handler.handle(sock.recv_multipart()))
        finally:
            sock.close(linger=0)
            context.term()
        return 0
