"""The read-write server: the request loop, the lock, the journal, snapshots.

``python server.py`` runs :class:`ReadWriteServer`.  Its request loop owns
the ROUTER socket clients send to (5559, the write port): there is no queue
device and no ``inproc`` hop between the clients and the one writer.  It also
binds the lock socket (5558, a ROUTER too) and starts the read queue device
(a thread, see ``pyzdb.server.devices``).

The loop takes requests in arrival order, in *batches*: every request already
waiting (up to ``BATCH``) is applied and journaled (one ``write(2)`` each),
then the journal is fsynced once if the policy is ``always`` (group commit),
then all the replies go out.  Owning a ROUTER is what lets the server hold
replies back like this, answer a ``save()`` only when the snapshot that a
forked child writes is on disk, and accept many requests in flight from one
DEALER client.

While a client holds the lock, the loop reads both sockets: the holder's
requests (on the lock socket, or on the write port with its token) are
served, resends of remembered writes (a lost ``lock()`` reply among them) are
answered from the dedup table, and everyone else's requests are held, in
arrival order, until the lock is released (see ``pyzdb.server.lock``).
With ``--curve`` (``pyzdb.server.auth``) every bound socket is a CURVE
server, and each received message carries the ``User-Id`` the ZAP handler
gave its connection (the client's public key): the loop looks it up in the
current key set for every request, drops those of keys no longer allowed,
and refuses a read-only key's writes with ``PermissionDeniedError``.  SIGHUP
reads the keys again.  Without ``--curve`` the receive path is the plain one.
SIGTERM or SIGINT finish the current batch, write a final snapshot, release
the store and exit 0.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from typing import Any

import zmq

from pyzdb import errors, protocol
from pyzdb.protocol import Request
from pyzdb.server.auth import CLIENT_DOMAIN, REPLICA_DOMAIN, RO, ZapHandler, secure
from pyzdb.server.config import ServerConfig, connectable, is_loopback
from pyzdb.server.devices import QueueDevice
from pyzdb.server.handler import Handler
from pyzdb.server.lock import Lock
from pyzdb.server.outbox import Outbox
from pyzdb.server.prometheus import MetricsEndpoint
from pyzdb.server.replication import Position, ReplicationSource, source_from_state, write_journal_start
from pyzdb.server.sessions import Sessions
from pyzdb.server.stats import persistence_section
from pyzdb.server.workers import SimilarityWorker, offloaded
from pyzdb.storage.blobs import BlobStore
from pyzdb.storage.durable import Persistence
from pyzdb.store import Store

log = logging.getLogger("pyzdb.server")

POLL_MS = 100
"""How often the loop wakes to notice a stop signal, an expired lease or a finished snapshot."""
CHORES_S = 0.005
"""While requests keep coming, the periodic duties and the lock socket are looked at this often."""
BATCH = 256
"""Most requests answered before their replies go out."""
REBIND_S = 2.0
"""How long a restart of the read queue (SIGHUP, keys removed) tries to bind its ports again."""
HELD_LIMIT = 10_000
"""Most requests held while a client holds the lock; past it the write port is not read until unlock."""

# pyzmq's enum constants and its Python-level helpers cost microseconds per call: a
# getsockopt(RCVMORE) after each frame costs 1.7 us (it converts the option to an
# enum), the Python send() wrapper 1.2 us per frame.  Reading "more" from the
# received Frame and calling the Cython send directly (see outbox.py) takes one
# 3-frame request in and its reply out in 5.0 us instead of 12.7 (timeit, ROUTER
# <-> DEALER on tcp).
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)


def _recv_frames(sock: zmq.Socket, flags: int = 0) -> list[bytes]:
    frame = sock.recv(flags, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(copy=False)
        frames.append(frame.bytes)
    return frames


class KeyedFrames(list):
    """A message's frames and, under CURVE, the ``User-Id`` (client public key) it came with."""

    __slots__ = ("user",)


def _recv_keyed(sock: zmq.Socket, flags: int = 0) -> KeyedFrames:
    """:func:`_recv_frames` that also reads the ``User-Id`` the ZAP handler gave the connection."""
    frame = sock.recv(flags, copy=False)
    frames = KeyedFrames((frame.bytes,))
    while frame.more:
        frame = sock.recv(copy=False)
        frames.append(frame.bytes)
    frames.user = frame.get("User-Id")
    return frames


def store_from_state(state: dict, undo_limit: int) -> tuple[Store, Sessions]:
    """Build the store and the write-dedup table from a loaded snapshot state."""
    return Store.from_state(state, undo_limit), state.get("sessions") or Sessions()


class ReadWriteServer:
    """The one server that changes the store."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.files = Persistence(config.db, config.fsync, config.autosave_writes, config.autosave_seconds)
        if config.repl_uri:  # the replication backlog survives snapshots and restarts
            self.files.retain_bytes = config.repl_backlog_bytes
            self.files.retain_seconds = config.repl_backlog_seconds
        self.files.acquire()
        try:
            self.blobs = BlobStore(config.db, config.import_dirs)
        except BaseException:
            self.files.close()
            raise
        try:
            self.handler = self._recover()
        except BaseException:
            self.files.close()
            raise
        self._workers = SimilarityWorker(self.handler)  # forked now: before any socket exists
        self._answering: Request | None = None
        """The request the handler is answering (its op decides what the worker is sent)."""
        self.handler.journal = self._journal
        self.lock = Lock(config.lock_timeout)
        self.handler.stats_sections = self._stats_sections
        self.handler.position = self._position
        self.handler.unjournaled = lambda: self.replication.new_history("exec changed the store")
        self.handler.slow_ns = int(config.slowlog_ms * 1e6)
        self._stopping = False
        self._exit_code = 0
        self._pending_saves: list[tuple[list[bytes], Request]] = []
        """save() requests answered when the running snapshot is on disk."""
        self._next_saves: list[tuple[list[bytes], Request]] = []
        """save() requests that arrived while a snapshot was running: they need the next one."""
        self._held: deque[tuple[list[bytes], Request]] = deque()
        """Other clients' requests that arrived while the lock was held, in arrival order."""
        self._context: zmq.Context | None = None
        self._read_queue: QueueDevice | None = None
        self._sockets: list[zmq.Socket] = []
        self._front: zmq.Socket | None = None
        self._lock_socket: zmq.Socket | None = None
        self._outbox = Outbox()
        self._zap: ZapHandler | None = None
        """The key checker under ``--curve`` (None without)."""
        self._recv = _recv_frames
        self._reload_keys = False
        self._metrics: MetricsEndpoint | None = None

    def _recover(self) -> Handler:
        started = time.perf_counter()
        state, records = self.files.load()
        store, sessions = store_from_state(state, self.config.undo_limit)
        self.replication: ReplicationSource = source_from_state(
            state, self.config.repl_backlog_bytes, self.config.db
        )
        snapshot_position = self.replication.position.to_json()
        handler = Handler(
            store,
            save=self.save,
            allow_exec=self.config.allow_exec,
            max_message_bytes=self.config.max_message_size,
            max_batch_ops=self.config.max_batch_ops,
            sessions=sessions,
            blobs=self.blobs,
        )
        for raw in records:
            handler.replay(raw)
            self.replication.record(raw)
        self.files.open_journal()
        if self.files.generation == self.files.snapshot_generation:
            write_journal_start(self.files.writer.path, Position.from_json(snapshot_position))
        self.files.on_rotate = self._journal_rotated
        handler.journal = self._journal
        log.info(
            "loaded %s and replayed %d journaled writes in %.3f s",
            self.config.db,
            len(records),
            time.perf_counter() - started,
        )
        return handler

    def _journal_rotated(self, generation: int) -> None:
        try:
            write_journal_start(self.files.writer.path, self.replication.position)
        except OSError as exc:  # only the backlog after a restart is shorter for it
            log.warning("could not record where journal %d starts: %s", generation, exc)

    def _journal(self, raw: bytes) -> None:
        """Journal a write; it is then part of the replication stream, and goes to the similarity worker.

        The worker answers collection calls only: of the tree's writes it needs just the count
        (its undo log must stay step for step with ours), which costs the loop nothing.
        """
        self.files.append(raw)
        self.replication.record(raw)
        answering = self._answering
        if answering is not None and answering.op not in ("ts", "undo", "redo"):
            self._workers.skip()
        else:
            self._workers.feed(raw)

    def _position(self) -> tuple[str | None, int]:
        head = self.replication.position
        return head.history, head.count

    def _stats_sections(self) -> dict:
        return {"persistence": persistence_section(self.files), "replication": self.replication.stats()}

    def state(self) -> dict:
        """What a snapshot holds."""
        return {
            **self.handler.store.state(),
            "sessions": self.handler.sessions,
            "replication": self.replication.position.to_json(),
        }

    def _collect_blobs(self, state: dict, started: float) -> None:
        self.blobs.collect([state["root"], state["history"].__getstate__()], started)

    def save(self) -> None:
        """Write a snapshot now, in this process (used under the lock, by exec and at shutdown)."""
        started = time.perf_counter()
        self.files.save_now(self.state(), self._collect_blobs)
        log.info("saved %s in %.3f s", self.config.db, time.perf_counter() - started)

    def stop(self, *_: Any) -> None:
        """Ask the loop to finish the current batch and exit."""
        self._stopping = True

    def bind(self) -> None:
        """Bind the sockets and the read queue; on failure (an address in use) close everything and raise."""
        self._context = zmq.Context()
        try:
            if self.config.curve is not None:
                self._zap = ZapHandler(self._context, self.config.curve)
                self._recv = _recv_keyed
            self._front = self._router(self.config.write_client_uri)
            self._lock_socket = self._router(self.config.lock_uri)
            if self.config.repl_uri:
                replication_socket = self._router(self.config.repl_uri, REPLICA_DOMAIN)
                self.replication.open(replication_socket, self.handler.store, self.config.db)
            self._read_queue = self._new_read_queue()
            if self.config.metrics_port is not None:
                self._metrics = MetricsEndpoint(
                    self.config.metrics_host, self.config.metrics_port, self.handler.all_stats
                )
        except BaseException:
            self._close_network()
            self.files.close()
            self._workers.stop()
            raise

    def _new_read_queue(self) -> QueueDevice:
        ring = self._zap.ring if self._zap is not None else None
        read_backends = [self.config.read_server_uri]
        return QueueDevice(self._context, self.config.read_client_uri, read_backends, "read", ring)

    def _restart_read_queue(self) -> None:
        """Drop every connection to the read queue, so that each one handshakes again with the current keys.

        The device cannot see a message's key, so this is how a removed key loses
        the read queue; clients and read-only servers reconnect by themselves, and
        a read caught in between is resent by the client (lazy pirate).
        """
        self._read_queue.stop()
        self._read_queue = None
        deadline = time.monotonic() + REBIND_S
        while True:
            try:
                device = self._new_read_queue()
                break
            except zmq.ZMQError as exc:  # the old sockets' ports are released asynchronously
                if time.monotonic() > deadline:
                    log.error("read queue not restarted, reads through it are down until restart: %s", exc)
                    return
                time.sleep(0.01)
        device.start()
        self._read_queue = device
        log.warning("read queue restarted: its connections handshake again with the current keys")

    def _router(self, uri: str, domain: str = CLIENT_DOMAIN) -> zmq.Socket:
        sock = self._context.socket(zmq.ROUTER)
        self._sockets.append(sock)
        sock.linger = 0
        if self._zap is not None:
            secure(sock, self._zap.ring, domain)
        sock.bind(uri)
        return sock

    def run(self) -> int:
        """Serve until stopped (after :meth:`bind`); return the process exit code."""
        self._read_queue.start()
        self._install_signals()
        self._announce()
        try:
            self._loop()
        finally:
            self._shutdown()
        return self._exit_code

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit becomes an error, not death
        if self._zap is not None:
            signal.signal(signal.SIGHUP, self._reload_keys_soon)

    def _reload_keys_soon(self, *_: Any) -> None:
        self._reload_keys = True

    def _announce(self) -> None:
        if self._zap is not None:
            log.warning("CURVE on, keys from %s: %s", self.config.curve, self._zap.ring.counts())
        else:
            exposed = [uri for uri in self._bound_uris() if not is_loopback(uri)]
            if exposed:
                log.warning(
                    "listening beyond this machine (%s) without --curve: anyone who reaches these "
                    "ports can read and change the store",
                    ", ".join(exposed),
                )
        if self.config.allow_exec:
            who = "any read-write key" if self._zap is not None else "any client"
            log.warning("--allow-exec: %s can run Python code in this server", who)
        log.warning(
            "pyzdb read-write server ready: writes %s, reads %s, lock %s, replication %s, store %s, fsync %s",
            self.config.write_client_uri,
            self.config.read_client_uri,
            self.config.lock_uri,
            self.config.repl_uri or "off",
            self.config.db,
            self.config.fsync,
        )

    def _bound_uris(self) -> list[str]:
        config = self.config
        return [config.write_client_uri, config.lock_uri, config.read_client_uri, config.read_server_uri]

    def _loop(self) -> None:
        # A blocking receive with a timeout wakes faster than zmq.Poller (measured:
        # about 40 us less per request), so the write port is read that way while
        # nobody holds the lock.  Between requests the loop touches as little as it
        # can: a request's cost here is mostly cache misses (see docs/performance.md),
        # so the periodic duties and the lock socket, which only matters to lock
        # holders, wait for a clock tick.
        front, lock_socket, recv = self._front, self._lock_socket, self._recv
        front.rcvtimeo = POLL_MS
        clock = time.monotonic
        chores_due = 0.0
        while not self._stopping:
            now = clock()
            if now >= chores_due:
                chores_due = now + CHORES_S
                self._housekeeping()
                if lock_socket.getsockopt(_EVENTS) & _POLLIN:
                    self._serve_batch(lock_socket, self._holder_reply)
            if self.lock.held:
                self._serve_locked()
                chores_due = 0.0
            elif self._held:
                self._serve_held()
            elif self._workers.pending:
                self._serve_with_worker()
            else:
                try:
                    first = recv(front)
                except zmq.Again:
                    chores_due = 0.0
                    continue
                self._serve_batch(front, self._queued_reply, first)

    def _serve_locked(self) -> None:
        """One wait of at most ``POLL_MS`` while a client holds the lock: serve whatever arrived."""
        reading_front = len(self._held) < HELD_LIMIT
        poller = zmq.Poller()
        poller.register(self._lock_socket, zmq.POLLIN)
        if reading_front:
            poller.register(self._front, zmq.POLLIN)
        ready = dict(poller.poll(POLL_MS))
        if self._lock_socket in ready:
            self._serve_batch(self._lock_socket, self._holder_reply)
        if self._front in ready and self.lock.held:
            self._serve_batch(self._front, self._locked_out_reply)

    def _serve_with_worker(self) -> None:
        """One wait of at most ``POLL_MS`` while the similarity worker holds queries: serve both."""
        poller = zmq.Poller()
        poller.register(self._front, zmq.POLLIN)
        poller.register(self._workers.fileno(), zmq.POLLIN)
        ready = dict(poller.poll(POLL_MS))
        if self._workers.fileno() in ready:
            self._send_worker_replies()
        if self._front in ready:
            self._serve_batch(self._front, self._queued_reply)

    def _send_worker_replies(self) -> None:
        for frames in self._workers.collect():
            self._outbox.send(self._front, frames)

    def _serve_held(self) -> None:
        """Answer the requests held during the lock, in arrival order, up to ``BATCH`` of them."""
        replies: list[list[bytes]] = []
        for _ in range(min(BATCH, len(self._held))):
            envelope, request = self._held.popleft()
            self._collect(replies, envelope, self._queued_reply(envelope, request))
            if self.lock.held:
                break  # a held lock() was just granted: the rest waits for its unlock
        self._commit_and_send(self._front, replies)

    def _serve_batch(self, sock: zmq.Socket, answer, frames: list[bytes] | None = None) -> None:
        """Answer ``frames`` and every message already waiting on ``sock`` (up to ``BATCH``), then reply.

        ``answer(envelope, request)`` returns the reply bytes, or None for a request
        that is answered later (a held-back ``save``, a request held during the lock).
        """
        replies: list[list[bytes]] = []
        lock_was_held = self.lock.held
        recv, zap = self._recv, self._zap
        for _ in range(BATCH):
            if frames is None:
                try:
                    frames = recv(sock, _NOBLOCK)
                except zmq.Again:
                    break
            envelope, body = _split_envelope(frames)
            if zap is None:
                request = self.handler.parse(body)
                reply = request if isinstance(request, bytes) else answer(envelope, request)
            else:
                reply = self._keyed_reply(envelope, body, zap.ring.role(frames.user), answer)
            frames = None
            self._collect(replies, envelope, reply)
            if self.lock.held != lock_was_held or not sock.getsockopt(_EVENTS) & _POLLIN:
                break  # nothing more waiting, or the lock changed hands: the rest is read anew
        self._commit_and_send(sock, replies)

    def _keyed_reply(
        self, envelope: list[bytes], body: list[bytes], role: str | None, answer
    ) -> bytes | None:
        """Under CURVE: the reply for the role of the key that sent ``body``; None drops the message.

        A key removed on SIGHUP keeps its open connections, but its requests get
        nothing; a read-only key's writes are refused before they reach the store.
        """
        if role is None:
            log.info("request from a key no longer allowed dropped (%s)", envelope[0].hex())
            return None
        request = self.handler.parse(body)
        if isinstance(request, bytes):
            return request
        if role == RO and request.is_write:
            return _permission_denied(request)
        return answer(envelope, request)

    @staticmethod
    def _collect(replies: list[list[bytes]], envelope: list[bytes], reply: bytes | None) -> None:
        if reply is not None:
            envelope.append(reply)
            replies.append(envelope)

    def _commit_and_send(self, sock: zmq.Socket, replies: list[list[bytes]]) -> None:
        """Make the batch's writes durable (group commit), then send its replies."""
        try:
            self.files.commit()
        except OSError as exc:
            self._stop_unacknowledged(exc)
            return
        self.replication.flush()
        for frames in replies:
            self._outbox.send(sock, frames)

    def _stop_unacknowledged(self, exc: OSError) -> None:
        """With ``--fsync always``, a failed fsync: the batch is not answered and the server stops.

        After a failed fsync the kernel may have dropped the journal's unwritten
        pages, and a later fsync can succeed without them, so nothing written since
        the last good one is known to be durable: acknowledging it would break
        the policy's promise.  The clients get no reply (their writes may or may
        not have been applied, and a resend after the restart is answered from
        the dedup table); the final snapshot on the way out saves what it can.
        """
        log.critical(
            "journal fsync failed (%s): the writes of this batch are not acknowledged and the server "
            "stops; restart it once the disk is healthy",
            exc,
        )
        self._stopping = True
        self._exit_code = 1

    def _housekeeping(self) -> None:
        if self._reload_keys:
            self._reload_keys = False
            if self._zap.reload():  # some keys went: the write and lock ports drop theirs per request
                self._restart_read_queue()
        holder = self.lock.holder
        if self.lock.expire_if_silent():
            log.warning("lock of client %s released: silent for %.1f s", holder, self.lock.lease)
        try:
            self.files.tick()
        except OSError as exc:
            log.error("journal fsync failed: %s", exc)
        finished = self.files.poll_snapshot()
        if finished is not None:
            self._answer_pending_saves(finished)
            if self._next_saves:
                self._pending_saves, self._next_saves = self._next_saves, []
                self._start_snapshot()
        if self.files.autosave_due():
            self._start_snapshot()
        if self._workers.pending:
            self._send_worker_replies()
        for frames in self._workers.check():
            self._outbox.send(self._front, frames)
        self._outbox.prune()
        self.replication.tick()
        if self._metrics is not None:
            self._metrics.tick()
        expired = self.handler.sessions.expire()
        if expired:
            log.info("forgot the write records of %d client(s) idle for a day", expired)

    def _queued_reply(self, envelope: list[bytes], request: Request) -> bytes | None:
        """The reply to a request on the write port while nobody holds the lock."""
        if request.op == "save" and self.handler.sessions.replay(request) is None:
            if self.files.snapshot_running:  # that snapshot predates this request: wait for the next
                self._next_saves.append((envelope, request))
            else:
                self._pending_saves.append((envelope, request))
                self._start_snapshot()
            return None
        try:
            if request.op == "lock":
                return self._grant(request)
            if request.op == "unlock":
                raise errors.LockError("unlock() must come from the lock holder on the lock socket")
        except errors.LockError as exc:
            return protocol.error_reply(request.id, exc)
        if offloaded(request):
            self._workers.submit(envelope, request)
            return None
        return self._answer(request)

    def _answer(self, request: Request) -> bytes:
        self._answering = request
        try:
            reply = self.handler.answer(request)
        finally:
            self._answering = None
        if request.op == "exec":  # it may have changed the store without the journal
            for frames in self._workers.restart("replaced after exec"):
                self._outbox.send(self._front, frames)
        return reply

    def _locked_out_reply(self, envelope: list[bytes], request: Request) -> bytes | None:
        """The reply to a request on the write port while a client holds the lock; None if held."""
        if request.token is not None and request.token == self.lock.token:
            return self._holder_reply(envelope, request)
        replayed = self.handler.sessions.replay(request) if request.is_write else None
        if replayed is not None:  # a resend, e.g. of the lock() whose grant was lost: answer it now
            if request.op == "lock" and request.client == self.lock.holder:
                self.lock.touch()
            return replayed
        self._held.append((envelope, request))
        return None

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

    def _holder_reply(self, _envelope: list[bytes], request: Request) -> bytes:
        """The reply to a request of the lock holder (every request on the lock socket is one)."""
        replayed = self.handler.sessions.replay(request) if request.is_write else None
        if replayed is not None:
            return replayed  # a retry whose first reply was lost, even if the lease ran out since
        try:
            self.lock.check(request.token)
            self.lock.touch()
            if request.op == "lock":
                raise errors.LockError("you already hold the lock")
        except errors.LockError as exc:
            return protocol.error_reply(request.id, exc)
        if request.op != "unlock":
            return self._answer(request)
        self.lock.release()
        log.info("lock released by client %s", request.client)
        reply = protocol.ok_reply(request.id, None)
        self.handler.sessions.remember(request, reply)
        return reply

    def _start_snapshot(self) -> None:
        try:
            self.files.start_snapshot(self.state(), self._collect_blobs)
        except OSError as exc:
            log.error("could not start a snapshot: %s", exc)
            self._answer_pending_saves(False, str(exc))

    def _answer_pending_saves(self, ok: bool, why: str = "see the server log") -> None:
        pending, self._pending_saves = self._pending_saves, []
        for envelope, request in pending:
            if ok:
                reply = protocol.ok_reply(request.id, None)
            else:
                reply = protocol.error_reply(request.id, errors.StorageError(f"save failed: {why}"))
            self.handler.sessions.remember(request, reply)
            self._outbox.send(self._front, [*envelope, reply])

    def _shutdown(self) -> None:
        try:
            self.save()
            self._pending_saves += self._next_saves
            self._next_saves = []
            self._answer_pending_saves(True)
        except OSError as exc:
            log.error("could not save on shutdown (the journal still holds every write): %s", exc)
        try:
            self.files.close()
        except OSError as exc:
            log.error("could not sync the journal on shutdown: %s", exc)
        self._workers.stop()
        self._close_network()
        log.warning("pyzdb read-write server stopped")

    def _close_network(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
        if self._read_queue is not None:
            self._read_queue.stop()
        if self._metrics is not None:
            self._metrics.close()
        self._context.term()


def _permission_denied(request: Request) -> bytes:
    what = f"{request.method}()" if request.op == "call" else repr(request.op)
    return protocol.error_reply(
        request.id, errors.PermissionDeniedError(f"{what} needs a read-write key; this key is read-only")
    )


def _split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a ROUTER-received message into its routing envelope (with the empty delimiter) and body."""
    try:
        cut = frames.index(b"") + 1
    except ValueError:
        return frames[:1] + [b""], frames[1:]  # a peer without the REQ delimiter: still answer it
    return frames[:cut], frames[cut:]
