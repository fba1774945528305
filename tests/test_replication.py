"""Replicas fed over ZeroMQ (SPEC §12): real writer and replica processes on loopback.

Every process is stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import signal
import threading
import time
from pathlib import Path
from unittest.mock import ANY

import pytest
import zmq

import pyzdb
from helpers import STOP_TIMEOUT, ServerProcess, free_port_base, wait_until
from pyzdb import TimeSeries, aio, codec, errors, protocol
from pyzdb.client import Connection
from pyzdb.server.replication import (
    ZERO_CHAIN,
    Backlog,
    Position,
    chain_next,
    decode_copy,
    encode_copy,
)
from pyzdb.store import Store
from relay import Relay

SYNC_TIMEOUT = 15.0


class Replica(ServerProcess):
    """A replica process of ``writer``, with its own store file and a direct read address."""

    def __init__(self, db: Path, writer: ServerProcess, *extra: str, primary: str | None = None) -> None:
        self.read_port = free_port_base(1)
        self.primary = primary or f"tcp://127.0.0.1:{writer.port_base + 5}"
        super().__init__(
            db,
            writer.port_base,
            "--primary",
            self.primary,
            "--read-bind",
            f"tcp://127.0.0.1:{self.read_port}",
            "-v",
            *extra,
            read_only=True,
        )

    @property
    def direct_uri(self) -> str:
        """Its own read address (``--read-bind``)."""
        return f"tcp://127.0.0.1:{self.read_port}"

    def root(self) -> object:
        """The whole store as this replica serves it now."""
        with Connection(self.direct_uri, timeout=5) as conn:
            return conn.call("get", ())


def _root(writer: ServerProcess) -> object:
    with Connection(writer.write_uri, timeout=5) as conn:
        return conn.call("get", ())


def _wait_synced(replica: Replica, writer: ServerProcess, timeout: float = SYNC_TIMEOUT) -> None:
    expected = _root(writer)
    wait_until(lambda: replica.root() == expected, timeout, 0.05)


@pytest.fixture
def writer(tmp_path):
    """A read-write server with replication on (N+5); stopped by PID after the test."""
    proc = ServerProcess(tmp_path / "writer" / "db.pkl", None, "-v")
    proc.db.parent.mkdir()
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def replica_path(tmp_path) -> Path:
    """Where the replica keeps its own store (another folder: it never sees the writer's files)."""
    folder = tmp_path / "replica"
    folder.mkdir()
    return folder / "replica.pkl"


@pytest.fixture
def replica(writer, replica_path):
    """A running replica of ``writer``; stopped by PID after the test."""
    proc = Replica(replica_path, writer).start()
    yield proc
    proc.stop()


def _write(writer: ServerProcess, count: int, prefix: str = "k") -> None:
    with Connection(writer.write_uri, timeout=10) as conn:
        for i in range(count):
            conn.db[f"{prefix}{i}"] = {"i": i, "tags": [prefix, i]}


def _sync_then_stop(replica: Replica, writer: ServerProcess) -> None:
    """Start ``replica``, let it follow 10 writes, and stop it: the writer goes on without it."""
    replica.start()
    _write(writer, 10, "one")
    _wait_synced(replica, writer)
    replica.stop()


# --- positions and the copy format, without processes ---------------------------------


def test_chain_detects_a_changed_or_reordered_record():
    a, b = b'{"op":"set","n":1}', b'{"op":"set","n":2}'
    straight = chain_next(chain_next(ZERO_CHAIN, a), b)
    assert straight != chain_next(chain_next(ZERO_CHAIN, b), a)
    assert straight != chain_next(chain_next(ZERO_CHAIN, a), b + b" ")


def test_backlog_keeps_positions_and_drops_oldest_by_size():
    backlog = Backlog(Position("h", 10, ZERO_CHAIN), limit_bytes=100)
    records = [bytes([65 + i]) * 30 for i in range(6)]
    for record in records:
        backlog.append(record)
    assert backlog.head.count == 16
    assert backlog.base_count == 13  # 3 records of 30 bytes fit in 100
    assert backlog.chain_at(12) is None and backlog.chain_at(17) is None
    chain = backlog.chain_at(13)
    sent, chains = backlog.batch(13)
    assert sent == records[3:]
    for record, expected in zip(sent, chains, strict=True):
        chain = chain_next(chain, record)
        assert chain == expected
    assert chain == backlog.head.chain


def test_position_from_the_network_is_checked():
    good = Position("abc", 3, bytes(range(16))).to_json()
    assert Position.from_json(good) == Position("abc", 3, bytes(range(16)))
    for bad in ({**good, "count": -1}, {**good, "count": "3"}, {**good, "chain": "00"}, [good], None):
        with pytest.raises(ValueError):
            Position.from_json(bad)


def test_copy_format_is_pyzdb_codec_not_pickle():
    root = {"a": (1, 2), "c": [b"raw", None, 2**80], 5: {"n": 1.5}}
    data = encode_copy(Store(root))
    assert not data.startswith(b"\x80")  # not a pickle
    assert decode_copy(data) == {"root": root, "version": 0}
    import pickle

    for bad in (pickle.dumps(root), b'{"format":"pyzdb-copy-2","root":[1]}', b"{"):
        with pytest.raises(ValueError):
            decode_copy(bad)
    assert decode_copy(b'{"format":"pyzdb-copy-1","root":{"a":1}}')["root"] == {"a": 1}  # older writers
    for plain in (
        {"s": "\ud800 lone", "f": 0.1, "l": list(range(40))},
        {"n": 2**60},
        {"records": [{"a": 1}] * 20},
    ):
        assert decode_copy(encode_copy(Store(plain)))["root"] == plain  # untagged copies parse with orjson


def _store_with_collections() -> Store:
    store = Store({"plain": 1})
    schema = {"order": "int", "level": "str", "mean": "float"}
    store.write("ts", ("stars",), "create", kwargs={"schema": schema, "index": ["order", "level"]})
    store.write("ts", ("free",), "create", kwargs={"retention": 10, "duplicate_policy": "sum"})
    for i in range(5):
        store.write("ts", ("stars",), "insert_ts", [f"s{i}", TimeSeries(range(i + 2), [i] * (i + 2))])
        store.write("ts", ("stars",), "upsert_meta", [f"s{i}", {"order": i % 3, "level": "AB"[i % 2]}])
    store.write("ts", ("free",), "upsert_meta", [7, {"tags": ["x", {"y": None}]}])
    store.write("ts", ("free",), "add", [7, 1.0, 2.5])
    return store


def _collections_as_read(store: Store) -> dict:
    reads = {"names": store.read("ts", (), "names")}
    for name in reads["names"]:
        reads[name] = {
            pk: store.read("ts", (name,), "get", [pk])
            for pk in sorted(store.timeseries.collection(name).rows, key=str)
        }
    reads["range"] = store.read("ts", ("stars",), "select", [{"order": {">=": 1}, "level": "A"}])
    return reads


def test_copy_carries_collections_and_their_indexes():
    store = _store_with_collections()
    store.write("set", ("plain",), args=[2])
    copied = Store.from_state(decode_copy(encode_copy(store)), 10)
    assert copied.root == {"plain": 2}
    assert copied.changes.version == store.changes.version
    assert repr(_collections_as_read(copied)) == repr(_collections_as_read(store))
    assert copied.timeseries.collection("free").options == store.timeseries.collection("free").options
    copied.write("ts", ("free",), "add", [7, 1.0, 1.5])  # the duplicate policy came along: sum
    assert list(copied.read("ts", ("free",), "get", [7])["ts"].values) == [4.0]


@pytest.mark.parametrize(
    "tamper, why",
    [
        (lambda c: c[0].update(name=""), "cannot be empty"),
        (lambda c: c[0]["options"].update(retention=-1), "retention"),
        (lambda c: c[0]["options"].pop("index"), "options must name exactly"),
        (lambda c: c[0]["rows"].append(["s1", {}, None]), "twice"),
        (lambda c: c[0]["rows"][0].__setitem__(0, 1.5), "a pk must be"),
        (lambda c: c[0]["rows"][0][1].update(order="many"), "is not a int"),
        (lambda c: c[0]["rows"][0][1].update(colour=1), "not in the schema"),
        (lambda c: c[0]["rows"][0].__setitem__(2, [1, 2]), "TimeSeries or null"),
        (lambda c: c.append(c[0]), "twice in a copy"),
    ],
)
def test_a_copy_with_bad_collections_is_refused(tamper, why):
    from pyzdb.timeseries.portable import from_plain, to_plain

    plain = to_plain(_store_with_collections().timeseries)
    plain = [item for item in plain if item["name"] == "stars"] + [
        item for item in plain if item["name"] != "stars"
    ]
    plain = codec.loads(codec.dumps(codec.encode(plain)))  # a deep copy, as it arrives
    tamper(plain)
    with pytest.raises(ValueError, match=why):
        from_plain(plain)


# --- real processes -----------------------------------------------------------------


def test_new_replica_gets_a_full_copy_then_every_write(writer, replica_path):
    _write(writer, 50, "before")
    replica = Replica(replica_path, writer).start()
    try:
        _wait_synced(replica, writer)
        assert "needs a full copy (replica new)" in writer.log()
        assert "sending a full copy at record 50" in writer.log()
        _write(writer, 30, "after")
        with Connection(writer.write_uri, timeout=5) as conn:
            conn.db["l"] = [1, 2]
            conn.db["l"].append(3)
            del conn.db["before0"]
            conn.db.undo()  # journaled undo, replayed on the replica from its own history
        _wait_synced(replica, writer)
        assert replica.root()["after29"] == {"i": 29, "tags": ["after", 29]}
        assert replica.root()["l"] == [1, 2, 3] and "before0" in replica.root()
        with Connection(replica.direct_uri, timeout=5) as conn:
            with pytest.raises(errors.ReadOnlyError):
                conn.db["x"] = 1
            assert conn.call("ping")["read_only"] is True
        with Connection(writer.read_uri, timeout=5) as conn:  # the writer's read queue reaches it too
            assert conn.call("ping")["pid"] == replica.pid
            assert conn.db["after29"]["i"]._run() == 29
        assert "link to tcp://" in replica.log() and "up, at record" in replica.log()
        with Connection(writer.write_uri, timeout=5) as conn:
            for _ in range(40):  # the replica has the 32 steps since its copy, the writer more
                conn.db.undo()
        _wait_synced(replica, writer)
        assert "does not apply here (UndoError" in replica.log()
        # a copy made while the undos still come may meet another that reaches before it
        assert replica.log().count("loaded a full copy") >= 2
    finally:
        assert replica.stop() == 0


def test_reader_never_sees_part_of_a_write_or_a_value_go_back(writer, replica):
    with Connection(writer.write_uri, timeout=5) as conn:
        conn.db["pair"] = {"a": 0, "b": 0}
    _wait_synced(replica, writer)
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def read() -> None:
        with Connection(replica.direct_uri, timeout=5) as reader:
            while not done.is_set():
                pair = reader.db["pair"]._run()
                seen.append((pair["a"], pair["b"]))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        with Connection(writer.write_uri, timeout=5) as conn:
            for i in range(1, 301):
                conn.db["pair"].update({"a": i, "b": i})  # one request: both keys or neither
    finally:
        wait_until(lambda: seen and seen[-1] == (300, 300), SYNC_TIMEOUT)
        done.set()
        thread.join(10)
    assert all(a == b for a, b in seen), "a reader saw part of a request"
    assert [a for a, _ in seen] == sorted(a for a, _ in seen), "a value went backwards"
    assert len(set(seen)) > 2


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_restarted_replica_catches_up_from_its_own_position(writer, replica_path, how):
    replica = Replica(replica_path, writer).start()
    try:
        _write(writer, 40, "one")
        _wait_synced(replica, writer)
        replica.stop(how)
        _write(writer, 40, "two")
        replica.start()
        _wait_synced(replica, writer)
        assert writer.log().count("sending a full copy") == 1, "catch-up, not a second copy"
        assert "up, at record 40" in replica.log()  # where its own files left it
    finally:
        replica.stop()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_replica_catches_up_after_the_writer_restarts(writer, replica, how):
    with Connection(writer.write_uri, timeout=5) as conn:
        conn.db.save()  # the history id is kept in the snapshot from here on
    _write(writer, 30, "one")
    _wait_synced(replica, writer)
    writer.stop(how)
    writer.start()
    _write(writer, 30, "two")
    _wait_synced(replica, writer)
    assert writer.log().count("sending a full copy") == 1, "the restarted writer resumed the stream"
    assert writer.log().count("link up at record") == 2
    assert "lost (silent" in replica.log() or "the writer does not know this replica" in replica.log()


def _backlog(writer: ServerProcess) -> dict:
    with Connection(writer.write_uri, timeout=5) as conn:
        return conn.db.stats()["replication"]["backlog"]


def test_backlog_is_read_from_the_journals_when_the_first_replica_comes(writer, replica_path):
    replica = Replica(replica_path, writer).start()
    try:
        _write(writer, 20, "one")
        _wait_synced(replica, writer)
        assert _backlog(writer)["in_memory"] is True
        replica.stop()
        writer.kill()  # no final snapshot: its journal holds the 20 writes
        writer.start()
        _write(writer, 20, "two")  # nobody to keep them in memory for
        assert _backlog(writer) == {**_backlog(writer), "in_memory": False, "records": 0, "bytes": 0}
        replica.start()
        _wait_synced(replica, writer)
        backlog = _backlog(writer)
        assert backlog["in_memory"] is True and backlog["records"] >= 40
        assert writer.log().count("sending a full copy") == 1, "it resumed from the journals on disk"
        assert "read from the journals" in writer.log()
    finally:
        replica.stop()


def test_replica_too_far_behind_takes_a_full_copy(tmp_path, replica_path):
    writer = ServerProcess(tmp_path / "db.pkl", None, "--repl-backlog-bytes", "2000", "-v").start()
    replica = Replica(replica_path, writer)
    try:
        _sync_then_stop(replica, writer)
        _write(writer, 200, "two")  # far more than 2000 bytes of records
        with Connection(writer.write_uri, timeout=10) as conn:
            for i in range(3):
                conn.db[f"big{i}"] = str(i) * 600_000  # a copy of several 1 MiB chunks
        replica.start()
        _wait_synced(replica, writer)
        assert "(replica behind the backlog)" in writer.log()
        assert replica.log().count("loaded a full copy") == 2
        assert "receiving a full copy of 18" in replica.log()
    finally:
        replica.stop()
        writer.stop()


def test_divergence_is_detected_and_repaired_with_a_copy(writer, replica):
    with Connection(writer.write_uri, timeout=5) as conn:
        conn.db.save()
    _write(writer, 20, "shared")
    _wait_synced(replica, writer)
    backup = writer.db.parent.with_name("backup")
    writer.stop(signal.SIGKILL)
    shutil.copytree(writer.db.parent, backup)
    writer.start()
    _write(writer, 20, "lost")  # the replica gets these; then the writer goes back to the backup
    _wait_synced(replica, writer)
    writer.stop(signal.SIGKILL)
    shutil.rmtree(writer.db.parent)
    shutil.copytree(backup, writer.db.parent)
    writer.start()
    _write(writer, 25, "other")  # same history, 45 records, but not the same ones
    _wait_synced(replica, writer)
    root = replica.root()
    assert "lost0" not in root and root["other24"]["i"] == 24
    assert "diverged (chain mismatch)" in writer.log()


def test_link_loss_and_heal(writer, replica):
    _write(writer, 10, "one")
    _wait_synced(replica, writer)
    writer.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: "lost (silent for" in replica.log(), 10)
        assert replica.root()["one9"]["i"] == 9  # it keeps serving its last state
    finally:
        writer.send_signal(signal.SIGCONT)
    _write(writer, 10, "two")
    _wait_synced(replica, writer)
    assert replica.log().count("up, at record") >= 2
    assert writer.log().count("sending a full copy") == 1


def test_garbage_on_the_replication_port_changes_nothing(writer, replica):
    _write(writer, 5)
    _wait_synced(replica, writer)
    context = zmq.Context()
    try:
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(f"tcp://127.0.0.1:{writer.port_base + 5}")
        deep = b"[" * 100_000 + b"]" * 100_000
        bad = (
            [b"HELLO"],
            [b"HELLO", b"\xff"],
            [b"HELLO", b'{"position": 3}'],
            [b"x" * 5000],
            [b"HELLO", deep],
        )
        for frames in bad:
            sock.send_multipart(frames)
        wait_until(lambda: "dropped a bad" in writer.log(), 5)
        sock.send_multipart([b"CREDIT", b'{"credit": 5}'])
        assert sock.poll(3000) and sock.recv_multipart()[0] == b"RESYNC"  # a stranger is told to say HELLO
    finally:
        context.destroy(linger=0)
    _write(writer, 5, "after")
    _wait_synced(replica, writer)


class FakePrimary:
    """A hostile or broken writer: a ROUTER the test drives by hand."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.numbers: dict = {}

    def hello(self, timeout: float = 10.0) -> tuple[bytes, dict]:
        """The next HELLO a replica sends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(200):
                identity, kind, body = self.sock.recv_multipart()[:3]
                if kind == b"HELLO":
                    return identity, json.loads(body)
        raise AssertionError("no HELLO from the replica")

    def send(self, identity: bytes, kind: bytes, body: dict, *frames: bytes) -> None:
        """Send one stream message, numbered in its session unless ``body`` has an ``n``."""
        session = body.get("session")
        body = {"n": self.numbers.get(session, 0), **body}
        self.numbers[session] = body["n"] + 1
        self.sock.send_multipart([identity, kind, json.dumps(body).encode(), *frames])

    def close(self) -> None:
        """Close the socket."""
        self.context.destroy(linger=0)


def test_replica_checks_records_and_copies_before_applying(writer, replica_path):
    fake = FakePrimary()
    replica = Replica(replica_path, writer, primary=f"tcp://127.0.0.1:{fake.port}")
    try:
        replica.start()
        identity, hello = fake.hello()
        session = hello["session"]
        data = encode_copy(Store({"x": 1}))
        meta = {"session": session, "position": Position("hist", 0).to_json(), "size": len(data)}
        fake.send(identity, b"COPY", {**meta, "digest": "0" * 64, "chunks": 1})
        fake.send(identity, b"CHUNK", {"session": session, "index": 0}, data)
        identity, hello = fake.hello()  # the digest did not match: it asks again, for a copy
        assert hello["copy"] is True and hello["position"]["history"] is None
        session = hello["session"]
        digest = hashlib.blake2b(data, digest_size=32).hexdigest()
        fake.send(identity, b"COPY", {**meta, "session": session, "digest": digest, "chunks": 1})
        fake.send(identity, b"CHUNK", {"session": session, "index": 0}, data)
        wait_until(lambda: replica.root() == {"x": 1}, 10)
        record = protocol.encode_request(
            protocol.build_request("set", ("x",), args=(2,), id=1, client="c1", seq=1)
        )
        fake.send(identity, b"RECORDS", {"session": session, "first": 1, "chains": ["00" * 16]}, record)
        identity, hello = fake.hello()  # a bad checksum chain: not applied, asks from its position
        assert hello["position"]["count"] == 0 and replica.root() == {"x": 1}
        session, chain = hello["session"], chain_next(ZERO_CHAIN, record).hex()
        fake.send(identity, b"RECORDS", {"session": session - 1, "first": 1, "chains": [chain]}, record)
        fake.send(identity, b"RECORDS", {"session": session, "first": 1, "chains": [chain]}, record)
        wait_until(lambda: replica.root() == {"x": 2}, 10)  # the stale session's copy was dropped
        fake.send(identity, b"HEARTBEAT", {"session": session, "n": 99, "count": 1})
        identity, hello = fake.hello()  # a gap in the numbers: messages were lost, it starts again
        assert hello["position"]["count"] == 1
        assert "message 1 of the stream was lost (got 99)" in replica.log()
    finally:
        replica.stop()
        fake.close()


def test_stats_on_the_writer_and_on_a_replica(writer, replica):
    _write(writer, 12)
    _wait_synced(replica, writer)
    with Connection(writer.write_uri, timeout=5) as conn:
        for _ in range(5):
            conn.db["k1"]._run()
        mine = conn.db.stats()
    assert set(mine) == {"server", "requests", "latency", "persistence", "replication", "memory"}
    assert mine["server"]["role"] == "writer" and mine["server"]["pid"] == writer.pid
    assert mine["requests"]["by_op"]["set"] == 12 and mine["requests"]["by_op"]["get"] >= 5
    assert 0 < mine["latency"]["write"]["p50_us"] <= mine["latency"]["write"]["p99_us"]
    assert mine["persistence"]["journal"]["records_since_snapshot"] == 12
    assert mine["memory"]["rss_bytes"] > 1_000_000
    (seen,) = mine["replication"]["replicas"]
    assert seen["state"] == "streaming" and seen["name"].endswith("replica.pkl")
    wait_until(lambda: _writer_sees_lag_zero(writer), 5)
    assert mine["replication"]["position"]["count"] == 12
    with Connection(replica.direct_uri, timeout=5) as conn:
        theirs = conn.db.stats()
    assert theirs["server"]["role"] == "replica" and theirs["server"]["pid"] == replica.pid
    assert theirs["replication"]["link"] == "up"
    assert theirs["replication"]["position"] == mine["replication"]["position"]
    assert theirs["replication"]["lag_records"] == 0 and theirs["replication"]["copies_received"] == 1
    assert theirs["requests"]["by_op"]["get"] >= 1  # the sync checks read through it


def _writer_sees_lag_zero(writer: ServerProcess) -> bool:
    with Connection(writer.write_uri, timeout=5) as conn:
        return conn.db.stats()["replication"]["replicas"][0]["lag_records"] == 0


def test_lag_from_acknowledgement_to_visibility(writer, replica, report):
    """Writes at about 500/s; the reader polls the replica and notes when each value appears."""
    with Connection(writer.write_uri, timeout=5) as conn:
        conn.db["t"] = -1
    _wait_synced(replica, writer)
    acked: dict[int, float] = {}
    seen: dict[int, float] = {}
    done = threading.Event()

    def read() -> None:
        with Connection(replica.direct_uri, timeout=5) as reader:
            while not done.is_set():
                value = reader.db["t"]._run()
                seen.setdefault(value, time.monotonic())

    thread = threading.Thread(target=read)
    thread.start()
    try:
        with Connection(writer.write_uri, timeout=5) as conn:
            for i in range(500):
                conn.db["t"] = i
                acked[i] = time.monotonic()
                time.sleep(0.002)
        wait_until(lambda: 499 in seen, SYNC_TIMEOUT)
    finally:
        done.set()
        thread.join(10)
    # A value overwritten before the reader looked is never seen: only those seen count.
    lags = sorted(max(0.0, seen[i] - acked[i]) for i in acked if i in seen)
    p50, p99 = lags[len(lags) // 2], lags[int(len(lags) * 0.99)]
    report(f"replica lag over {len(lags)} writes seen: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert len(lags) > 100
    assert p99 < 1.0, "a write took more than a second to reach the replica"


def test_read_your_writes_through_the_read_queue(writer, replica):
    with Connection(writer.write_uri, writer.read_uri, timeout=5, read_your_writes=True) as conn:
        for i in range(200):
            conn.db["mine"] = i
            assert conn.db["mine"]._run() == i
        assert conn.position is not None and conn.position[1] == 200
        assert conn.call("ping")["pid"] == replica.pid  # the reads did go to the replica
    with Connection(writer.write_uri, timeout=5) as conn:
        # a replica a record behind waits for it rather than send the read to the writer
        assert conn.db.stats()["requests"]["by_op"].get("get", 0) < 20
    with Connection(replica.direct_uri, timeout=5) as conn:
        history, count = conn.db.stats()["replication"]["position"]["history"], 200
        waited = conn.db.stats()["replication"]["reads_waited"]
        ahead = {"v": 1, "op": "get", "path": ["mine"], "id": 1, "after": [history, count + 1000]}
        started = time.monotonic()
        with pytest.raises(errors.ReplicaBehindError, match=f"needs record {count + 1000}"):
            protocol.decode_reply(conn._read.request([json.dumps(ahead).encode()], 5, 1))
        assert time.monotonic() - started < 2.0  # a brief wait, then the answer
        assert conn.db.stats()["replication"]["reads_waited"] == waited + 1
        ahead["after"] = ["nope", 1]
        with pytest.raises(errors.ReplicaBehindError, match="history nope"):
            protocol.decode_reply(conn._read.request([json.dumps(ahead).encode()], 5, 1))
        bad = json.dumps({**ahead, "after": [1, "x"]}).encode()
        with pytest.raises(errors.ProtocolError, match="'after' must be"):
            protocol.decode_reply(conn._read.request([bad], 5, 1))


def test_read_your_writes_falls_back_to_the_writer(writer, replica_path):
    fake = FakePrimary()  # feeds the replica nothing: it is behind forever
    replica = Replica(replica_path, writer, primary=f"tcp://127.0.0.1:{fake.port}").start()
    try:
        with Connection(writer.write_uri, writer.read_uri, timeout=5) as plain:
            wait_until(lambda: plain.call("ping")["pid"] == replica.pid, 5)
            plain.db["x"] = 1
            with pytest.raises(errors.ServerKeyError):
                plain.db["x"]._run()  # the replica does not have it
        with Connection(writer.write_uri, writer.read_uri, timeout=5, read_your_writes=True) as conn:
            conn.db["x"] = 2
            assert conn.db["x"]._run() == 2  # refused by the replica, answered by the writer
        assert asyncio.run(_aio_reads_its_write(writer)) == 3
    finally:
        replica.stop()
        fake.close()


async def _aio_reads_its_write(writer: ServerProcess) -> int:
    """The asyncio client with read_your_writes, against a replica that is behind forever."""
    async with aio.connect(writer.write_uri, writer.read_uri, timeout=5) as plain:
        await plain.db["y"]._set(1)
        with pytest.raises(errors.ServerKeyError):
            await plain.db["y"]  # the replica does not have it
    async with aio.connect(writer.write_uri, writer.read_uri, timeout=5, read_your_writes=True) as conn:
        await conn.db["y"]._set(3)
        return await conn.db["y"]  # refused by the replica, answered by the writer


def _scrape(port: int) -> dict:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_prometheus_endpoint_on_the_writer_and_a_replica(tmp_path, replica_path):
    pytest.importorskip("prometheus_client")
    ports = free_port_base(2)
    writer = ServerProcess(tmp_path / "db.pkl", None, "--metrics-port", str(ports)).start()
    replica = Replica(replica_path, writer, "--metrics-port", str(ports + 1))
    try:
        replica.start()
        _write(writer, 7)
        _wait_synced(replica, writer)
        wait_until(lambda: _scrape(ports).get(("pyzdb_requests_total", (("op", "set"),))) == 7, 5)
        mine = _scrape(ports)
        assert mine[("pyzdb_info", (("role", "writer"), ("version", pyzdb.__version__)))] == 1
        assert mine[("pyzdb_replication_position_records", ())] == 7
        assert mine[("pyzdb_memory_rss_bytes", ())] > 1_000_000
        assert any(name == "pyzdb_replication_replica_lag_records" for name, _ in mine)
        wait_until(lambda: _scrape(ports + 1).get(("pyzdb_replication_position_records", ())) == 7, 5)
        theirs = _scrape(ports + 1)
        assert theirs[("pyzdb_replication_link_up", ())] == 1
        assert theirs[("pyzdb_replication_records_applied_total", ())] == 7
    finally:
        replica.stop()
        writer.stop()


def test_metrics_port_without_prometheus_client_is_a_clear_error(tmp_path):
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        proc = ServerProcess(tmp_path / "db.pkl", None, "--metrics-port", str(free_port_base(1)))
        proc.start(wait=False)
        assert proc.process.wait(STOP_TIMEOUT) == 1
        assert "pip install 'pyzdb[prometheus]'" in proc.log()
    else:
        pytest.skip("prometheus_client is installed here")


def test_kept_journals_carry_the_backlog_across_a_clean_writer_restart(tmp_path, replica_path):
    writer = ServerProcess(tmp_path / "db.pkl", None, "--repl-backlog-seconds", "600", "-v").start()
    replica = Replica(replica_path, writer)
    try:
        _sync_then_stop(replica, writer)
        _write(writer, 20, "two")
        with Connection(writer.write_uri, timeout=5) as conn:
            conn.db.save()  # a snapshot covers the journal the replica still needs
        _write(writer, 5, "three")
        assert writer.stop() == 0  # and the final snapshot another one
        assert len(list(tmp_path.glob("db.pkl.journal.*.start"))) >= 3
        writer.start()
        replica.start()
        _wait_synced(replica, writer)
        assert writer.log().count("sending a full copy") == 1, "caught up from the kept journals"
        assert "up, at record 10" in replica.log()
    finally:
        replica.stop()
        writer.stop()


def test_slowlog_names_the_op_never_the_data(tmp_path):
    writer = ServerProcess(tmp_path / "db.pkl", None, "--slowlog-ms", "0").start()
    try:
        with Connection(writer.write_uri, timeout=5) as conn:
            conn.db["secret-key"] = ["secret-value"]
            conn.db["secret-key"].append("secret-too")
            assert conn.db.stats()["requests"]["slow"] >= 2
        wait_until(lambda: "slow request: call append() at path depth 1" in writer.log(), 5)
        assert "slow request: set at path depth 1 took" in writer.log()
        assert "secret" not in writer.log()
    finally:
        writer.stop()


def _collection_reads(uri: str) -> tuple:
    with Connection(uri, timeout=5) as conn:
        stars = conn.db.timeseries("stars")
        return conn.call("ts", (), "names"), stars.select({"order": {">=": 1}}, fields=[]), stars.get("a")


def test_full_copy_carries_time_series_collections(writer, replica_path):
    with Connection(writer.write_uri, timeout=5) as conn:
        conn.db["plain"] = 1
        stars = conn.db.timeseries("stars", schema={"order": int}, index=["order"])
        for i, pk in enumerate("abc"):
            stars.insert_ts(pk, TimeSeries([0, 1, 2], [i, i + 1, i + 2]))
            stars.upsert_meta(pk, {"order": i})
        conn.db.timeseries("empty")
    replica = Replica(replica_path, writer).start()
    try:
        _wait_synced(replica, writer)
        assert repr(_collection_reads(replica.direct_uri)) == repr(_collection_reads(writer.write_uri))
        with Connection(writer.write_uri, timeout=5) as conn:
            conn.db.timeseries("stars").add("a", 3, 9.0)  # and the records after the copy apply to it
            conn.db.timeseries("stars").upsert_meta("c", {"order": 5})
        wait_until(
            lambda: repr(_collection_reads(replica.direct_uri)) == repr(_collection_reads(writer.write_uri)),
            10,
        )
        assert writer.log().count("sending a full copy") == 1
    finally:
        replica.stop()
    replica.start()  # the copy was saved as the replica's own snapshot, collections and all
    try:
        assert repr(_collection_reads(replica.direct_uri)) == repr(_collection_reads(writer.write_uri))
    finally:
        replica.stop()


def test_a_replica_from_the_start_follows_collections(writer, replica):
    with Connection(writer.write_uri, timeout=5) as conn:
        conn.db["plain"] = 1
    _wait_synced(replica, writer)  # its copy has no collection in it
    with Connection(writer.write_uri, timeout=5) as conn:
        conn.db.timeseries("temps")
    with Connection(replica.direct_uri, timeout=5) as conn:
        wait_until(lambda: "temps" in conn.call("ts", (), "names"), 10)


def test_link_stalls_and_breaks_through_a_relay(writer, replica_path):
    relay = Relay(writer.port_base + 5)
    replica = Replica(replica_path, writer, primary=f"tcp://127.0.0.1:{relay.port}")
    try:
        replica.start()
        _write(writer, 10, "one")
        _wait_synced(replica, writer)
        relay.stalled.set()
        _write(writer, 10, "stalled")  # the writer goes on; the replica serves what it has
        wait_until(lambda: "lost (silent for" in replica.log(), 10)
        assert "stalled9" not in replica.root()
        relay.stalled.clear()
        _wait_synced(replica, writer)
        relay.cut()
        _write(writer, 10, "cut")
        _wait_synced(replica, writer)
        assert writer.log().count("sending a full copy") == 1, "every heal resumed the stream"
    finally:
        replica.stop()
        relay.close()


def test_exec_starts_a_new_history_and_replicas_take_a_full_copy(tmp_path, replica_path):
    writer = ServerProcess(tmp_path / "writer" / "db.pkl", None, "-v", "--allow-exec")
    writer.db.parent.mkdir()
    writer.start()
    replica = Replica(replica_path, writer)
    try:
        _write(writer, 5, "before")
        replica.start()
        _wait_synced(replica, writer)
        with Connection(writer.write_uri, timeout=5) as conn:
            old = conn.db.stats()["replication"]["position"]["history"]
            conn.call("exec", (), args=["db['by_exec'] = [1, 2]"])  # no journal record for this
            assert conn.db.stats()["replication"]["position"] == {**Position(None).to_json(), "history": ANY}
            conn.db["after"] = 1
            new = conn.db.stats()["replication"]["position"]["history"]
        assert new != old
        _wait_synced(replica, writer)
        assert replica.root()["by_exec"] == [1, 2]
        assert writer.log().count("sending a full copy") == 2
        writer.stop()
        writer.start()  # the new history survives the restart: the replica resumes, no third copy
        _write(writer, 3, "restarted")
        _wait_synced(replica, writer)
        assert writer.log().count("sending a full copy") == 2
    finally:
        replica.stop()
        writer.stop()
