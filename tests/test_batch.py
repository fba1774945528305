"""Atomic batches (SPEC §10), for both clients, against real server processes."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
import zmq

from helpers import ServerProcess
from pyzdb import aio, errors, protocol
from pyzdb.client import Connection
from pyzdb.server.handler import Handler
from pyzdb.store import Store

KINDS = ["sync", "aio"]


def in_batch(kind: str, uri: str, build, **options):
    """Record ``build(b)`` in one batch with the ``kind`` client and send it; return the batch."""
    if kind == "sync":
        with Connection(uri, timeout=10, **options) as conn:
            with conn.batch() as b:
                build(b)
            return b

    async def main():
        async with aio.connect(uri, timeout=10, **options) as conn:
            async with conn.batch() as b:
                build(b)
            return b

    return asyncio.run(main())


def state(server):
    with Connection(server.write_uri, timeout=10) as conn:
        return conn.db._run()


def seed(server, **values):
    with Connection(server.write_uri, timeout=10) as conn:
        for key, value in values.items():
            conn.db[key] = value


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_applies_in_order_with_placeholders(server, kind):
    seed(server, l=[5], n=1)
    results = {}

    def build(b):
        b["x"] = 1
        b["l"].append(2)
        b["n"] += 1
        results["first"] = b["l"][0]._run()
        results["len"] = b["l"]._len()  # sees the append before it
        results["pop"] = b["l"].pop()

    b = in_batch(kind, server.write_uri, build)
    assert results["first"].value == 5 and results["len"].value == 2 and results["pop"].value == 2
    assert b.results == [None, None, None, 5, 2, 2]
    assert state(server) == {"l": [5], "n": 2, "x": 1}


@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_operation_applies_nothing_and_names_its_index(server, kind):
    seed(server, l=[1, 2], n=1)
    placeholders = []

    def build(b):
        b["x"] = 1
        b["l"].append(3)
        b["n"] += 5
        placeholders.append(b["l"][10]._run())
        b["y"] = 2

    with pytest.raises(IndexError) as caught:
        in_batch(kind, server.write_uri, build)
    assert isinstance(caught.value, errors.PyzdbError)
    assert caught.value.batch_index == 3
    assert state(server) == {"l": [1, 2], "n": 1}
    with pytest.raises(LookupError, match="has not run"):
        _ = placeholders[0].value


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_is_sent_when_the_block_raises(server, kind):
    def build(b):
        b["x"] = 1
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        in_batch(kind, server.write_uri, build)
    assert state(server) == {}


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_is_one_undo_step_and_survives_a_sigkill(server, kind):
    seed(server, l=[])
    in_batch(kind, server.write_uri, lambda b: [b["l"].append(i) for i in range(5)])
    assert server.kill() == -signal.SIGKILL
    restarted = ServerProcess(server.db, server.port_base).start()
    try:
        assert state(restarted) == {"l": [0, 1, 2, 3, 4]}  # journaled before the reply
        with Connection(restarted.write_uri, timeout=10) as conn:
            conn.db.undo()
            assert conn.db._run() == {"l": []}
            conn.db.redo()
            assert conn.db._run() == {"l": [0, 1, 2, 3, 4]}
    finally:
        restarted.stop()


def test_a_resent_batch_is_applied_once(server):
    """The same batch request, sent twice with the same client and seq, runs once (one dedup entry)."""
    seed(server, l=[])
    message = {
        "v": 1,
        "op": "batch",
        "ops": [{"op": "call", "path": ["l"], "method": "append", "args": [1]}, {"op": "len", "path": ["l"]}],
        "id": 7,
        "client": "batch-dedup-test",
        "seq": 7,
    }
    raw = json.dumps(message).encode()
    context = zmq.Context()
    try:
        replies = []
        for _ in range(2):
            sock = context.socket(zmq.REQ)
            sock.linger = 0
            sock.connect(server.write_uri)
            sock.send(raw)
            assert sock.poll(5000)
            replies.append(sock.recv())
            sock.close()
    finally:
        context.term()
    assert replies[0] == replies[1]
    assert protocol.decode_reply(replies[0]) == (7, [None, 1])
    assert state(server) == {"l": [1]}


def test_an_async_batch_retried_while_the_server_is_stopped_is_applied_once(server):
    seed(server, l=[])

    async def main():
        async with aio.connect(server.write_uri, timeout=20, retry_interval=0.1) as conn:
            server.send_signal(signal.SIGSTOP)
            try:
                batch = conn.batch()

                async def send():
                    async with batch as b:
                        b["l"].append("a")
                        b["l"].append("b")

                task = asyncio.ensure_future(send())
                await asyncio.sleep(0.8)  # several resends queue up at the stopped server
            finally:
                server.send_signal(signal.SIGCONT)
            await task
            return batch.results, await conn.db["l"]

    results, stored = asyncio.run(main())
    assert results == [None, None]
    assert stored == ["a", "b"]


@pytest.mark.parametrize("kind", KINDS)
def test_control_operations_are_refused_in_a_batch(server, kind):
    for name in ("save", "undo", "redo", "lock"):
        with pytest.raises(errors.NotAllowedError, match="refused in a batch"):
            in_batch(kind, server.write_uri, lambda b, name=name: getattr(b, name)())
    with pytest.raises(TypeError, match="cannot store a value of type set"):
        in_batch(kind, server.write_uri, lambda b: b["x"]._set({1}))
    assert state(server) == {}


def test_the_server_refuses_bad_batches():
    handler = Handler(Store(), max_batch_ops=3)

    def answer(**message):
        raw = json.dumps({"v": 1, "op": "batch", "id": 1, **message}).encode()
        try:
            return protocol.decode_reply(handler.handle([raw]))[1]
        except errors.PyzdbError as exc:
            return exc

    set_x = {"op": "set", "path": ["x"], "args": [1]}
    assert answer(ops=[set_x]) == [None]
    too_many = answer(ops=[set_x] * 4)
    assert isinstance(too_many, errors.ProtocolError) and "limit of 3 (--max-batch-ops)" in str(too_many)
    for refused in ("save", "undo", "lock", "exec", "batch"):
        exc = answer(ops=[set_x, {"op": refused}])
        assert isinstance(exc, errors.NotAllowedError) and exc.batch_index == 1, exc
    assert isinstance(answer(ops=[]), errors.ProtocolError)
    assert isinstance(answer(ops=[set_x, 3]), errors.ProtocolError)
    assert isinstance(answer(ops=[{**set_x, "seq": 4}]), errors.ProtocolError)
    assert isinstance(answer(ops=[{"op": "set", "path": [], "args": [1]}]), errors.ProtocolError)
    assert handler.store.root == {"x": 1}
    assert handler.store.history.can_undo == 1


def test_a_read_only_batch_is_a_consistent_multi_get_on_replicas(server):
    """Readers on replicas never see half a batch; read-only batches go to the read queue."""
    seed(server, a=0, b=0)
    with Connection(server.write_uri, timeout=10) as conn:
        conn.db.save()
    replicas = [ServerProcess(server.db, server.port_base, read_only=True).start() for _ in range(2)]
    try:

        async def writer(conn, rounds):
            for i in range(1, rounds + 1):
                async with conn.batch() as b:
                    b["a"] = i
                    b["b"] = -i
                await asyncio.sleep(0.005)

        async def reader(conn, until):
            seen = set()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                async with conn.batch() as b:
                    a, minus_b = b["a"]._run(), b["b"]._run()
                pair = (a.value, -minus_b.value)
                assert pair[0] == pair[1], f"half a batch: {pair}"
                seen.add(pair[0])
                if until.done():
                    return seen
            raise AssertionError("the writer did not finish in time")

        async def main():
            async with (
                aio.connect(server.write_uri, timeout=10) as wconn,
                aio.connect(server.write_uri, read_uri=server.read_uri, timeout=10) as rconn,
            ):
                done = asyncio.ensure_future(writer(wconn, 150))
                seen = await reader(rconn, done)
                await done
                return seen

        seen = asyncio.run(main())
    finally:
        for replica in replicas:
            replica.stop()
    assert len(seen) > 1  # the replicas followed the writer meanwhile


def test_a_journaled_batch_is_replayed_whatever_the_limit_now():
    handler = Handler(Store(), max_batch_ops=1)
    raw = json.dumps(
        {
            "v": 1,
            "op": "batch",
            "ops": [{"op": "set", "path": ["a"], "args": [1]}] * 2,
            "client": "c",
            "seq": 1,
        }
    ).encode()
    handler.replay(raw)
    assert handler.store.root == {"a": 1}
    assert handler.max_batch_ops == 1


def test_an_operation_nested_too_deep_is_refused_in_a_batch():
    handler = Handler(Store())
    deep: object = 1
    for _ in range(60):
        deep = [deep]
    path = [f"k{i}" for i in range(50)]  # 50 steps in one array: few brackets, many levels
    raw = json.dumps(
        {"v": 1, "op": "batch", "id": 1, "ops": [{"op": "set", "path": path, "args": [deep]}]}
    ).encode()
    with pytest.raises(errors.ProtocolError, match="nested deeper than 100 levels") as caught:
        protocol.decode_reply(handler.handle([raw]))
    assert caught.value.batch_index == 0
