"""The write path end to end: the server-owned write ROUTER, the write window, the lock on the new loop.

Requests are sent from raw pyzmq DEALER sockets, as a client with many requests
in flight would send them, to real server processes on free ports.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Iterator

import pytest
import zmq

from helpers import ServerProcess
from pyzdb import errors, protocol
from pyzdb.client import Connection
from pyzdb.server.sessions import KEEP_REPLY_BYTES, WINDOW

REPLY_WAIT = 10.0


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    """A ZeroMQ context for this test's raw sockets, destroyed with them after the test."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def dealer(context: zmq.Context, uri: str) -> zmq.Socket:
    """A DEALER socket connected to ``uri``."""
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(uri)
    return sock


def write_message(client: str, seq: int, op: str = "call", **fields) -> bytes:
    """A write request of ``client`` with sequence number ``seq`` (also its id)."""
    return json.dumps({"v": 1, "op": op, "id": seq, "client": client, "seq": seq, **fields}).encode()


def append(client: str, seq: int, value) -> bytes:
    """``db['l'].append(value)`` as ``client``'s write number ``seq``."""
    return write_message(client, seq, path=["l"], method="append", args=[value])


def send_all(sock: zmq.Socket, messages: list[bytes]) -> None:
    """Send every message without waiting for replies (REQ-style envelope)."""
    for message in messages:
        sock.send_multipart([b"", message])


def receive(sock: zmq.Socket, count: int, wait: float = REPLY_WAIT) -> list[bytes]:
    """Up to ``count`` replies, waiting at most ``wait`` seconds in all."""
    replies: list[bytes] = []
    deadline = time.monotonic() + wait
    while len(replies) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(left * 1000):
            break
        frames = sock.recv_multipart()
        assert frames[0] == b"", frames
        replies.append(frames[-1])
    return replies


def reply_ids(replies: list[bytes]) -> list:
    """The ``id`` of each reply."""
    return [json.loads(r)["id"] for r in replies]


def result_of(reply: bytes):
    """The result of a reply, or raise its error."""
    return protocol.decode_reply(reply)[1]


def current(server: ServerProcess, *path):
    """The value at ``path``, read by a fresh client."""
    with Connection(server.write_uri, timeout=10) as conn:
        ref = conn.db
        for step in path:
            ref = ref[step]
        return ref._run()


@pytest.fixture
def listed(server: ServerProcess) -> ServerProcess:
    """``server`` with an empty list at ``db['l']``."""
    with Connection(server.write_uri, timeout=10) as conn:
        conn.db["l"] = []
    return server


# --- arrival order, bursts, the window ----------------------------------------------


def test_a_pipelined_burst_is_applied_and_answered_whole(listed, context) -> None:
    """600 appends sent back to back from one DEALER: 600 replies, 600 items (the old loop lost 2)."""
    sock = dealer(context, listed.write_uri)
    messages = [
        json.dumps({"v": 1, "op": "call", "path": ["l"], "method": "append", "args": [i], "id": i})
        for i in range(600)
    ]
    send_all(sock, [m.encode() for m in messages])
    replies = receive(sock, 600)
    assert sorted(reply_ids(replies)) == list(range(600))
    assert current(listed, "l") == list(range(600))


def test_writes_in_flight_are_applied_once_in_order_and_resends_answered_across_sigkill(
    tmp_path, context
) -> None:
    """40 writes in flight from one client; resending them, before or after a SIGKILL, applies none again."""
    server = ServerProcess(tmp_path / "db.pkl").start()
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            conn.db["l"] = []
        client = os.urandom(8).hex()
        writes = [append(client, seq, seq) for seq in range(1, 41)]
        sock = dealer(context, server.write_uri)
        send_all(sock, writes)
        first = receive(sock, 40)
        assert reply_ids(first) == list(range(1, 41))  # answered in the order sent
        send_all(sock, writes[::-1])
        assert receive(sock, 40) == first[::-1]  # each resend gets its stored reply, byte for byte
        assert current(server, "l") == list(range(1, 41))
        sock.close()

        server.kill()
        server.start()
        sock = dealer(context, server.write_uri)
        send_all(sock, writes[19:])
        assert receive(sock, 21) == first[19:]
        send_all(sock, [append(client, 41, 41)])
        assert result_of(receive(sock, 1)[0]) is None
        assert current(server, "l") == list(range(1, 42))
    finally:
        server.stop()


def test_a_write_older_than_the_window_is_refused_and_not_run(listed, context) -> None:
    """Beyond the window (or a seq that never arrived before a later one) is not run: ProtocolError."""
    client = os.urandom(8).hex()
    count = WINDOW + 6
    sock = dealer(context, listed.write_uri)
    send_all(sock, [append(client, seq, seq) for seq in range(2, count + 2)])  # seq 1 never sent
    assert len(receive(sock, count)) == count
    for seq in (1, 2):  # 1 is a gap behind the newest, 2 fell out of the window
        send_all(sock, [append(client, seq, "again")])
        with pytest.raises(errors.ProtocolError, match=f"request {seq} is older"):
            result_of(receive(sock, 1)[0])
    send_all(sock, [append(client, count + 1, "again")])  # the newest: remembered
    assert result_of(receive(sock, 1)[0]) is None
    assert current(listed, "l") == list(range(2, count + 2))


def test_a_resent_write_whose_large_reply_was_not_kept_says_it_was_applied(listed, context) -> None:
    """A pop() answered with a large value is not popped twice: its resend gets AlreadyAppliedError."""
    big = "x" * (KEEP_REPLY_BYTES * 2)
    with Connection(listed.write_uri, timeout=10) as conn:
        conn.db["l"] = [big, big, big]
    client = os.urandom(8).hex()
    pop = write_message(client, 1, path=["l"], method="pop", args=[])
    sock = dealer(context, listed.write_uri)
    send_all(sock, [pop])
    assert result_of(receive(sock, 1)[0]) == big
    send_all(sock, [pop])
    with pytest.raises(errors.AlreadyAppliedError, match="write 1 of this client was already applied"):
        result_of(receive(sock, 1)[0])
    assert len(current(listed, "l")) == 2


def test_large_replies_do_not_grow_the_snapshot(server, context) -> None:
    """100 new clients each answered with a 256 KB value: the dedup table keeps sizes, not bytes."""
    value = "v" * 256 * 1024
    with Connection(server.write_uri, timeout=30) as conn:
        conn.db["big"] = value
        conn.db.save()
        before = server.db.stat().st_size
        sock = dealer(context, server.write_uri)
        for _ in range(100):
            send_all(
                sock, [write_message(os.urandom(8).hex(), 1, path=[], method="setdefault", args=["big"])]
            )
        replies = receive(sock, 100, wait=30)
        assert len(replies) == 100 and all(result_of(r) == value for r in replies)
        conn.db.save()
    assert server.db.stat().st_size - before < 100 * 1024  # each client costs bytes, not a 256 KB reply


# --- the lock on the new loop ---------------------------------------------------------


def test_a_resent_lock_gets_its_grant_at_once(server, context) -> None:
    """The lock() reply is lost; the resend is answered from the table while the lock is held."""
    client = os.urandom(8).hex()
    lock = write_message(client, 1, op="lock")
    sock = dealer(context, server.write_uri)
    send_all(sock, [lock])
    grant = receive(sock, 1)[0]
    resent = dealer(context, server.write_uri)  # a fresh socket, as lazy pirate does
    started = time.monotonic()
    send_all(resent, [lock])
    assert receive(resent, 1, wait=2.0) == [grant]
    assert time.monotonic() - started < 2.0
    token = result_of(grant)["token"]
    holder = dealer(context, result_of(grant)["lock_uri"])
    send_all(holder, [write_message(client, 2, op="unlock", token=token)])
    assert result_of(receive(holder, 1)[0]) is None


def test_other_clients_are_held_in_order_while_the_holder_is_served(listed, context) -> None:
    """Under a lock: others' writes wait (not refused), the holder's token works on both ports."""
    other = dealer(context, listed.write_uri)
    other_client = os.urandom(8).hex()
    with Connection(listed.write_uri, timeout=10) as conn:
        conn.lock()
        send_all(other, [append(other_client, seq, f"other{seq}") for seq in (1, 2, 3)])
        assert receive(other, 1, wait=0.5) == []  # held, not answered, not refused
        conn.db["l"].append("holder")  # on the lock socket
        token = conn._token
        on_write_port = dealer(context, listed.write_uri)
        send_all(
            on_write_port,
            [json.dumps({"v": 1, "op": "get", "path": ["l"], "id": 7, "token": token}).encode()],
        )
        assert result_of(receive(on_write_port, 1)[0]) == [
            "holder"
        ]  # the token is served on the write port too
        conn.unlock()
    assert reply_ids(receive(other, 3)) == [1, 2, 3]
    assert current(listed, "l") == ["holder", "other1", "other2", "other3"]


def test_held_requests_are_served_when_the_lease_runs_out(tmp_path, context) -> None:
    """A holder that goes silent: its lease expires and the held requests are answered."""
    server = ServerProcess(tmp_path / "db.pkl", None, "--lock-timeout", "0.5").start()
    try:
        sock = dealer(context, server.write_uri)
        send_all(sock, [write_message(os.urandom(8).hex(), 1, op="lock")])
        assert "token" in result_of(receive(sock, 1)[0])
        other = dealer(context, server.write_uri)
        send_all(other, [json.dumps({"v": 1, "op": "ping", "id": 9}).encode()])
        replies = receive(other, 1, wait=5.0)
        assert reply_ids(replies) == [9]
        assert "released: silent for 0.5 s" in server.log()
    finally:
        server.stop()


# --- garbage on every port ------------------------------------------------------------


def garbage(seed: int) -> bytes:
    """A few KB of reproducible random bytes."""
    return random.Random(seed).randbytes(random.Random(seed).randrange(100, 5000))


def spray_tcp(port: int, seed: int) -> None:
    """Open a raw TCP connection to ``port``, send random bytes, close."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
        try:
            raw.sendall(garbage(seed))
            time.sleep(0.01)
        except OSError:
            pass  # the peer may drop us mid-way: that is its right


def spray_zmq(context: zmq.Context, port: int, seed: int) -> None:
    """Send odd ZeroMQ messages (no delimiter, empty, many frames, random) from a DEALER to ``port``."""
    sock = dealer(context, f"tcp://127.0.0.1:{port}")
    sock.sndtimeo = 1000
    noise = garbage(seed)[:512]
    for frames in (
        [noise],
        [b""],
        [b"", b""],
        [b"", noise, noise],
        [noise] * 20,
        [b"", b'{"v":1,"op":'],
        [b"\x00"],
    ):
        try:
            sock.send_multipart(frames)
        except zmq.Again:
            break
    time.sleep(0.05)
    sock.close()


def assert_writer_and_replica_serve(server: ServerProcess, replica: ServerProcess, value: list) -> None:
    """A read through the read queue and a write to the writer are answered; both processes live."""
    with Connection(server.write_uri, server.read_uri, timeout=5) as conn:
        assert conn.call("ping")["read_only"] is True  # answered by the replica, through the read queue
    with Connection(server.write_uri, timeout=5) as conn:
        assert conn.db["canary"]._run() == value
        conn.db["canary"].append(len(value))
    assert server.process.poll() is None and replica.process.poll() is None


@pytest.mark.parametrize("port_name", ["lock", "write", "read", "read_servers"])
def test_garbage_on_any_port_never_stalls_the_server(tmp_path, context, port_name) -> None:
    """Raw random bytes, then odd ZeroMQ messages, on one port: the writer and a replica keep answering."""
    server = ServerProcess(tmp_path / "db.pkl").start()
    replica = None
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            conn.db["canary"] = [0]
        replica = ServerProcess(server.db, server.port_base, read_only=True).start()
        port = server.port_base + {"lock": 0, "write": 1, "read": 3, "read_servers": 4}[port_name]
        for seed in range(2):  # seed 1 stalled the old lock socket for good
            spray_tcp(port, seed)
        time.sleep(0.5)  # let the server take up whatever libzmq made of the bytes
        assert_writer_and_replica_serve(server, replica, [0])
        for seed in range(5):
            spray_zmq(context, port, seed)
        assert_writer_and_replica_serve(server, replica, [0, 1])
    finally:
        if replica is not None:
            replica.stop()
        server.stop()


# --- a client that never reads its replies ----------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        line = next(ln for ln in status if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_replies_queued_for_a_peer_that_never_reads_are_bounded_in_bytes(server, context) -> None:
    """400 gets of a 0.5 MB value, never read: the server holds at most its per-peer limit, not 200 MB."""
    value = "v" * (512 * 1024)
    with Connection(server.write_uri, timeout=30) as conn:
        conn.db["big"] = value
        conn.db["small"] = 1
        before = rss_mb(server.pid)
        greedy = dealer(context, server.write_uri)
        greedy.rcvhwm = 1  # take as little as possible off the server's hands
        get = [json.dumps({"v": 1, "op": "get", "path": ["big"], "id": i}).encode() for i in range(400)]
        send_all(greedy, get)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and conn.call("ping") and "not queued" not in server.log():
            time.sleep(0.1)  # the server keeps answering others meanwhile
        time.sleep(0.5)
        grown = rss_mb(server.pid) - before
        assert conn.db["small"]._run() == 1
    assert grown < 120, f"the server grew by {grown:.0f} MiB for one client that reads nothing"
    assert "was not queued" in server.log()
    replies = receive(greedy, 400, wait=20)
    assert len(replies) == 400  # every request was answered: the value while it fit, then a refusal
    refused = [r for r in replies if b"are not read yet" in r]
    assert refused and len(refused) < 400
    with pytest.raises(errors.ProtocolError, match="the request itself was carried out"):
        result_of(refused[0])
    assert json.loads(refused[0])["id"] in range(400)


# --- a failed fsync under --fsync always ------------------------------------------------

FAULTY_FSYNC = '''
import errno, os
_when = os.environ.get("PYZDB_TEST_FSYNC_FAILS_WHEN")
if _when:
    _fsync = os.fsync

    def fsync(fd):
        """Fail with EIO for a journal while the trigger file exists: a disk going bad."""
        if os.path.exists(_when) and ".journal." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EIO, "injected fsync failure")
        return _fsync(fd)

    os.fsync = fsync
'''


def test_a_failed_fsync_is_never_acknowledged(tmp_path, monkeypatch) -> None:
    """--fsync always: a failed journal fsync gets no reply, and the server stops (exit 1)."""
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "sitecustomize.py").write_text(FAULTY_FSYNC)
    trigger = tmp_path / "disk-is-bad"
    monkeypatch.setenv("PYTHONPATH", str(faults))
    monkeypatch.setenv("PYZDB_TEST_FSYNC_FAILS_WHEN", str(trigger))
    server = ServerProcess(tmp_path / "db.pkl", None, "--fsync", "always").start()
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            conn.db["acked"] = [1, 2]
            trigger.touch()
            conn.timeout = 2.0
            with pytest.raises(errors.TimeoutError, match="may or may not have been applied"):
                conn.db["unacked"] = 3
        assert server.process.wait(15) == 1
        assert "journal fsync failed" in server.log() and "not acknowledged" in server.log()
    finally:
        server.stop()
    trigger.unlink()
    server.start()
    try:
        assert current(server, "acked") == [1, 2]
    finally:
        server.stop()
