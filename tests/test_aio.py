"""The asyncio client (SPEC §10) against real server processes."""

from __future__ import annotations

import asyncio
import gc
import signal
import warnings

import pytest

from helpers import ServerProcess
from pyzdb import aio, errors
from pyzdb.client import Connection

TEST_BOUND = 60.0


def run(coro):
    """Run a coroutine with an overall bound, so no test can hang."""

    async def bounded():
        async with asyncio.timeout(TEST_BOUND):
            return await coro

    return asyncio.run(bounded())


@pytest.fixture
def stopped(server):
    """A function that SIGSTOPs ``server``; it is SIGCONTed after the test whatever happens."""
    state = {"stopped": False}

    def stop() -> None:
        server.send_signal(signal.SIGSTOP)
        state["stopped"] = True

    try:
        yield stop
    finally:
        if state["stopped"]:
            server.send_signal(signal.SIGCONT)


def cont(server) -> None:
    server.send_signal(signal.SIGCONT)


def test_the_spec_example_runs_as_written(server):
    async def main():
        async with aio.connect(server.write_uri, read_uri=None, timeout=60.0, max_in_flight=64) as conn:
            db = conn.db
            await db["x"]._set(3)
            x = await db["x"]
            assert x == 3 and await db["x"]._run() == 3
            await db["l"]._set([1, 4])
            await db["n"]._set(1)
            await db["x"]._delete()
            n = await db["l"]._len()
            has = await db["l"]._contains(4)
            await db["n"]._iop("+=", 1)
            assert await db["l"].append(5) is None
            await db["big"]._set(list(range(2500)))
            streamed = [v async for v in db["big"]]
            async with conn.batch() as b:
                b["x"] = 1
                b["l"].append(2)
                b["n"] += 1
                first = b["l"][0]._run()
            async with conn.locked():
                await db["n"]._iop("*=", 10)
            await db.save()
            await db.undo()
            await db.redo()
            await db["big"]._delete()
            return n, has, streamed, first.value, b.results, await db

    n, has, streamed, first, results, root = run(main())
    assert (n, has) == (2, True)
    assert streamed == list(range(2500))
    assert first == 1 and results == [None, None, None, 1]
    assert root == {"l": [1, 4, 5, 2], "n": 30, "x": 1}


PARITY_SCRIPT = [
    ("set", ("d",), {"a": 1, 2: "b", ("t", 1): [None, 1.5]}),
    ("set", ("l",), list(range(6))),
    ("call", ("l",), "append", (6,)),
    ("call", ("l",), "pop", (0,)),
    ("call", ("d",), "setdefault", ("z", [])),
    ("call", ("d",), "get", (2,)),
    ("call", ("d",), "keys", ()),
    ("iop", ("l",), "+=", [7, 8]),
    ("set", ("l", slice(0, 2)), ["x"]),
    ("get", ("l", slice(None, None, -1))),
    ("len", ("d",)),
    ("contains", ("d",), ("t", 1)),
    ("delete", ("d", "a")),
    ("items", ("l",)),
    ("get", ()),
    ("get", ("nope",)),
    ("call", ("l",), "index", ("absent",)),
    ("iop", ("d", 2), "-=", 1),
]


def _sync_step(db, step):
    kind, path, *rest = step
    ref, parent, key = db, db, None
    for key in path:
        parent, ref = ref, ref[key]
    if kind == "set":
        parent[key] = rest[0]
    elif kind == "delete":
        del parent[key]
    elif kind == "call":
        return getattr(ref, rest[0])(*rest[1])
    elif kind == "iop":
        ref = ref._iop(rest[0], rest[1])
    elif kind == "get":
        return ref._run()
    elif kind == "len":
        return len(ref)
    elif kind == "contains":
        return rest[0] in ref
    elif kind == "items":
        return list(ref)


async def _async_step(db, step):
    kind, path, *rest = step
    ref = db
    for key in path:
        ref = ref[key]
    if kind == "set":
        return await ref._set(rest[0])
    if kind == "delete":
        return await ref._delete()
    if kind == "call":
        return await getattr(ref, rest[0])(*rest[1])
    if kind == "iop":
        return await ref._iop(rest[0], rest[1])
    if kind == "get":
        return await ref
    if kind == "len":
        return await ref._len()
    if kind == "contains":
        return await ref._contains(rest[0])
    if kind == "items":
        return [v async for v in ref]


def _outcome(thunk):
    try:
        return ("ok", thunk())
    except errors.PyzdbError as exc:
        return (type(exc), str(exc))


def test_parity_with_the_sync_client(tmp_path):
    """The same steps on two fresh servers, one per client: the same results, errors and stores."""
    sync_server = ServerProcess(tmp_path / "sync.pkl").start()
    async_server = ServerProcess(tmp_path / "async.pkl").start()
    try:
        with Connection(sync_server.write_uri, timeout=10) as conn:
            expected = [_outcome(lambda s=step: _sync_step(conn.db, s)) for step in PARITY_SCRIPT]
            expected.append(("ok", conn.db._run()))

        async def main():
            outcomes = []
            async with aio.connect(async_server.write_uri, timeout=10) as conn:
                for step in PARITY_SCRIPT:
                    try:
                        outcomes.append(("ok", await _async_step(conn.db, step)))
                    except errors.PyzdbError as exc:
                        outcomes.append((type(exc), str(exc)))
                outcomes.append(("ok", await conn.db))
            return outcomes

        got = run(main())
    finally:
        sync_server.stop()
        async_server.stop()
    assert got == expected
    assert any(kind is errors.ServerKeyError for kind, _ in got)  # the errors were compared too


@pytest.mark.parametrize(
    "statement, spelling",
    [
        (lambda db: db["a"].__setitem__("b", 1), "await db['a']['b']._set(value)"),
        (lambda db: db["a"].__delitem__(0), "await db['a'][0]._delete()"),
        (lambda db: len(db["a"]), "await db['a']._len()"),
        (lambda db: 1 in db["a"], "await db['a']._contains(item)"),
        (lambda db: bool(db["a"]), "await db['a']._bool()"),
        (lambda db: [v for v in db["a"]], "async for v in db['a']"),
        (lambda db: db["a"].__iadd__(1), "await db['a']._iop('+=', value)"),
        (lambda db: db["a"].__ior__(1), "await db['a']._iop('|=', value)"),
    ],
)
def test_statements_raise_type_error_naming_the_awaitable(statement, spelling):
    conn = aio.connect("tcp://127.0.0.1:1")  # nothing is sent: no server needed
    try:
        with pytest.raises(TypeError) as caught:
            statement(conn.db)
        assert spelling in str(caught.value)
    finally:
        run(conn.aclose())


def test_augmented_assignment_statement_raises(server):
    async def main():
        async with aio.connect(server.write_uri, timeout=10) as conn:
            db = conn.db
            await db["n"]._set(1)
            with pytest.raises(TypeError, match=r"_iop\('\+=', value\)"):
                db["n"] += 1
            return await db["n"]

    assert run(main()) == 1  # nothing was sent


def test_bad_arguments_are_refused_on_the_client():
    conn = aio.connect("tcp://127.0.0.1:1")
    try:
        with pytest.raises(TypeError, match="object"):
            conn.db["x"]._set(object())
        with pytest.raises(ValueError, match="unknown in-place operator"):
            conn.db["x"]._iop("**=", 2)
        with pytest.raises(errors.NotAllowedError):
            conn.db["l"].sort(key=len)
    finally:
        run(conn.aclose())
    with pytest.raises(ValueError, match="max_in_flight"):
        aio.connect(max_in_flight=0)


def test_a_thousand_gathered_reads_on_one_connection(server):
    async def main():
        async with aio.connect(server.write_uri, timeout=30) as conn:
            await conn.db["l"]._set(list(range(1000)))
            return await asyncio.gather(*(conn.db["l"][i] for i in range(1000)))

    assert run(main()) == list(range(1000))


@pytest.fixture
def replicas(server):
    """Two read-only servers on ``server``'s files; stopped after the test."""
    procs = [ServerProcess(server.db, server.port_base, read_only=True).start() for _ in range(2)]
    yield procs
    for proc in procs:
        assert proc.stop() == 0


def test_a_thousand_gathered_reads_through_read_only_servers(server, replicas):
    with Connection(server.write_uri, timeout=10) as sync:
        sync.db["l"] = list(range(1000))
        sync.db.save()

    async def main():
        async with aio.connect(server.write_uri, read_uri=server.read_uri, timeout=30) as conn:
            for _ in range(100):  # each replica loads the snapshot within a second
                if all(await asyncio.gather(*(conn.db._contains("l") for _ in range(20)))):
                    break
                await asyncio.sleep(0.05)
            return await asyncio.gather(*(conn.db["l"][i] for i in range(1000)))

    assert run(main()) == list(range(1000))


def test_writes_are_applied_in_issue_order(server):
    async def main():
        async with aio.connect(server.write_uri, timeout=30, max_in_flight=16) as conn:
            await conn.db["l"]._set([])
            await asyncio.gather(*(conn.db["l"].append(i) for i in range(300)))
            return await conn.db["l"]

    assert run(main()) == list(range(300))


def test_cancelled_requests_while_the_server_is_stopped(server, stopped):
    """A cancelled write is applied at most once; late replies are dropped; the connection goes on."""

    async def main():
        async with aio.connect(server.write_uri, timeout=20, retry_interval=0.3) as conn:
            db = conn.db
            await db["l"]._set([])
            stopped()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await db["l"].append("cancelled")
            read = asyncio.ensure_future(db["l"]._len())
            await asyncio.sleep(0.8)  # past a retry: the stuck read's socket is replaced meanwhile
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read
            cont(server)
            after = await db["l"]
            await db["l"].append("after")
            return after, await db["l"], await db["l"]._len()

    after, final, length = run(main())
    assert after.count("cancelled") <= 1
    assert final == [*after, "after"]
    assert length == len(final)


def test_a_retried_write_resends_identical_frames_and_is_applied_once(server, stopped):
    async def main():
        async with aio.connect(server.write_uri, timeout=20, retry_interval=0.1) as conn:
            await conn.db["l"]._set([])
            stopped()
            write = asyncio.ensure_future(conn.db["l"].append("once"))
            await asyncio.sleep(1.0)  # several resends, each on a fresh socket, all queued at the server
            generations = conn._write.generation
            cont(server)
            await write
            return generations, await conn.db["l"]

    generations, stored = run(main())
    assert generations >= 2
    assert stored == ["once"]


def test_a_timeout_raises_and_leaves_the_connection_usable(server, stopped):
    async def main():
        async with aio.connect(server.write_uri, timeout=0.8, retry_interval=0.2) as conn:
            await conn.db["x"]._set(1)
            stopped()
            with pytest.raises(errors.TimeoutError, match="may or may not have been applied"):
                await conn.db["x"]._set(2)
            with pytest.raises(errors.TimeoutError) as read_timeout:
                await conn.db["x"]
            cont(server)
            return str(read_timeout.value), await conn.db["x"]

    message, x = run(main())
    assert "may or may not" not in message
    assert x in (1, 2)


def test_max_in_flight_makes_extra_calls_wait(server, stopped):
    async def main():
        async with aio.connect(server.write_uri, timeout=20, max_in_flight=4) as conn:
            await conn.db["x"]._set(7)
            stopped()
            tasks = [asyncio.ensure_future(conn.db["x"]) for _ in range(10)]
            await asyncio.sleep(0.3)
            on_the_wire = len(conn._write.entries)
            cont(server)
            return on_the_wire, await asyncio.gather(*tasks)

    on_the_wire, results = run(main())
    assert on_the_wire == 4
    assert results == [7] * 10


def test_a_call_waiting_for_a_place_times_out_unsent(server, stopped):
    async def main():
        async with aio.connect(server.write_uri, timeout=3, max_in_flight=1) as conn:
            await conn.db["x"]._set(0)
            stopped()
            first = asyncio.ensure_future(conn.db["x"]._set(1))
            await asyncio.sleep(0.1)
            conn.timeout = 0.5  # the next call gives up long before the first one frees its place
            with pytest.raises(errors.TimeoutError, match="was not sent"):
                await conn.db["x"]._set(2)
            with pytest.raises(errors.TimeoutError):
                await first
            cont(server)
            return await conn.db["x"]

    assert run(main()) in (0, 1)


def test_aclose_fails_pending_requests_and_is_idempotent(server, stopped):
    async def main():
        conn = aio.connect(server.write_uri, timeout=20)
        await conn.db["x"]._set(1)
        stopped()
        pending = [asyncio.ensure_future(conn.db["x"]) for _ in range(3)]
        await asyncio.sleep(0.1)
        await conn.aclose()
        await conn.aclose()
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        with pytest.raises(errors.ConnectionError, match="closed"):
            await conn.db["x"]
        return outcomes, conn.closed

    outcomes, closed = run(main())
    assert closed
    assert all(isinstance(o, errors.ConnectionError) for o in outcomes), outcomes


def test_an_unclosed_connection_warns(server):
    async def main():
        conn = aio.connect(server.write_uri, timeout=10)
        await conn.db["x"]._set(1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del conn
            gc.collect()
        return [w for w in caught if issubclass(w.category, ResourceWarning)]

    found = run(main())
    assert found and "unclosed pyzdb.aio connection" in str(found[0].message)


def test_sigkill_and_restart_during_concurrent_writes(tmp_path, report):
    """No acknowledged write is lost or doubled, and what is applied is in issue order."""
    servers = [ServerProcess(tmp_path / "db.pkl").start()]
    count = 2000

    def kill_and_restart() -> None:
        servers[0].kill()
        servers.append(ServerProcess(servers[0].db, servers[0].port_base).start())

    async def writer(conn, i, acked, failed):
        try:
            await conn.db["l"].append(i)
            acked.append(i)
        except errors.PyzdbError as exc:
            failed.append((i, f"{type(exc).__name__}: {exc}"))

    async def main():
        acked, failed = [], []
        async with aio.connect(servers[0].write_uri, timeout=30, retry_interval=0.5) as conn:
            await conn.db["l"]._set([])
            tasks = [asyncio.ensure_future(writer(conn, i, acked, failed)) for i in range(count)]
            while len(acked) + len(failed) < count // 5:
                await asyncio.sleep(0.001)
            unfinished = count - len(acked) - len(failed)
            # killed and restarted from a thread: the loop keeps sending meanwhile
            await asyncio.get_running_loop().run_in_executor(None, kill_and_restart)
            await asyncio.gather(*tasks)
            return unfinished, acked, failed, await conn.db["l"]

    try:
        unfinished, acked, failed, stored = run(main())
    finally:
        servers[-1].stop()
    kinds = failed[:3]
    report(f"{unfinished} unfinished at the kill; {len(acked)} acknowledged, {len(failed)} failed {kinds}")
    assert unfinished > count // 2
    assert len(stored) == len(set(stored)), "a write was applied twice"
    assert set(acked) <= set(stored), "an acknowledged write was lost"
    assert stored == sorted(stored), "writes were applied out of issue order"
    # the lost connection is noticed and everything waiting resent in order, so nothing is refused
    assert not failed and stored == list(range(count))


def test_places_on_the_wire_are_given_in_order_and_never_lost():
    from pyzdb.aio import _Slots

    async def main():
        loop = asyncio.get_running_loop()
        slots = _Slots(1)
        await slots.take(loop.time() + 5)
        order = []

        async def wait(name, bound=5.0):
            await slots.take(loop.time() + bound)
            order.append(name)

        first, second, third = (asyncio.ensure_future(wait(n)) for n in "abc")
        late = asyncio.ensure_future(wait("timed out", 0.05))
        await asyncio.sleep(0.1)
        with pytest.raises(TimeoutError):
            await late
        first.cancel()
        slots.give()  # the cancelled first is skipped: b gets it
        await asyncio.sleep(0)
        slots.give()
        await asyncio.gather(second, third)
        second_cancelled_after_grant = asyncio.ensure_future(wait("d"))
        await asyncio.sleep(0)
        slots.give()  # granted to d ...
        second_cancelled_after_grant.cancel()  # ... cancelled before it ran: the place goes back
        with pytest.raises(asyncio.CancelledError):
            await second_cancelled_after_grant
        return order, slots.free

    order, free = run(main())
    assert order == ["b", "c"]
    assert free == 1


def test_the_lock_holds_other_connections_back_until_unlock(server):
    async def main():
        async with (
            aio.connect(server.write_uri, timeout=10) as holder,
            aio.connect(server.write_uri, timeout=10) as other,
        ):
            await holder.db["l"]._set([])
            async with holder.locked():
                waiting = asyncio.ensure_future(other.db["l"].append("other"))
                await asyncio.sleep(0.3)
                held_back = not waiting.done()
                await asyncio.gather(*(holder.db["l"].append(i) for i in range(20)))
                with pytest.raises(errors.LockError, match="already holds"):
                    await holder.lock()
            await waiting
            with pytest.raises(errors.LockError, match="does not hold"):
                await holder.unlock()
            return held_back, await holder.db["l"]

    held_back, stored = run(main())
    assert held_back
    assert stored == [*range(20), "other"]


def test_collection_calls_have_async_twins_with_the_sync_results(server):
    """Every collection call of the sync client, awaited on the asyncio client, gives the same result."""
    from pyzdb import TimeSeries

    with Connection(server.write_uri, timeout=10) as conn:
        coll = conn.db.timeseries("stars", schema={"level": str, "order": int}, index=["level"])
        coll.insert_ts("a", TimeSeries([0.0, 1.0, 2.0], [1.0, 2.0, 4.0]))
        coll.upsert_meta("a", {"level": "A", "order": 1})
        coll.madd([("b", 0.0, 3.0), ("b", 60.0, 5.0)])
        expected = (
            coll.get("a"),
            coll.select({"level": "A"}, ["order"]),
            coll.range("a", aggregation="avg", bucket=2),
            coll.mrange(),
            len(coll),
        )

    async def main():
        async with aio.connect(server.write_uri, timeout=10) as conn:
            coll = conn.db.timeseries("stars")  # sends nothing: the first call opens it
            with pytest.raises(TypeError, match="_len()"):
                len(coll)
            with pytest.raises(TypeError, match="_contains"):
                "a" in coll  # noqa: B015
            got = (
                await coll.get("a"),
                await coll.select({"level": "A"}, ["order"]),
                await coll.range("a", aggregation="avg", bucket=2),
                await coll.mrange(),
                await coll._len(),
            )
            await coll.add("c", 5.0, 1.5)
            names = await conn.db.timeseries_names()
            created = conn.db.timeseries("new", duplicate_policy="sum")
            await created.madd([("x", 1.0, 1.0), ("x", 1.0, 2.0)])
            summed = await created.range("x")
            return got, await coll._contains("c"), names, summed, await created.options()

    got, added, names, summed, options = run(main())
    assert got == expected
    assert added is True and names == ["stars"]
    assert summed == [(1.0, 3.0)] and options["duplicate_policy"] == "sum"
