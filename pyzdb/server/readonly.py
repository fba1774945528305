"""Read-only servers: answer reads from the snapshot on disk plus the journal.

``python server.py -ro`` connects a REP socket to the read queue's DEALER and
loads the snapshot.  Every ``CHECK_INTERVAL`` seconds it applies the journal
records the writer appended since (so it lags the writer by about that much),
and reloads the snapshot when a new one was renamed into place (it is never
half-written).  Writes sent to it get a ``ReadOnlyError`` reply.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import zmq

from pyzdb.keys import client_keys
from pyzdb.server.config import ServerConfig, connectable
from pyzdb.server.handler import Handler
from pyzdb.server.rw import POLL_MS, store_from_state
from pyzdb.storage import journal, snapshot

log = logging.getLogger("pyzdb.server")

CHECK_INTERVAL = 0.2
"""Seconds between looks at the journal and the snapshot file."""


class ReadOnlyServer:
    """One replica answering reads behind the read queue."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._keys = client_keys(config.server_key, config.client_key)
        self._stamp = snapshot.stamp(config.db)
        self.handler, self._follower = self._load()
        self._checked = time.monotonic()
        self._stopping = False

    def _load(self) -> tuple[Handler, journal.JournalFollower]:
        """The snapshot as a read-only handler, and a follower of the journals that come after it."""
        state = snapshot.load(self.config.db) or {}
        store, sessions = store_from_state(state, self.config.undo_limit)
        handler = Handler(
            store,
            read_only=True,
            max_message_bytes=self.config.max_message_size,
            max_batch_ops=self.config.max_batch_ops,
            sessions=sessions,
        )
        handler.slow_ns = int(self.config.slowlog_ms * 1e6)
        return handler, journal.JournalFollower(self.config.db, state.get("generation", 0))

    def refresh(self) -> None:
        """Apply newly journaled writes, or reload the snapshot if a newer one was saved."""
        self._checked = time.monotonic()
        stamp = snapshot.stamp(self.config.db)
        if stamp == self._stamp:
            # (a follower that lost its journal waits for the snapshot that replaced it)
            for raw in self._follower.new_records():
                self.handler.replay(raw)
            return
        try:
            self.handler, self._follower = self._load()
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
        sock.linger = 0
        if self._keys is not None:  # a replica key, or the read queue never routes a request here
            self._keys.apply(sock)
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
