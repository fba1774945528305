"""Fuzzing every port a server binds with generated and mutated messages (SPEC §6, issue 16).

Each case starts a read-write server and a read-only server behind its read
queue, stores a canary subtree, and sends ``PYZDB_FUZZ`` messages (2,000 by
default; ``PYZDB_FUZZ=20000`` for a soak) to one port, in batches: random
bytes, valid requests mutated byte by byte or cut short, tags spelled with
escapes, odd envelopes and hostile values (deep nesting, huge integers,
colliding keys, amplifying formats).  After every batch the servers must be
alive, answer a valid read within 2 s on the write queue (and on the read
queue), and hold the canary unchanged; on the ports that answer, every reply
must be a well-formed pyzdb reply.

Generated writes only ever name paths under ``fz`` (reset after each batch)
and never ``lock``, ``undo``, ``redo`` or ``save``, so a mutation that still
is a valid request cannot legitimately change the canary or hold the server.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from helpers import ServerProcess
from pyzdb.client import Connection
from pyzdb.keys import ClientKeys, make_client_keys, make_server_keys

MESSAGES = int(os.environ.get("PYZDB_FUZZ", "2000"))
"""Messages per port and run."""
BATCH = 100
CHECK_TIMEOUT = 2.0
DRAIN_TIMEOUT = 10.0
"""Longest wait for the replies of one batch (the slowest valid messages build millions of items)."""
SEED = int(os.environ.get("PYZDB_FUZZ_SEED", str(random.randrange(1 << 32))))

CANARY = {
    "n": 1,
    "l": [1, [2, 3]],
    "t": (1, "a"),
    "b": b"\x00\xff",
    "d": {5: None, (1, 2): "tuple", "$key": "dollar"},
    "f": 2.5,
    "big": 2**100,
}
FZ = {"a": [1, 2, 3], "s": "%s-%d", "n": 5, "d": {"k": 1}, "t": "text"}
"""The subtree the generated requests work on; written again after each batch."""

PORTS = {"write": 1, "read-queue": 3, "read-backend": 4, "lock": 0}
"""Offsets from the port base of every address a read-write server binds (base + 2 is reserved, unbound)."""
ANSWERING = {"write": True, "read-queue": False, "lock": True}
"""Ports whose peer answers, and whether it answers a message without the empty delimiter too
(the loop's ROUTERs do; the read-only servers' REP drops it).  Their replies are counted and checked."""


# --- generators --------------------------------------------------------------------

READ_OPS = ["get", "len", "iter", "contains", "bool", "ping"]
WRITE_OPS = ["set", "delete", "iop", "call", "unlock", "exec"]
METHODS = ["append", "extend", "insert", "pop", "remove", "sort", "reverse", "clear", "update", "setdefault"]
METHODS += ["keys", "values", "items", "get", "index", "count", "copy", "popitem", "__class__", "nope"]
OPERATORS = ["add", "sub", "mul", "truediv", "floordiv", "mod", "or", "pow", "matmul"]
TOKENS = [
    b'{"$int": "0x1"}',
    b'{"$int": "-0x' + b"f" * 20000 + b'"}',
    b'{"$slice": [1, 2, 3]}',
    b'{"\\u0024slice": [null, null, -1]}',
    b'{"$file": {"name": "x", "frame": 1}}',
    b'{"$\\u0066ile": {"path": "/etc/passwd"}}',
    b'{"$dict": [[1, 2], [1.0, 3]]}',
    b'{"$tuple": [{"$tuple": []}]}',
    b'{"$float": "nan"}',
    b'{"$bytes": "!!"}',
    b'{"$nope": 1}',
    b"NaN",
    b"-Infinity",
    b"1e999",
    b'"\\ud800"',
    b"[" * 200,
    b"9" * 5000,
    b"\xff\xfe",
    b"",
]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON-ready value, tags included, mostly small."""
    kind = rng.randrange(12 if depth < 4 else 6)
    scalars = [None, True, rng.randrange(-1000, 1000), rng.random() * 100, "s", "é\u20ac", "%*d", "$x"]
    if kind < 6:
        return rng.choice(scalars)
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {
            rng.choice(["a", "b", "$c", ""]): random_value(rng, depth + 1) for _ in range(rng.randrange(3))
        }
    if kind == 8:
        return {"$tuple": [random_value(rng, depth + 1) for _ in range(rng.randrange(3))]}
    if kind == 9:
        return {"$dict": [[rng.choice([1, 2.5, None, "k", {"$tuple": [1]}]), random_value(rng, depth + 1)]]}
    if kind == 10:
        return {"$int": hex(rng.randrange(-(2**80), 2**80))}
    return rng.choice([{"$bytes": "AAH/"}, {"$float": "inf"}, {"$float": "nan"}])


def fz_path(rng: random.Random) -> list:
    """A path under ``fz``: never the root, never the canary."""
    return ["fz", *rng.sample(["a", "s", "n", "d", "t", 0, -1, {"$slice": [0, 2, None]}], rng.randrange(2))]


def valid_request(rng: random.Random) -> dict:
    """A well-formed request; as a write it only touches ``fz``."""
    op = rng.choice(READ_OPS + WRITE_OPS)
    message: dict[str, Any] = {"v": 1, "op": op, "id": rng.randrange(1 << 30), "path": fz_path(rng)}
    if op in ("set", "iop", "contains", "exec"):
        message["args"] = [random_value(rng)]
    if op == "iop":
        message["method"] = rng.choice(OPERATORS)
    if op == "call":
        message["method"] = rng.choice(METHODS)
        message["args"] = [random_value(rng) for _ in range(rng.randrange(3))]
    if rng.random() < 0.3:
        message.update(client=f"fuzz{rng.randrange(50)}", seq=rng.randrange(1 << 20))
    return message


def mutated(rng: random.Random) -> bytes:
    """A valid request with one to three byte-level mutations, or cut short."""
    raw = bytearray(json.dumps(valid_request(rng)).encode())
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(raw) + 1)
        choice = rng.randrange(5)
        if choice == 0 and at < len(raw):
            raw[at] = rng.randrange(256)
        elif choice == 1:
            raw[at:at] = bytes([rng.choice(b'{}[]",:\\$0 \x00')])
        elif choice == 2:
            del raw[at : at + rng.randint(1, 4)]
        elif choice == 3:
            del raw[at:]
        else:
            raw[at:at] = rng.choice(TOKENS)
    return bytes(raw)


def escaped(rng: random.Random) -> bytes:
    """A write whose tags, or envelope names, are spelled with JSON escapes."""
    tag = rng.choice([{"$slice": [1, 2, 3]}, {"$file": {"name": "x", "frame": 1}}, {"$int": "0x5"}])
    raw = json.dumps({"v": 1, "op": rng.choice(["set", "contains"]), "path": ["fz", "e"], "args": [tag]})
    if rng.random() < 0.5:
        return raw.replace('"$', '"\\u0024').encode()
    return raw.replace('"$s', '"$\\u0073').replace('"$f', '"$\\u0066').replace('"op"', '"\\u006fp"').encode()


ODD_VALUES = [
    None,
    True,
    1.0,
    2,
    -1,
    "1",
    [],
    {},
    [1],
    {"$int": "0x1"},
    {"$dict": []},
    {"$tuple": [1]},
    2**64,
]
NOT_REQUESTS = [[{"v": 1, "op": "get"}], "get", 1, None, {"$dict": [["v", 1], ["op", "get"]]}]


def odd_envelope(rng: random.Random) -> bytes:
    """A request whose members have the wrong type, a tag, or an odd value; or no request at all."""
    if rng.random() < 0.2:
        return json.dumps(rng.choice(NOT_REQUESTS)).encode()
    message = valid_request(rng)
    member = rng.choice(["v", "op", "id", "path", "args", "kwargs", "method", "client", "seq", "token"])
    message[member] = rng.choice(ODD_VALUES)
    return json.dumps(message).encode()


def hostile(rng: random.Random) -> bytes:
    """Requests that once corrupted, amplified or stalled the server (issue 16), and their cousins."""
    depth = rng.choice([99, 100, 101, 150, 5000])
    cases = [
        {
            "op": "set",
            "path": ["fz", "deep"],
            "args": [json.loads("[" * min(depth, 900) + "]" * min(depth, 900))],
        },
        {"op": "set", "path": ["fz", {"$tuple": [1]}], "args": [1]},
        {"op": "iop", "path": ["fz", "s"], "method": "mod", "args": [{"$tuple": [20_000_000, 1]}]},
        {"op": "iop", "path": ["fz", "n"], "method": "mul", "args": ["ab" * rng.randrange(1, 5)]},
        {"op": "iop", "path": ["fz", "n"], "method": "mul", "args": [{"$int": hex(1 << 70_000)}]},
        {
            "op": "set",
            "path": ["fz", "h"],
            "args": [{"$dict": [[{"$int": hex(k * (2**61 - 1))}, 0] for k in range(1, 60)]}],
        },
        {"op": "get", "path": ["fz", {"$tuple": [{"$tuple": [1]}] * 3}]},
    ]
    message = {"v": 1, "id": 1, **rng.choice(cases)}
    if rng.random() < 0.3:
        nested = '{"$tuple": [' * depth + "1" + "]}" * depth
        return b'{"v": 1, "op": "set", "path": ["fz", %s], "args": [1]}' % nested.encode()
    return json.dumps(message).encode()


def random_bytes(rng: random.Random) -> bytes:
    """Bytes with no structure at all."""
    return rng.randbytes(rng.randrange(0, 300))


GENERATORS: list[Callable[[random.Random], bytes]] = [
    random_bytes,
    mutated,
    mutated,
    mutated,
    escaped,
    odd_envelope,
    hostile,
    lambda rng: json.dumps(valid_request(rng)).encode(),
]


def message_frames(rng: random.Random) -> list[bytes]:
    """One message: a body from a generator, sometimes with extra or empty frames around it."""
    body = rng.choice(GENERATORS)(rng)
    shape = rng.randrange(10)
    if shape == 0:
        return [body, rng.randbytes(rng.randrange(20))]
    if shape == 1:
        return [body, b"", body]
    return [body]


# --- servers and checks ------------------------------------------------------------


@pytest.fixture(params=["plain", "curve"])
def servers(request, tmp_path) -> Iterator[tuple[ServerProcess, ServerProcess, dict]]:
    """A read-write server holding the canary, a read-only server behind its read queue, and keys.

    Under ``curve`` both run with ``--curve`` and the fuzzer connects with allowed
    keys (a read-write client key, a replica key on the read queue's server side):
    the hostile messages are then what an authenticated peer can send.
    """
    extra, ro_extra, conn_keys, socket_keys = [], [], {}, {}
    if request.param == "curve":
        keydir = tmp_path / "keys"
        make_server_keys(keydir)
        for name, role in (("fuzzer", "rw"), ("replica", "replica")):
            make_client_keys(keydir, name, role)
        secrets = keydir / "private"
        conn_keys = {
            "server_key": str(keydir / "server.key"),
            "client_key": str(secrets / "fuzzer.key_secret"),
        }
        client = ClientKeys.load(keydir / "server.key", secrets / "fuzzer.key_secret")
        socket_keys = dict.fromkeys(PORTS, client)
        socket_keys["read-backend"] = ClientKeys.load(keydir / "server.key", secrets / "replica.key_secret")
        extra = ["--curve", str(keydir)]
        ro_extra = [*extra, "--client-key", str(secrets / "replica.key_secret")]
    writer = ServerProcess(tmp_path / "db.pkl", None, "--lock-timeout", "2", *extra, keys=conn_keys).start()
    reader = None
    try:
        with Connection(writer.write_uri, timeout=10, **conn_keys) as conn:
            conn.db["canary"] = CANARY
            conn.db["fz"] = FZ
            conn.db.save()
        reader = ServerProcess(writer.db, writer.port_base, *ro_extra, read_only=True).start()
        yield writer, reader, socket_keys
    finally:
        for proc in (reader, writer):
            if proc is not None:
                stop(proc)


def stop(proc: ServerProcess) -> None:
    """Stop ``proc`` by its PID; one that does not exit in time has been killed by ``stop``."""
    try:
        proc.stop()
    except subprocess.TimeoutExpired:
        pass


def check(writer: ServerProcess, reader: ServerProcess) -> None:
    """Both servers alive; valid reads answered within 2 s on each queue, the canary unchanged."""
    assert not writer.exited(), writer.log()[-3000:]
    assert not reader.exited(), reader.log()[-3000:]
    with Connection(writer.write_uri, timeout=CHECK_TIMEOUT, **writer.keys) as conn:
        assert conn.db._run()["canary"] == CANARY, "the whole store reads back, the canary unchanged"
        conn.db["fz"] = FZ
    with Connection(writer.write_uri, writer.read_uri, timeout=CHECK_TIMEOUT, **writer.keys) as conn:
        assert conn.db["canary"]._run() == CANARY


def assert_reply(frames: list[bytes]) -> None:
    """``frames`` end with a well-formed pyzdb reply."""
    reply = json.loads(frames[-1])
    assert reply["v"] == 1 and type(reply["ok"]) is bool, reply
    assert reply["ok"] or set(reply["error"]) == {"type", "message"}, reply


def send_batch(sock: zmq.Socket, rng: random.Random, count: int, port: str) -> int:
    """Send ``count`` messages to ``port``; return how many its peer must answer.

    Most carry the empty delimiter that a REQ socket would add; the last one of
    a batch never does: raw garbage is what the peer is left with.
    """
    answerable = 0
    for index in range(count):
        frames = message_frames(rng)
        if port in ANSWERING and index < count - 1 and rng.random() < 0.9:
            frames = [b"", *frames]
            answerable += 1
        elif ANSWERING.get(port):
            answerable += 1
        sock.send_multipart(frames, copy=False)
    return answerable


def drain(sock: zmq.Socket, expected: int) -> int:
    """Receive up to ``expected`` replies (bounded in time), check each, and return how many came."""
    received = 0
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while received < expected and time.monotonic() < deadline:
        if not sock.poll(100):
            continue
        assert_reply(sock.recv_multipart())
        received += 1
    return received


@pytest.mark.parametrize("port", list(PORTS))
def test_fuzzed_messages_never_harm_the_server(servers, port, report):
    writer, reader, keys = servers
    rng = random.Random(f"{SEED}-{port}")
    context = zmq.Context()
    sent = answerable = replies = 0
    try:
        while sent < MESSAGES:
            sock = context.socket(zmq.DEALER)
            sock.linger = 0
            if port in keys:
                keys[port].apply(sock)
            sock.connect(f"tcp://127.0.0.1:{writer.port_base + PORTS[port]}")
            count = min(BATCH, MESSAGES - sent)
            expected = send_batch(sock, rng, count, port)
            if port in ANSWERING:
                received = drain(sock, expected)
                assert received == expected, (
                    f"{received} of {expected} messages answered in {DRAIN_TIMEOUT} s"
                )
                replies += received
                if not ANSWERING[port]:
                    time.sleep(0.3)  # the peer reaches the raw garbage that ends the batch: then check
            sock.close()  # a peer of a backend port would take real requests: gone before the check
            sent += count
            answerable += expected
            check(writer, reader)
    finally:
        context.term()
    report(f"seed {SEED}: {sent} messages to the {port} port, {answerable} answerable, {replies} replies")
