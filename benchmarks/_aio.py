"""The ``aio`` section (issue 13): the asyncio client, batches and streaming, against Redis in one run.

Figures, each the median of ``rounds`` runs of ``seconds`` (in this process,
against a pyzdb server process; the Redis figures against a plain Redis):

- ``sync_read``: one sync connection, small reads one at a time (req/s);
- ``aio_read_64``: one asyncio connection, 64 small reads in flight (req/s),
  against ``redis_async_get_64``: redis.asyncio, 64 concurrent GETs;
- ``batch_set_1000``: one sync ``with conn.batch()`` of 1,000 ``set`` s
  (keys/s), against ``redis_pipeline_set_1000``: a redis-py pipeline of 1,000 SETs;
- streaming a list of ``stream_items`` ints: items/s of ``_stream()`` against a
  plain ``_run()``, and the tracemalloc peak above the baseline while
  streaming (over the first million items: tracemalloc slows Python down).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc

from _setup import say

from pyzdb import aio
from pyzdb.client import Connection

PAGE_BYTES = 1 << 20
READ_KEY = "k"


def _rate(run, seconds: float) -> float:
    """Operations per second of ``run()`` (which returns how many it did), repeated for ``seconds``."""
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        done += run()
    return done / elapsed


def _median(run, rounds: int, seconds: float) -> float:
    return statistics.median(_rate(run, seconds) for _ in range(rounds))


def sync_reads(uri: str, rounds: int, seconds: float) -> float:
    with Connection(uri) as conn:
        ref = conn.db[READ_KEY]

        def hundred() -> int:
            for _ in range(100):
                ref._run()
            return 100

        return _median(hundred, rounds, seconds)


def aio_reads(uri: str, rounds: int, seconds: float, in_flight: int = 64) -> float:
    async def main() -> float:
        async with aio.connect(uri, max_in_flight=in_flight) as conn:
            ref = conn.db[READ_KEY]
            rates = []
            for _ in range(rounds):
                done, started = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - started) < seconds:
                    await asyncio.gather(*(ref._run() for _ in range(in_flight * 4)))
                    done += in_flight * 4
                rates.append(done / elapsed)
            return statistics.median(rates)

    return asyncio.run(main())


def batch_sets(uri: str, rounds: int, seconds: float, size: int = 1000) -> float:
    with Connection(uri) as conn:
        conn.db["batch"] = {}

        def one_batch() -> int:
            with conn.batch() as b:
                for i in range(size):
                    b["batch"][i] = i
            return size

        return _median(one_batch, rounds, seconds)


def redis_figures(port: int, rounds: int, seconds: float) -> dict:
    import redis
    import redis.asyncio

    client = redis.Redis(host="127.0.0.1", port=port)
    client.set(READ_KEY, "v")

    def pipeline() -> int:
        pipe = client.pipeline(transaction=False)
        for i in range(1000):
            pipe.set(f"b{i}", i)
        pipe.execute()
        return 1000

    pipelined = _median(pipeline, rounds, seconds)
    client.close()

    async def gets() -> float:
        pool = redis.asyncio.BlockingConnectionPool(host="127.0.0.1", port=port, max_connections=64)
        async_client = redis.asyncio.Redis(connection_pool=pool)  # 64 on the wire, the rest wait
        rates = []
        for _ in range(rounds):
            done, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds:
                await asyncio.gather(*(async_client.get(READ_KEY) for _ in range(256)))
                done += 256
            rates.append(done / elapsed)
        await async_client.aclose()
        await pool.aclose()
        return statistics.median(rates)

    return {"redis_pipeline_set_1000": pipelined, "redis_async_get_64": asyncio.run(gets())}


def streaming(uri: str, items: int) -> dict:
    with Connection(uri, timeout=600) as conn:
        conn.db["big"] = []
        chunk = 500_000
        for start in range(0, items, chunk):
            conn.db["big"].extend(range(start, min(items, start + chunk)))
        started = time.perf_counter()
        whole = len(conn.db["big"]._run())
        run_s = time.perf_counter() - started
        started = time.perf_counter()
        streamed = sum(1 for _ in conn.db["big"]._stream(page_bytes=PAGE_BYTES))
        stream_s = time.perf_counter() - started
        assert whole == streamed == items
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for n, _ in enumerate(conn.db["big"]._stream(page_bytes=PAGE_BYTES)):
                if n >= 1_000_000:
                    break
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
        conn.db["big"] = []
    return {
        "stream_items": items,
        "run_items_per_s": items / run_s,
        "stream_items_per_s": items / stream_s,
        "stream_peak_bytes": peak,
        "page_bytes": PAGE_BYTES,
    }


def targets(figures: dict) -> list[dict]:
    """Each target of issue 13: the two figures, the ratio asked for, met or not."""
    rows = [
        ("aio 64 in flight >= 3 x sync one connection", "aio_read_64", "sync_read", 3.0),
        ("aio 64 in flight >= redis.asyncio 64 GETs", "aio_read_64", "redis_async_get_64", 1.0),
        ("batch of 1,000 sets >= Redis pipeline of 1,000", "batch_set_1000", "redis_pipeline_set_1000", 1.0),
        ("streaming items/s >= 0.5 x plain _run()", "stream_items_per_s", "run_items_per_s", 0.5),
    ]
    found = []
    for name, mine, theirs, ratio in rows:
        if mine in figures and theirs in figures:
            got = figures[mine] / figures[theirs]
            found.append({"target": name, "ratio": got, "wanted": ratio, "met": got >= ratio})
    if "stream_peak_bytes" in figures:
        got = figures["stream_peak_bytes"] / figures["page_bytes"]
        name = "stream peak <= 3 x page_bytes"
        found.append({"target": name, "ratio": got, "wanted": 3.0, "met": got <= 3})
    return found


def run(uri: str, redis_port: int | None, rounds: int, seconds: float, stream_items: int) -> dict:
    """Every figure of the section, and the targets."""
    with Connection(uri) as conn:
        conn.db[READ_KEY] = "v"
    figures = {
        "sync_read": sync_reads(uri, rounds, seconds),
        "aio_read_64": aio_reads(uri, rounds, seconds),
        "batch_set_1000": batch_sets(uri, rounds, seconds),
    }
    if redis_port is not None:
        figures.update(redis_figures(redis_port, rounds, seconds))
    figures.update(streaming(uri, stream_items))
    for name, value in figures.items():
        say(f"  aio: {name:<26} {value:>14,.0f}")
    found = targets(figures)
    for row in found:
        say(f"  aio target: {row['target']}: {row['ratio']:.2f} ({'met' if row['met'] else 'NOT met'})")
    return {"figures": figures, "targets": found}
