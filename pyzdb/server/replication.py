"""The writer's side of replication over ZeroMQ (SPEC §12), and the stream's wire format.

The replication stream is the journal: every record the writer journals (a
checked write request, JSON) is also kept in an in-memory *backlog* and sent
to each replica that asked for it.  A replica connects a DEALER to the
writer's replication ROUTER (5563) and pulls; nothing is pushed beyond the
*credit* it granted (one credit per message), so a stalled replica costs the
writer no more than its window.

Positions
    A position is ``(history, count, chain)``: ``history`` names one line of
    writes (a random id made when a store first gets one, kept in the
    snapshot), ``count`` is the number of records since that history began, and
    ``chain`` is a running BLAKE2b over every record so far
    (``chain_n = H(chain_{n-1} || record_n)``).  Two stores with the same
    history and count but different chains have diverged (a writer restarted
    from an older copy, a cut tail that a replica had already received); the
    writer finds that by looking the replica's count up in its backlog.

Full copy
    A replica that is new, of another history, diverged, or behind the backlog
    gets the store itself, then the records after it.  The snapshot file is a
    pickle, and a pickle from a socket can run code, so the copy is not the
    snapshot's bytes: it is the tree encoded with pyzdb's own value codec (the
    JSON with ``$`` tags that every request and reply uses), in chunks, with
    its size and BLAKE2b digest announced first and checked before anything
    is decoded.  Time-series collections travel the same way, as plain values
    (``pyzdb.timeseries.portable``), checked as writes would be.  The undo
    history and the dedup table are not copied: the replica refuses writes,
    and a later ``undo`` record that reaches back before the copy fails on the
    replica, which then asks for a fresh copy (see ``pyzdb.server.replica``).
    Stored files are copied as references: their content stays on the
    writer's disk.

Messages (multipart; the first frame names the kind, the second is a small JSON
object; replica → writer: ``HELLO``, ``CREDIT``; writer → replica:
``RECORDS`` (+ one frame per record), ``COPY`` then ``CHUNK`` frames,
``HEARTBEAT``, ``RESYNC``, ``REFUSED``).  Every writer message carries the
``session`` number of the replica's latest ``HELLO`` (anything from an older
session is stale and dropped) and its number ``n`` within the session: ZeroMQ
drops messages queued on a connection that breaks, and a replica that sees a
gap in the numbers starts again from its position.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import zmq

from pyzdb import codec
from pyzdb.storage import journal
from pyzdb.storage.durable import _die_with_parent

log = logging.getLogger("pyzdb.replication")

HEARTBEAT_S = 1.0
"""Either side sends something at least this often."""
WRITER_PEER_TIMEOUT_S = 10.0
"""The writer forgets a replica it heard nothing from for this long."""
BATCH_RECORDS = 256
"""Most records in one RECORDS message."""
BATCH_BYTES = 1 << 20
"""Most record bytes in one RECORDS message (a larger record travels alone)."""
CHUNK_BYTES = 1 << 20
"""Bytes of a full copy per CHUNK message."""
DEFAULT_BACKLOG_BYTES = 64 << 20
"""Record bytes the writer keeps for replicas that fall behind (``--repl-backlog-bytes``)."""
BACKLOG_IDLE_S = 3600.0
"""With no replica for this long, the writer frees the backlog's memory (as Redis's repl-backlog-ttl)."""
MAX_PEERS = 100
"""Most replicas served at once (each HELLO from a new one beyond is refused)."""
COPY_KEEP_S = 60.0
"""A finished full copy is kept this long for other replicas that need one."""
COPY_FORMAT = "pyzdb-copy-2"
COPY_FORMATS = ("pyzdb-copy-1", COPY_FORMAT)
"""Formats a replica takes: 1 was the tree alone, 2 adds the collections and the version."""
ZERO_CHAIN = bytes(16)
ZMTP_HEARTBEAT_MS = 1000
ZMTP_HEARTBEAT_TIMEOUT_MS = 3000


def chain_next(chain: bytes, record: bytes) -> bytes:
    """The chained checksum after ``record``."""
    digest = hashlib.blake2b(chain, digest_size=16)
    digest.update(record)
    return digest.digest()


def new_history() -> str:
    """A fresh history id."""
    return secrets.token_hex(8)


@dataclass
class Position:
    """Where a store is in its history: ``count`` records applied, ``chain`` over all of them."""

    history: str | None
    count: int = 0
    chain: bytes = ZERO_CHAIN

    def advance(self, record: bytes) -> None:
        """Move past one record."""
        self.count += 1
        self.chain = chain_next(self.chain, record)

    def to_json(self) -> dict:
        """The plain form kept in snapshots and sent in messages."""
        return {"history": self.history, "count": self.count, "chain": self.chain.hex()}

    @classmethod
    def from_json(cls, data: Any) -> Position:
        """Parse the plain form; ``ValueError`` if it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a position is an object")
        history, count, chain = data.get("history"), data.get("count"), data.get("chain")
        if history is not None and not (isinstance(history, str) and 0 < len(history) <= 64):
            raise ValueError("bad history id")
        if type(count) is not int or count < 0:
            raise ValueError("bad record count")
        if not isinstance(chain, str) or len(chain) != 32:
            raise ValueError("bad chain")
        return cls(history, count, bytes.fromhex(chain))


def message(kind: bytes, body: dict, *frames: bytes) -> list[bytes]:
    """A stream message: its kind, its JSON body, then any payload frames."""
    return [kind, json.dumps(body, separators=(",", ":")).encode(), *frames]


def parse_body(frames: list[bytes], limit: int = 1 << 20) -> dict:
    """The JSON body of a stream message; ``ValueError`` if it is missing or not an object."""
    if len(frames) < 2 or len(frames[1]) > limit:
        raise ValueError("message without a (small) body")
    try:
        body = json.loads(frames[1])
    except RecursionError:
        raise ValueError("message body nested too deeply") from None
    if not isinstance(body, dict):
        raise ValueError("message body is not an object")
    return body


def encode_copy(store: Any) -> bytes:
    """The full copy of a store (its tree, collections and version), in pyzdb's codec (never pickle)."""
    state = store.state()
    copy = {
        "format": COPY_FORMAT,
        "root": codec.encode(state["root"], "the store"),
        "version": state["version"],
    }
    registry = state["timeseries"]
    if registry is not None and registry.collections:
        from pyzdb.timeseries.portable import to_plain  # numpy: only for stores that use collections

        copy["timeseries"] = codec.encode(to_plain(registry), "the collections")
    return codec.dumps(copy)


def decode_copy(data: bytes) -> dict:
    """The store state of a full copy (already checked against its digest); ``ValueError`` if malformed.

    The state has ``root``, ``version`` and, when the writer had collections,
    ``timeseries`` (a checked ``Registry``), as ``Store.from_state`` takes it.
    Copies of the first format (a tree alone) still decode.
    """
    try:
        copy = _parse_copy(data)
    except Exception as exc:  # ProtocolError and friends: one clear reason
        raise ValueError(f"full copy does not decode: {exc}") from None
    if (
        not isinstance(copy, dict)
        or copy.get("format") not in COPY_FORMATS
        or type(copy.get("root")) is not dict
    ):
        raise ValueError(f"full copy is not in the {COPY_FORMAT} format")
    version = copy.get("version", 0)
    if type(version) is not int or version < 0:
        raise ValueError("full copy with a bad version")
    state = {"root": copy["root"], "version": version}
    if "timeseries" in copy:
        from pyzdb.timeseries.portable import from_plain

        state["timeseries"] = from_plain(copy["timeseries"])
    return state


def _parse_copy(data: bytes) -> Any:
    """Parse a copy: with orjson when it holds no tag (2 x faster), else with the codec.

    The codec tags every integer beyond 2**53 (``$int``), so a copy without a
    tag holds none of the integers orjson would read as floats; what orjson
    refuses (an escaped lone surrogate) is read by the codec.
    """
    if b"$" not in data and b"\\u0024" not in data:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return codec.loads(data)


def configure_link_socket(sock: zmq.Socket) -> None:
    """ZMTP heartbeats, so a half-open TCP link is noticed and reconnected by ZeroMQ."""
    sock.linger = 0
    sock.heartbeat_ivl = ZMTP_HEARTBEAT_MS
    sock.heartbeat_timeout = ZMTP_HEARTBEAT_TIMEOUT_MS
    sock.heartbeat_ttl = ZMTP_HEARTBEAT_TIMEOUT_MS


class CopyJob:
    """A full copy encoded by a forked child, so that the writer keeps serving meanwhile.

    The child sees the store as it was at the fork, which is ``position``; the
    records after it are in the backlog.  It writes the encoded copy to
    ``<store>.tmp-copy-<count>`` (a leftover is removed at the next start, like
    an unfinished snapshot), which the parent reads and deletes.
    """

    def __init__(self, db: Path, store: Any, position: Position) -> None:
        self.position = Position(position.history, position.count, position.chain)
        self.path = db.with_name(f"{db.name}.tmp-copy-{position.count}")
        self.started = time.perf_counter()
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the child: encode, write, leave without any of the parent's cleanup
            code = 0
            try:
                _die_with_parent(parent)
                os.nice(10)
                data = encode_copy(store)
                with open(self.path, "wb") as handle:
                    handle.write(data)
            except BaseException as exc:  # noqa: BLE001 - report and exit, whatever it was
                os.write(2, f"pyzdb: full copy failed: {exc}\n".encode())
                code = 1
            os._exit(code)

    def poll(self) -> list[tuple] | None:
        """The copy's messages once the child has finished, None before; ``OSError`` if it failed."""
        done, status = os.waitpid(self.pid, os.WNOHANG)
        if done == 0:
            return None
        try:
            if os.waitstatus_to_exitcode(status) != 0:
                raise OSError(f"the copy process exited with status {os.waitstatus_to_exitcode(status)}")
            data = self.path.read_bytes()
        finally:
            self.path.unlink(missing_ok=True)
        log.info("encoded a full copy of %d bytes in %.3f s", len(data), time.perf_counter() - self.started)
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        meta = {
            "position": self.position.to_json(),
            "size": len(data),
            "digest": hashlib.blake2b(data, digest_size=32).hexdigest(),
            "chunks": len(chunks),
        }
        return [(b"COPY", meta)] + [(b"CHUNK", {"index": i}, chunk) for i, chunk in enumerate(chunks)]


class Backlog:
    """The newest records with their positions, bounded in bytes."""

    def __init__(self, position: Position, limit_bytes: int = DEFAULT_BACKLOG_BYTES) -> None:
        self.head = Position(position.history, position.count, position.chain)
        """The position after the newest record."""
        self.base_count, self.base_chain = position.count, position.chain
        """The position before the oldest record kept."""
        self.limit_bytes = limit_bytes
        self.bytes = 0
        self._records: list[bytes] = []
        self._chains: list[bytes] = []
        self._start = 0

    def append(self, record: bytes) -> None:
        """Keep one newly journaled record."""
        self.head.advance(record)
        self._records.append(record)
        self._chains.append(self.head.chain)
        self.bytes += len(record)
        while self.bytes > self.limit_bytes and self._start < len(self._records) - 1:
            self._drop_oldest()

    def pass_over(self, record: bytes) -> None:
        """Move past one record without keeping it (the backlog stays empty)."""
        self.head.advance(record)
        self.base_count, self.base_chain = self.head.count, self.head.chain

    def _drop_oldest(self) -> None:
        self.bytes -= len(self._records[self._start])
        self.base_chain = self._chains[self._start]
        self.base_count += 1
        self._records[self._start] = b""
        self._start += 1
        if self._start > 4096 and self._start * 2 > len(self._records):
            del self._records[: self._start], self._chains[: self._start]
            self._start = 0

    def chain_at(self, count: int) -> bytes | None:
        """The chain after record ``count``, or None if that position is not in the backlog."""
        if count == self.base_count:
            return self.base_chain
        if self.base_count < count <= self.head.count:
            return self._chains[self._start + count - self.base_count - 1]
        return None

    def batch(self, after: int) -> tuple[list[bytes], list[bytes]]:
        """Records (and their chains) following record ``after``, at most one message's worth."""
        first = self._start + after - self.base_count
        records: list[bytes] = []
        size = 0
        for index in range(first, min(first + BATCH_RECORDS, len(self._records))):
            record = self._records[index]
            if records and size + len(record) > BATCH_BYTES:
                break
            records.append(record)
            size += len(record)
        return records, self._chains[first : first + len(records)]


@dataclass
class Peer:
    """One replica as the writer sees it."""

    identity: bytes
    session: int
    name: str
    credit: int
    sent: int
    """Count of the last record sent."""
    applied: int
    """Count of the last record the replica said it applied."""
    last_heard: float
    last_sent: float = 0.0
    copy: deque | None = field(default=None, repr=False)
    """Full-copy messages still to send."""
    waiting: bool = False
    """Waiting for a full copy being made (or refused one): nothing is sent."""
    granted: int = 0
    """Messages the replica allowed in this session, in all."""
    charged: int = 0
    """Messages sent against that credit."""
    min_copy: int = 0
    """The oldest record count a full copy for it may be made at."""
    next_number: int = 0
    """Number of the next message of this session: a replica that sees a gap lost one."""


def position_from_state(state: dict, db: str | os.PathLike | None = None) -> Position:
    """The position a snapshot was taken at.

    A store without one (no snapshot yet) continues the history its first
    journal started, if ``db``'s journal says so, so that a writer killed
    before its first snapshot keeps its replicas; otherwise a new history begins.
    """
    saved = state.get("replication")
    if saved is not None:
        return Position.from_json(saved)
    generation = state.get("generation", 0)
    files = journal.journal_files(Path(db).absolute()) if db is not None else []
    journals = [path for gen, path in files if gen >= generation]
    if journals:
        try:
            started = Position.from_json(json.loads(journal.start_path(journals[0]).read_text()))
        except (OSError, ValueError):
            started = None
        if started is not None and started.count == 0 and started.chain == ZERO_CHAIN:
            return started
    return Position(new_history())


def source_from_state(
    state: dict, backlog_bytes: int = DEFAULT_BACKLOG_BYTES, db: str | os.PathLike | None = None
) -> ReplicationSource:
    """The writer's replication source, positioned where the loaded snapshot (or first journal) began."""
    return ReplicationSource(position_from_state(state, db), backlog_bytes)


def write_journal_start(journal_file: Path, position: Position) -> None:
    """Record the position at the start of ``journal_file`` beside it (for a later backlog)."""
    journal.start_path(journal_file).write_text(json.dumps(position.to_json()))


def journal_records(db: Path, position: Position) -> tuple[Position, list[bytes]] | None:
    """The start position and records of the store's journals on disk that lead to ``position``, or None.

    The journals must follow each other without a gap up to the newest and,
    replayed over the start position recorded beside the oldest used, end
    exactly at ``position``; journals of another history (before an exec) are
    left out, anything that does not fit is ignored.
    """
    run: list[Path] = []
    newest = None
    for gen, path in reversed(journal.journal_files(db)):
        newest = gen if newest is None else newest
        if gen != newest - len(run):
            break
        run.insert(0, path)
    for index, path in enumerate(run):
        try:
            start = Position.from_json(json.loads(journal.start_path(path).read_text()))
            if start.history != position.history:
                continue  # written before the store began its history (an exec): not part of it
            records = [raw for file in run[index:] for raw in journal.scan(file, file == run[-1]).records]
        except (OSError, ValueError, journal.CorruptJournalError) as exc:
            log.info("journal %s not used for the backlog: %s", path, exc)
            continue
        check = Position(start.history, start.count, start.chain)
        for raw in records:
            check.advance(raw)
        if check != position:
            log.warning(
                "journals from %s do not lead to the writer's position; not used for the backlog", path
            )
            return None
        return start, records
    return None


class ReplicationSource:
    """The writer's replication port: peers, their credit, the backlog; driven by the request loop."""

    def __init__(self, position: Position, backlog_bytes: int = DEFAULT_BACKLOG_BYTES) -> None:
        self.backlog = Backlog(position, backlog_bytes)
        self.holding = False
        """Whether the backlog keeps records in memory: from the first replica's ``HELLO`` until
        ``BACKLOG_IDLE_S`` after the last one left (before that, they are only on disk)."""
        self._alone_since = time.monotonic()
        self.peers: dict[bytes, Peer] = {}
        self.sock: zmq.Socket | None = None
        self.copies_sent = 0
        self._store: Any = None
        self._folder_file: Path | None = None
        self._copy_cache: tuple[int, list[tuple]] | None = None
        """The newest finished copy: its record count and its messages."""
        self._copy_job: CopyJob | None = None
        self._copy_made = 0.0

    @property
    def position(self) -> Position:
        """The position after the newest journaled record."""
        return self.backlog.head

    def record(self, payload: bytes) -> None:
        """A record was just journaled (called for every one, also while recovering)."""
        if self.holding:
            self.backlog.append(payload)
        else:
            self.backlog.pass_over(payload)

    def new_history(self, why: str) -> None:
        """Begin a new history: the store changed outside the journal (exec), so no record leads to it.

        Every replica is told to start again (``RESYNC``); its position is then of
        another history, and it takes a full copy.  Call before the snapshot that
        keeps the change, so that the snapshot starts the new history.
        """
        old = self.backlog.head
        self.backlog = Backlog(Position(new_history()), self.backlog.limit_bytes)
        self._copy_cache = None
        log.warning(
            "%s: new replication history %s after record %d of %s; replicas take a full copy",
            why,
            self.backlog.head.history,
            old.count,
            old.history,
        )
        if self.sock is not None:
            for peer in self.peers.values():
                try:
                    self.sock.send_multipart([peer.identity, *message(b"RESYNC", {})], zmq.NOBLOCK)
                except zmq.Again:  # a stuck link: its next message to us gets the RESYNC instead
                    pass
        self.peers.clear()

    def open(self, sock: zmq.Socket, store: Any, db: str | os.PathLike) -> None:
        """Start serving replicas on the bound ROUTER ``sock``, copying ``store`` (kept in ``db``)."""
        self.sock = sock
        self._store = store
        self._folder_file = Path(db).absolute()
        sock.router_handover = True  # a replica that reconnects with its id replaces its dead link
        configure_link_socket(sock)

    def flush(self) -> None:
        """Send new records to every peer that has credit (after each batch is committed)."""
        if not self.peers:
            return
        head = self.backlog.head.count
        for peer in self.peers.values():
            if peer.credit > 0 and (peer.copy or peer.sent < head):
                self._pump(peer)

    def tick(self) -> None:
        """Read what replicas sent, pump, send heartbeats, forget silent peers."""
        if self.sock is None:
            return
        for _ in range(1000):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._receive(frames)
        self._poll_copy()
        now = time.monotonic()
        if self._copy_cache is not None and now - self._copy_made > COPY_KEEP_S:
            self._copy_cache = None  # its memory is the size of the store: keep it only a while
        self._let_go_of_backlog(now)
        for peer in list(self.peers.values()):
            if now - peer.last_heard > WRITER_PEER_TIMEOUT_S:
                log.warning("replica %s: link lost (silent for %.0f s)", peer.name, now - peer.last_heard)
                del self.peers[peer.identity]
                continue
            self._pump(peer)
            if now - peer.last_sent >= HEARTBEAT_S:
                self._send(peer, b"HEARTBEAT", {"count": self.backlog.head.count}, charge=False)

    def _let_go_of_backlog(self, now: float) -> None:
        """With no replica for ``BACKLOG_IDLE_S``, free the backlog's memory (the journals stay on disk)."""
        if self.peers or not self.holding:
            self._alone_since = now
        elif now - self._alone_since > BACKLOG_IDLE_S:
            log.info(
                "no replica for %.0f s: the backlog's %d bytes are freed", BACKLOG_IDLE_S, self.backlog.bytes
            )
            self.backlog = Backlog(self.backlog.head, self.backlog.limit_bytes)
            self.holding = False

    def _hold_backlog(self) -> None:
        """The first replica since start-up (or a long pause): read the backlog from the journals on disk."""
        started, head = time.perf_counter(), self.backlog.head
        self.holding = True
        found = journal_records(self._folder_file, head) if self._folder_file is not None else None
        if found is None:
            return
        backlog = Backlog(found[0], self.backlog.limit_bytes)
        for record in found[1]:
            backlog.append(record)
        self.backlog = backlog
        log.info(
            "backlog: %d records (%d bytes) read from the journals in %.3f s",
            head.count - backlog.base_count,
            backlog.bytes,
            time.perf_counter() - started,
        )

    def stats(self) -> dict[str, Any]:
        """The writer's ``replication`` section of ``db.stats()``."""
        head, now = self.backlog.head, time.monotonic()
        replicas = [
            {
                "name": peer.name,
                "state": "waiting for a copy" if peer.waiting else "copying" if peer.copy else "streaming",
                "applied": peer.applied,
                "lag_records": head.count - peer.applied,
                "credit": peer.credit,
                "last_heard_s": round(now - peer.last_heard, 3),
            }
            for peer in self.peers.values()
        ]
        return {
            "role": "primary" if self.sock is not None else "primary (replication port off)",
            "position": head.to_json(),
            "backlog": {
                "oldest_record": self.backlog.base_count + 1,
                "records": head.count - self.backlog.base_count,
                "bytes": self.backlog.bytes,
                "limit_bytes": self.backlog.limit_bytes,
                "in_memory": self.holding,
            },
            "copies_sent": self.copies_sent,
            "replicas": replicas,
        }

    def _receive(self, frames: list[bytes]) -> None:
        identity, kind = frames[0], frames[1] if len(frames) > 1 else b""
        try:
            body = parse_body(frames[1:])
            if kind == b"HELLO":
                self._hello(identity, body)
                return
            peer = self.peers.get(identity)
            if peer is None:
                self.sock.send_multipart([identity, *message(b"RESYNC", {})], zmq.NOBLOCK)
                return
            if body.get("session") != peer.session:
                return  # from before the replica's latest HELLO
            peer.last_heard = time.monotonic()
            applied = body.get("applied")
            if type(applied) is int and 0 <= applied <= self.backlog.head.count:
                peer.applied = applied
            if kind == b"CREDIT":
                self._grant(peer, body.get("granted"))
                self._pump(peer)
        except (ValueError, UnicodeDecodeError, zmq.Again) as exc:
            log.warning("replication port: dropped a bad %r message: %s", kind[:20], exc)

    @staticmethod
    def _grant(peer: Peer, granted: Any) -> None:
        """Credit is the replica's running total of messages it allows, so a lost CREDIT heals itself."""
        if type(granted) is not int or not peer.charged <= granted <= peer.charged + 10_000:
            raise ValueError("bad credit")
        if granted > peer.granted:
            peer.granted = granted
            if not peer.waiting:
                peer.credit = granted - peer.charged

    def _hello(self, identity: bytes, body: dict) -> None:
        position = Position.from_json(body.get("position"))
        if not self.holding:
            self._hold_backlog()
        session, credit = body.get("session"), body.get("credit")
        if type(session) is not int or type(credit) is not int or not 0 < credit <= 10_000:
            raise ValueError("HELLO needs an integer session and credit")
        name = str(body.get("name", identity.hex()))[:100]
        now = time.monotonic()
        old = self.peers.get(identity)
        if old is None and len(self.peers) >= MAX_PEERS:
            raise ValueError(f"already {MAX_PEERS} replicas connected")
        peer = Peer(identity, session, name, credit, position.count, position.count, now, granted=credit)
        self.peers[identity] = peer
        if old is None:
            log.warning("replica %s: link up at record %d", name, position.count)
        if not self._can_resume(position) or body.get("copy"):
            self._start_copy(peer, position)
        self._pump(peer)

    def _can_resume(self, position: Position) -> bool:
        if position.history != self.backlog.head.history:
            return False
        return self.backlog.chain_at(position.count) == position.chain

    def _start_copy(self, peer: Peer, position: Position) -> None:
        head = self.backlog.head
        why = (
            "new" if position.history is None else
            "of another history" if position.history != head.history else
            "ahead of the writer: diverged" if position.count > head.count else
            "behind the backlog" if position.count < self.backlog.base_count else
            "diverged (chain mismatch)" if self.backlog.chain_at(position.count) != position.chain else
            "asked for one"
        )  # fmt: skip
        log.warning("replica %s needs a full copy (replica %s)", peer.name, why)
        peer.copy, peer.waiting = None, True
        # A replica that asked for a copy could not apply record count+1 (an undo that
        # reaches back before its last copy): a copy older than that record would fail
        # the same way again, so it needs one made at or after it.
        peer.min_copy = position.count + 1 if why == "asked for one" else 0
        cached = self._copy_cache
        if cached is not None and cached[0] >= peer.min_copy and self.backlog.chain_at(cached[0]) is not None:
            self._give_copy(peer, *cached)  # a finished copy that the backlog still continues
            return
        if self._copy_job is None:
            self._new_copy_job()
        if self._copy_job is not None:
            log.info("replica %s waits for the copy of record %d", peer.name, self._copy_job.position.count)

    def _new_copy_job(self) -> None:
        try:
            self._copy_job = CopyJob(self._folder_file, self._store, self.backlog.head)
        except OSError as exc:
            log.error("could not start a full copy: %s", exc)
            for peer in self.peers.values():
                if peer.waiting and peer.copy is None:
                    self._refuse(peer, f"the writer could not start a full copy: {exc}")

    def _refuse(self, peer: Peer, reason: str) -> None:
        self._send(peer, b"REFUSED", {"reason": reason}, charge=False)
        peer.waiting = True  # sends nothing more until it says HELLO again
        peer.credit = 0

    def _give_copy(self, peer: Peer, count: int, messages: list[tuple]) -> None:
        log.warning("replica %s: sending a full copy at record %d", peer.name, count)
        peer.copy = deque((kind, dict(body), *frames) for kind, body, *frames in messages)
        peer.sent = peer.applied = count
        peer.waiting = False
        peer.credit = peer.granted - peer.charged
        self.copies_sent += 1

    def _poll_copy(self) -> None:
        """Hand a copy that a child has just finished to every replica waiting for one."""
        job = self._copy_job
        if job is None:
            return
        try:
            messages = job.poll()
        except OSError as exc:
            self._copy_job = None
            log.error("full copy failed: %s", exc)
            for peer in self.peers.values():
                if peer.waiting and peer.copy is None:
                    self._refuse(peer, "the writer could not make a full copy (see its log)")
            return
        if messages is None:
            return
        self._copy_job = None
        if job.position.history != self.backlog.head.history:
            return  # made before a new history began: it leads nowhere now
        count = job.position.count
        self._copy_cache, self._copy_made = (count, messages), time.monotonic()
        for peer in self.peers.values():
            if peer.waiting and peer.copy is None and peer.credit > 0:
                if peer.min_copy > count:
                    if self._copy_job is None:
                        self._new_copy_job()  # it needs a newer one: the next job serves it
                    continue
                self._give_copy(peer, count, messages)
                self._pump(peer)

    def _pump(self, peer: Peer) -> None:
        """Send what ``peer`` has credit for: the rest of its copy, then records."""
        if peer.waiting:
            return
        while peer.credit > 0 and peer.copy:
            kind, body, *frames = peer.copy.popleft()
            self._send(peer, kind, body, *frames)
        while peer.credit > 0 and peer.sent < self.backlog.head.count:
            if self.backlog.chain_at(peer.sent) is None:  # fell out of the backlog while we sent
                self._start_copy(peer, Position(self.backlog.head.history, peer.sent))
                return self._pump(peer)
            records, chains = self.backlog.batch(peer.sent)
            body = {
                "first": peer.sent + 1,
                "head": self.backlog.head.count,
                "chains": [c.hex() for c in chains],
            }
            self._send(peer, b"RECORDS", body, *records)
            peer.sent += len(records)

    def _send(self, peer: Peer, kind: bytes, body: dict, *frames: bytes, charge: bool = True) -> None:
        body["session"], body["n"] = peer.session, peer.next_number
        try:
            self.sock.send_multipart([peer.identity, *message(kind, body, *frames)], zmq.NOBLOCK)
        except zmq.Again:  # its queue is full: the link is stuck; the replica will say HELLO again
            return
        # A message the ROUTER drops (a connection that broke, a full queue) still uses
        # its number: the replica sees the gap at the next one and starts again.
        peer.next_number += 1
        peer.last_sent = time.monotonic()
        if charge:
            peer.credit -= 1
            peer.charged += 1
