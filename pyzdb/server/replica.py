"""A replica fed over ZeroMQ: ``python server.py -ro --primary tcp://HOST:5563 --db replica.pkl``.

The replica keeps its own store files (a snapshot and journals, like the
writer's, with its replication position in the snapshot), so a restarted
replica loads them and asks the writer for what came after.  It pulls the
stream described in ``pyzdb.server.replication`` over a DEALER, granting
credit as it applies, and serves reads meanwhile: behind the writer's read
queue (a REP connected to its DEALER, 5562) and, with ``--read-bind``, on a
REP of its own.  Every write request it is sent is refused with
``ReadOnlyError``.

Each record is checked before it is applied: it must be the next one of the
replica's history, its chained checksum must match the writer's, and it must
apply without error (a journaled write always succeeded on the writer).  A
record that fails any check is not applied; the replica says ``HELLO`` again
from its position, asking for a full copy when the record itself did not
apply.  A full copy is checked against its announced size and digest before
it is decoded, and replaces the store in one step, between two reads.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import signal
import socket
import time
from typing import Any

import zmq

from pyzdb.keys import client_keys
from pyzdb.server.auth import CLIENT_DOMAIN, ZapHandler, secure
from pyzdb.server.config import ServerConfig, connectable, is_loopback
from pyzdb.server.handler import Handler
from pyzdb.server.prometheus import MetricsEndpoint
from pyzdb.server.replication import (
    HEARTBEAT_S,
    Position,
    chain_next,
    configure_link_socket,
    decode_copy,
    message,
    parse_body,
)
from pyzdb.server.rw import store_from_state
from pyzdb.server.sessions import Sessions
from pyzdb.server.stats import RequestStats, persistence_section
from pyzdb.storage.durable import Persistence
from pyzdb.store import Store

log = logging.getLogger("pyzdb.replication")

WINDOW = 64
"""Messages the replica lets the writer send ahead of what it has applied."""
LINK_TIMEOUT_S = 3.0
"""Nothing heard from the writer for this long: the link is down."""
HELLO_RETRY_S = 1.0
"""While the link is down, ask again this often."""
CONNECT_RETRY_S = 0.1
"""While there is no connection at all (a HELLO could not even be queued), try this often."""
REFUSED_RETRY_S = 30.0
"""After the writer refused a full copy, ask again this much later."""
COPY_RETRY_S = 10.0
"""After a second full copy in a row failed its checks, ask again this much later."""
POLL_MS = 50
READ_WAIT_S = 0.05
"""A read-your-writes read that needs a record this replica is about to apply waits this long for it."""
PARKED_POLL_MS = 10
"""While a read waits, the loop wakes this often to see whether its wait is over."""
MAX_COPY_BYTES = 1 << 34
"""A full copy announced as larger than this is refused before it is received."""


class StreamError(Exception):
    """A message of the stream that does not fit: the replica says HELLO again."""

    def __init__(self, reason: str, copy: bool = False) -> None:
        super().__init__(reason)
        self.copy = copy


class ReplicaServer:
    """A read-only server that keeps its own copy of the writer's store, fed over ZeroMQ."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.request_stats = RequestStats()
        self.records_applied = 0
        self.files = Persistence(config.db, config.fsync, config.autosave_writes, config.autosave_seconds)
        self.files.acquire()
        try:
            self.position, self.handler = self._recover()
        except BaseException:
            self.files.close()
            raise
        self.identity = secrets.token_bytes(8)
        self._keys = client_keys(config.server_key, config.client_key)
        """Under CURVE: the replica key, for the replication port and the read queue (SPEC §11)."""
        self.link_up = False
        self.writer_count: int | None = None
        self.copies_received = 0
        self._session = 0
        self._last_heard = self._last_sent = self._last_hello = 0.0
        self._copy: dict[str, Any] | None = None
        self._retry_at = 0.0
        self._hello_queued = False
        self._next_number = 0
        self._granted = WINDOW
        self._copy_failures = 0
        self._stopping = False
        self._exit_code = 0
        self._context: zmq.Context | None = None
        self._link: zmq.Socket | None = None
        self._readers: list[zmq.Socket] = []
        self._metrics: MetricsEndpoint | None = None
        self._zap: ZapHandler | None = None
        self._poller = zmq.Poller()
        self._parked: dict[zmq.Socket, tuple[Any, float]] = {}
        """Reader sockets whose read waits for a record (read-your-writes): its request and deadline."""
        self.reads_waited = 0

    # --- start-up ------------------------------------------------------------------

    def _recover(self) -> tuple[Position, Handler]:
        state, records = self.files.load()
        saved = state.get("replication")
        position = Position.from_json(saved) if saved is not None else Position(None)
        handler = self._handler(*store_from_state(state, self.config.undo_limit))
        for raw in records:
            why = _apply(handler, raw)
            if why is not None:
                log.error("own journal record %d did not apply on restart: %s", position.count + 1, why)
            position.advance(raw)
        self.files.open_journal()
        log.info("replica %s at record %d of history %s", self.config.db, position.count, position.history)
        return position, handler

    def _handler(self, store: Store, sessions: Sessions) -> Handler:
        handler = Handler(
            store, read_only=True, max_message_bytes=self.config.max_message_size, sessions=sessions
        )
        handler.stats = self.request_stats  # one set of counters across full copies
        handler.stats_sections = self._stats_sections
        handler.position = self._position
        handler.slow_ns = int(self.config.slowlog_ms * 1e6)
        return handler

    def _position(self) -> tuple[str | None, int]:
        return self.position.history, self.position.count

    def _stats_sections(self) -> dict:
        heard = time.monotonic() - self._last_heard if self._last_heard else None
        lag = None if self.writer_count is None else max(0, self.writer_count - self.position.count)
        return {
            "persistence": persistence_section(self.files),
            "replication": {
                "role": "replica",
                "primary": self.config.primary,
                "link": "up" if self.link_up else "down",
                "position": self.position.to_json(),
                "writer_count": self.writer_count,
                "lag_records": lag,
                "last_heard_s": None if heard is None else round(heard, 3),
                "records_applied": self.records_applied,
                "copies_received": self.copies_received,
                "reads_waited": self.reads_waited,
            },
        }

    def state(self) -> dict:
        """What the replica's snapshot holds: the writer's snapshot contents, at the replica's position."""
        return {
            **self.handler.store.state(),
            "sessions": self.handler.sessions,
            "replication": self.position.to_json(),
        }

    def bind(self) -> None:
        """Connect to the writer and its read queue, bind ``--read-bind``; on failure close and raise."""
        self._context = zmq.Context()
        try:
            link = self._socket(zmq.DEALER)
            link.routing_id = self.identity
            link.immediate = True  # never queue a HELLO on a connection that is not up
            configure_link_socket(link)
            reader = self._socket(zmq.REP)
            if self._keys is not None:
                self._keys.apply(link)
                self._keys.apply(reader)
            link.connect(self.config.primary)
            self._link = link
            self._readers.append(reader)
            reader.connect(connectable(self.config.read_server_uri))
            if self.config.read_bind:
                self._bind_own_reader()
            if self.config.metrics_port is not None:
                port, host = self.config.metrics_port, self.config.metrics_host
                self._metrics = MetricsEndpoint(host, port, lambda: self.handler.all_stats())
        except BaseException:
            self._close_network()
            self.files.close()
            raise

    def _bind_own_reader(self) -> None:
        """Bind the REP of ``--read-bind``: under ``--curve``, only the folder's client keys reach it."""
        if self.config.curve is not None:
            self._zap = ZapHandler(self._context, self.config.curve)
        sock = self._socket(zmq.REP)
        self._readers.append(sock)  # closed with the others if anything below fails
        if self._zap is not None:
            secure(sock, self._zap.ring, CLIENT_DOMAIN)
        elif not is_loopback(self.config.read_bind):
            log.warning(
                "serving reads on %s without --curve: anyone who reaches it can read the store",
                self.config.read_bind,
            )
        sock.bind(self.config.read_bind)

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._context.socket(kind)
        sock.linger = 0
        return sock

    def stop(self, *_: Any) -> None:
        """Ask the loop to finish the current message and exit."""
        self._stopping = True

    # --- the loop ------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped (after :meth:`bind`); return the process exit code."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        log.warning(
            "pyzdb read-only server ready: replica of %s, serving %s from %s%s",
            self.config.primary,
            self.config.db,
            self.config.read_server_uri,
            f" and {self.config.read_bind}" if self.config.read_bind else "",
        )
        poller = self._poller
        for sock in (self._link, *self._readers):
            poller.register(sock, zmq.POLLIN)
        self._hello()
        try:
            while not self._stopping:
                ready = dict(poller.poll(PARKED_POLL_MS if self._parked else POLL_MS))
                if self._link in ready:
                    self._read_stream()
                if self._parked:
                    self._answer_parked()
                for sock in self._readers:
                    if sock in ready:
                        self._serve_read(sock)
                self._housekeeping()
        finally:
            self._shutdown()
        return self._exit_code

    def _serve_read(self, sock: zmq.Socket) -> None:
        """Answer one read, or park it briefly if it needs a record that is on its way."""
        request = self.handler.parse(sock.recv_multipart())
        if isinstance(request, bytes):
            sock.send(request)
        elif self._about_to_have(request.after):
            self._parked[sock] = (request, time.monotonic() + READ_WAIT_S)
            self._poller.modify(sock, 0)  # a REP takes no other request before it answers this one
            self.reads_waited += 1
        else:
            sock.send(self.handler.answer(request))

    def _about_to_have(self, after: tuple | None) -> bool:
        """True if a read-your-writes read needs a record of this history while the link is up.

        The writer sends a batch's records as it acknowledges them, so a read sent
        after the reply usually needs a record already on its way.
        """
        if after is None or not self.link_up or after[0] != self.position.history:
            return False
        return self.position.count < after[1]

    def _answer_parked(self) -> None:
        """Answer the parked reads whose record arrived (or whose wait is over: ``ReplicaBehindError``)."""
        now = time.monotonic()
        for sock, (request, deadline) in list(self._parked.items()):
            if now >= deadline or self.position.count >= request.after[1] or not self.link_up:
                del self._parked[sock]
                sock.send(self.handler.answer(request))
                self._poller.modify(sock, zmq.POLLIN)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.link_up and now - self._last_heard > LINK_TIMEOUT_S:
            self.link_up = False
            log.warning("link to %s lost (silent for %.1f s)", self.config.primary, now - self._last_heard)
        retry = HELLO_RETRY_S if self._hello_queued else CONNECT_RETRY_S
        if not self.link_up and now - self._last_hello >= retry and now >= self._retry_at:
            self._hello()
        elif self.link_up and now - self._last_sent >= HEARTBEAT_S:
            self._send(b"CREDIT", {"granted": self._granted, "applied": self.position.count})
        try:
            self.files.tick()
        except OSError as exc:
            log.error("journal fsync failed: %s", exc)
        self.files.poll_snapshot()
        if self._metrics is not None:
            self._metrics.tick()
        if self.files.autosave_due():
            try:
                self.files.start_snapshot(self.state())
            except OSError as exc:
                log.error("could not start a snapshot: %s", exc)

    def _hello(self, copy: bool = False) -> None:
        """(Re)start the stream from this replica's position; anything of older sessions is dropped."""
        self._session += 1
        self._next_number = 0
        self._granted = WINDOW
        self._copy = None
        self._last_hello = time.monotonic()
        body = {
            "session": self._session,
            "position": self.position.to_json(),
            "credit": WINDOW,
            "copy": copy,
            "name": f"{socket.gethostname()}:{self.config.db}",  # two machines may use one path
        }
        self._hello_queued = self._send(b"HELLO", body)

    def _send(self, kind: bytes, body: dict) -> bool:
        body.setdefault("session", self._session)
        try:
            self._link.send_multipart(message(kind, body), zmq.NOBLOCK)
        except zmq.Again:  # no connection right now: the next HELLO goes when there is one
            return False
        self._last_sent = time.monotonic()
        return True

    def _read_stream(self) -> None:
        """Handle every stream message waiting (at most a window), then grant that much credit."""
        handled = 0
        for _ in range(WINDOW):
            try:
                frames = self._link.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                handled += self._receive(frames)
            except StreamError as exc:
                self._restart_stream(exc)
                return
        if handled:
            self._granted += handled
            self._send(b"CREDIT", {"granted": self._granted, "applied": self.position.count})

    def _restart_stream(self, exc: StreamError) -> None:
        """After a message that does not fit: ask again, and not at once if copies keep failing."""
        self._copy_failures = self._copy_failures + 1 if exc.copy else 0
        if self._copy_failures > 1:  # the same bad copy again: do not make the writer encode it each second
            log.error(
                "replication stream from %s: %s; still serving record %d, asking again in %.0f s",
                self.config.primary,
                exc,
                self.position.count,
                COPY_RETRY_S,
            )
            self._retry_at = time.monotonic() + COPY_RETRY_S
            self.link_up = False
            self._session += 1  # whatever the writer still sends for the old request is dropped
            return
        log.warning("replication stream from %s: %s; starting again", self.config.primary, exc)
        self._hello(copy=exc.copy)

    def _receive(self, frames: list[bytes]) -> int:
        """Handle one message; return the credit it used (1 or 0)."""
        kind = frames[0]
        try:
            body = parse_body(frames)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StreamError(f"bad {kind[:20]!r} message: {exc}") from None
        if kind == b"RESYNC":
            log.warning(
                "link to %s: the writer does not know this replica (restarted?); asking from record %d",
                self.config.primary,
                self.position.count,
            )
            self._hello()
            return 0
        if body.get("session") != self._session:
            return 0  # sent before our latest HELLO
        if body.get("n") != self._next_number:
            raise StreamError(f"message {self._next_number} of the stream was lost (got {body.get('n')!r})")
        self._next_number += 1
        self._heard(body)
        if kind == b"HEARTBEAT":
            return 0
        if kind == b"RECORDS":
            self._records(body, frames[2:])
        elif kind == b"COPY":
            self._copy_begin(body)
        elif kind == b"CHUNK":
            self._copy_chunk(body, frames[2:])
        elif kind == b"REFUSED":
            log.error("the writer cannot send a full copy: %s; still serving record %s", body.get("reason"),
                      self.position.count)  # fmt: skip
            self._retry_at = time.monotonic() + REFUSED_RETRY_S
            self.link_up = False
            return 0
        else:
            raise StreamError(f"unknown message kind {kind[:20]!r}")
        return 1

    def _heard(self, body: dict) -> None:
        self._last_heard = time.monotonic()
        head = body.get("head", body.get("count"))
        if type(head) is int:
            self.writer_count = head
        if not self.link_up:
            self.link_up = True
            log.warning("link to %s up, at record %d", self.config.primary, self.position.count)

    # --- applying the stream -------------------------------------------------------

    def _records(self, body: dict, records: list[bytes]) -> None:
        first, chains = body.get("first"), body.get("chains")
        if type(first) is not int or not isinstance(chains, list) or len(chains) != len(records):
            raise StreamError("RECORDS without a matching first count and chains")
        if self._copy is not None:
            raise StreamError("records in the middle of a full copy")
        if first != self.position.count + 1:
            raise StreamError(f"records from {first}, expected {self.position.count + 1}")
        for expected, raw in zip(chains, records, strict=True):
            chain = chain_next(self.position.chain, raw)
            if chain.hex() != expected:
                raise StreamError(f"record {self.position.count + 1} fails its checksum chain")
            why = _apply(self.handler, raw)
            if why is not None:
                raise StreamError(f"record {self.position.count + 1} does not apply here ({why})", copy=True)
            self._journal(raw)
            self.position.count += 1
            self.position.chain = chain
            self.records_applied += 1

    def _journal(self, raw: bytes) -> None:
        try:
            self.files.append(raw)
        except OSError as exc:
            # Going on would leave a gap in this replica's own journal, so a restart
            # would rebuild a state the writer never had: stop instead.
            log.critical("cannot journal record %d (%s): the replica stops", self.position.count + 1, exc)
            self._stopping = True
            self._exit_code = 1
            raise StreamError("own journal failed") from None

    def _copy_begin(self, body: dict) -> None:
        try:
            position = Position.from_json(body.get("position"))
        except ValueError as exc:
            raise StreamError(f"full copy with a bad position: {exc}") from None
        size, digest, chunks = body.get("size"), body.get("digest"), body.get("chunks")
        if type(size) is not int or not 0 <= size <= MAX_COPY_BYTES or not isinstance(digest, str):
            raise StreamError("full copy without a size and digest")
        if type(chunks) is not int or not 0 < chunks <= size // 1024 + 1:
            raise StreamError("full copy with a bad number of chunks")
        log.warning("receiving a full copy of %d bytes (record %d)", size, position.count)
        self._copy = {"position": position, "size": size, "digest": digest, "chunks": chunks, "parts": []}

    def _copy_chunk(self, body: dict, frames: list[bytes]) -> None:
        copy = self._copy
        if copy is None or body.get("index") != len(copy["parts"]) or len(frames) != 1:
            raise StreamError("full copy chunk out of order")
        copy["parts"].append(frames[0])
        if len(copy["parts"]) < copy["chunks"]:
            return
        self._copy = None
        data = b"".join(copy["parts"])
        if len(data) != copy["size"] or hashlib.blake2b(data, digest_size=32).hexdigest() != copy["digest"]:
            raise StreamError("full copy fails its size or digest check", copy=True)
        try:
            state = decode_copy(data)
        except ValueError as exc:
            raise StreamError(str(exc), copy=True) from None
        self._adopt(state, copy["position"])

    def _adopt(self, state: dict, position: Position) -> None:
        """Replace the store with a checked full copy, and make it this replica's snapshot."""
        started = time.perf_counter()
        handler = self._handler(Store.from_state(state, self.config.undo_limit), Sessions())
        old = self.handler, self.position
        self.handler, self.position = handler, position
        try:
            self.files.save_now(self.state())
        except OSError as exc:
            self.handler, self.position = old
            log.error("could not save the full copy (still serving record %d): %s", old[1].count, exc)
            raise StreamError("full copy not saved") from None
        self.copies_received += 1
        self._copy_failures = 0
        log.warning(
            "loaded a full copy at record %d of history %s in %.3f s",
            position.count,
            position.history,
            time.perf_counter() - started,
        )

    # --- shutdown ------------------------------------------------------------------

    def _shutdown(self) -> None:
        try:
            self.files.save_now(self.state())
        except OSError as exc:
            log.error("could not save on shutdown (the journal still holds every record): %s", exc)
        try:
            self.files.close()
        except OSError as exc:
            log.error("could not sync the journal on shutdown: %s", exc)
        self._close_network()
        log.warning("pyzdb replica stopped at record %d", self.position.count)

    def _close_network(self) -> None:
        for sock in (self._link, *self._readers):
            if sock is not None:
                sock.close(linger=0)
        if self._metrics is not None:
            self._metrics.close()
        if self._zap is not None:
            self._zap.stop()
        if self._context is not None:
            self._context.term()


def _apply(handler: Handler, raw: bytes) -> str | None:
    """Apply one journaled write to a replica's store; the reason it failed, or None.

    A record that a stricter pyzdb refuses to parse is skipped, as the writer's
    own start-up replay skips it (``Handler.replay``), so both stay equal.
    """
    request = handler.parse([raw])
    if isinstance(request, bytes):
        log.warning("journaled write refused and skipped: %s", request[:200].decode(errors="replace"))
        return None
    if not request.is_write:
        return f"not a write ({request.op!r})"
    handler.read_only = False
    try:
        handler.dispatch(request)
    except Exception as exc:  # noqa: BLE001 - any failure means this store is not the writer's
        return f"{type(exc).__name__}: {exc}"
    finally:
        handler.read_only = True
    return None
