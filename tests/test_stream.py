"""Streaming reads and the memory bound (SPEC §10), for both clients, against real servers."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from pyzdb import aio, errors
from pyzdb.client import Connection

KINDS = ["sync", "aio"]


def seed(server, **values):
    with Connection(server.write_uri, timeout=10) as conn:
        for key, value in values.items():
            conn.db[key] = value


def run_both(kind, server, sync_body, async_body, **options):
    if kind == "sync":
        with Connection(server.write_uri, timeout=10, **options) as conn:
            return sync_body(conn)

    async def main():
        async with aio.connect(server.write_uri, timeout=10, **options) as conn:
            return await async_body(conn)

    return asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_gives_every_item_and_no_page_exceeds_page_bytes(server, kind):
    """memory_limit == page_bytes: a longer page on the wire would raise TooLargeError."""
    values = [("x" * (i % 97)) for i in range(3000)]
    keys = {(i, str(i)): i for i in range(1500)}
    seed(server, l=values, d=keys)
    page = 1024

    def sync_body(conn):
        return list(conn.db["l"]._stream(page_bytes=page)), list(conn.db["d"]._stream(page_bytes=page))

    async def async_body(conn):
        return (
            [v async for v in conn.db["l"]._stream(page_bytes=page)],
            [k async for k in conn.db["d"]._stream(page_bytes=page, page_items=7)],
        )

    got_list, got_keys = run_both(kind, server, sync_body, async_body, memory_limit=page)
    assert got_list == values
    assert got_keys == list(keys)


def test_async_for_streams_by_default(server):
    seed(server, l=list(range(2500)))

    async def main():
        async with aio.connect(server.write_uri, timeout=10) as conn:
            return [v async for v in conn.db["l"]]

    assert asyncio.run(main()) == list(range(2500))


@pytest.mark.parametrize("kind", KINDS)
def test_a_change_between_pages_raises_changed_error_only_when_consistent(server, kind):
    seed(server, l=list(range(50)), other=0)
    kw = {"page_items": 10}

    def sync_body(conn):
        db, outcome = conn.db, {}
        stream = db["l"]._stream(**kw)
        next(stream)
        db["other"] = 1  # another value: the stream goes on
        outcome["unrelated"] = len(list(stream))
        stream = db["l"]._stream(**kw)
        next(stream)
        db["l"].append(50)
        with pytest.raises(errors.ChangedError):
            list(stream)
        stream = db["l"]._stream(consistent=False, **kw)
        next(stream)
        db["l"].append(51)
        outcome["inconsistent"] = len(list(stream))
        return outcome

    async def async_body(conn):
        db, outcome = conn.db, {}
        stream = db["l"]._stream(**kw)
        await anext(stream)
        await db["other"]._set(1)
        outcome["unrelated"] = len([v async for v in stream])
        stream = db["l"]._stream(**kw)
        await anext(stream)
        await db["l"].append(50)
        with pytest.raises(errors.ChangedError):
            _ = [v async for v in stream]
        stream = db["l"]._stream(consistent=False, **kw)
        await anext(stream)
        await db["l"].append(51)
        outcome["inconsistent"] = len([v async for v in stream])
        return outcome

    outcome = run_both(kind, server, sync_body, async_body)
    assert outcome == {"unrelated": 49, "inconsistent": 51}


@pytest.mark.parametrize("kind", KINDS)
def test_replacing_the_parent_changes_the_stream(server, kind):
    seed(server, a={"l": list(range(30))})

    def sync_body(conn):
        stream = conn.db["a"]["l"]._stream(page_items=10)
        next(stream)
        conn.db["a"] = {"l": list(range(30))}  # the same contents, but a new value
        with pytest.raises(errors.ChangedError):
            list(stream)
        return True

    async def async_body(conn):
        stream = conn.db["a"]["l"]._stream(page_items=10)
        await anext(stream)
        await conn.db["a"]._set({"l": list(range(30))})
        with pytest.raises(errors.ChangedError):
            _ = [v async for v in stream]
        return True

    assert run_both(kind, server, sync_body, async_body)


@pytest.mark.parametrize("kind", KINDS)
def test_memory_limit_refuses_a_large_reply_and_the_connection_goes_on(server, kind):
    seed(server, big=list(range(10_000)), small=[1, 2], nested=[list(range(1000))])

    def sync_body(conn):
        with pytest.raises(errors.TooLargeError, match="memory_limit of 2000 bytes"):
            conn.db["big"]._run()
        with pytest.raises(errors.TooLargeError, match="the write was applied"):
            conn.db["nested"].pop()  # the request is small, its reply is not
        assert conn.db["nested"]._run() == []
        with pytest.raises(errors.TooLargeError, match="more than page_bytes"):
            list(conn.db["blob"]._stream(page_bytes=256))
        return conn.db["small"]._run(), conn.db["big"]._len()

    async def async_body(conn):
        with pytest.raises(errors.TooLargeError, match="memory_limit of 2000 bytes"):
            await conn.db["big"]
        with pytest.raises(errors.TooLargeError, match="more than page_bytes"):
            _ = [v async for v in conn.db["blob"]._stream(page_bytes=256)]
        return await conn.db["small"], await conn.db["big"]._len()

    seed(server, blob=["y" * 400])
    small, length = run_both(kind, server, sync_body, async_body, memory_limit=2000)
    assert small == [1, 2]
    assert length == 10_000


@pytest.mark.parametrize("kind", KINDS)
def test_bad_stream_arguments_are_refused(server, kind):
    seed(server, n=5, l=[1])

    def sync_body(conn):
        with pytest.raises(ValueError, match="page_bytes"):
            list(conn.db["l"]._stream(page_bytes=10))
        with pytest.raises(ValueError, match="page_items"):
            list(conn.db["l"]._stream(page_items=0))
        with pytest.raises(TypeError, match="only a list or a dict"):
            list(conn.db["n"]._stream())
        return True

    async def async_body(conn):
        with pytest.raises(ValueError, match="page_bytes"):
            _ = [v async for v in conn.db["l"]._stream(page_bytes=10)]
        with pytest.raises(TypeError, match="only a list or a dict"):
            _ = [v async for v in conn.db["n"]._stream()]
        return True

    assert run_both(kind, server, sync_body, async_body)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_holds_few_pages_in_memory(server, kind, report):
    """tracemalloc's peak while streaming 300,000 ints stays within 3 x page_bytes of the baseline."""
    count, page = 300_000, 1 << 16
    seed(server, big=list(range(count)))

    def measure(consume):
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            total = consume()
            return total, tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()

    def sync_body(conn):
        ref = conn.db["big"]
        ref._len()  # the sockets exist before the baseline
        streamed = measure(lambda: sum(ref._stream(page_bytes=page, page_items=1000)))
        whole = measure(lambda: sum(ref._run()))
        return streamed, whole

    async def async_body(conn):
        ref = conn.db["big"]
        await ref._len()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            total = 0
            async for v in ref._stream(page_bytes=page, page_items=1000):
                total += v
            streamed = (total, tracemalloc.get_traced_memory()[1] - baseline)
        finally:
            tracemalloc.stop()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            whole = (sum(await ref), tracemalloc.get_traced_memory()[1] - baseline)
        finally:
            tracemalloc.stop()
        return streamed, whole

    (total, peak), (whole_total, whole_peak) = run_both(kind, server, sync_body, async_body)
    report(f"peak {peak} bytes streaming (page_bytes {page}), {whole_peak} bytes for _run()")
    assert total == whole_total == count * (count - 1) // 2
    assert peak <= 3 * page
    assert whole_peak > 3 * page  # the bound is not met by accident
