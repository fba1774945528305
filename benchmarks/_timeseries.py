"""The ``timeseries`` section of ``make bench``: time-series collections against issue 11's targets.

Measured on a real read-write server (``--fsync everysec``), from one client in
the benchmark process:

- ``select`` on an indexed field of a 100k-row collection, 100 rows per
  answer, against a small read (``db['x']``) measured the same way;
- ``madd`` in batches of 10,000 samples (100 series, in time order);
- ``range(aggregation='avg', bucket=60)`` over one series of 1M samples,
  against numpy doing the same aggregation here plus a small read;
- memory: a fresh server's resident set before and after ``madd`` of 10M
  samples over 1,000 series (``--quick``: 1M over 100), per stored sample;
  the undo log holds its default 1,000 steps.

The 100k-row collection is written as a snapshot by pyzdb's own store code
(as ``_stores`` writes the tree), so no 100k requests are needed to build it.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import _procs
import _report
import numpy as np
from _setup import say

from pyzdb.client import Connection
from pyzdb.server.sessions import Sessions
from pyzdb.storage import snapshot
from pyzdb.store import Store

ROWS = 100_000
GROUPS = 1_000  # 100 rows per value of the indexed field
BATCH = 10_000
RANGE_SAMPLES = 1_000_000


def write_collection(path: Path, rows: int) -> Path:
    """A snapshot with the collection ``bench`` of ``rows`` rows, ``group`` indexed, and ``db['x']``."""
    store = Store({"x": 1}, undo_limit=0)
    options = {"schema": {"group": "int", "name": "str"}, "index": ["group"]}
    store.write("ts", ("bench",), "create", (), options)
    for i in range(rows):
        store.write("ts", ("bench",), "upsert_meta", (i, {"group": i % GROUPS, "name": f"row{i}"}))
    snapshot.save(path, {**store.state(), "sessions": Sessions()})
    return path


def _median_us(call, count: int) -> float:
    times = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def numpy_avg_buckets(times: np.ndarray, values: np.ndarray, bucket: float) -> tuple[np.ndarray, np.ndarray]:
    """What the server computes for ``aggregation='avg'``, written with numpy in this process."""
    keys = np.floor(times / bucket)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    counts = np.diff(np.append(starts, len(values)))
    return keys[starts] * bucket, np.add.reduceat(values, starts) / counts


def timeseries_section(bench) -> None:
    """Measure and store ``bench.results["timeseries"]``."""
    quick = bench.config.mode == "quick"
    figures: dict = {}
    say("timeseries: writing a 100k-row collection")
    store = write_collection(bench.scratch / "timeseries.pkl", ROWS)
    server = _procs.start_pyzdb(store, "--fsync", "everysec")
    try:
        with Connection(server.uri, timeout=120) as conn:
            _select_vs_read(conn, figures, 100 if quick else 400)
            _madd_rate(conn, figures, 20 if quick else 100)
            _range_vs_numpy(conn, figures, 5 if quick else 15)
    finally:
        _procs.stop(server.process)
    # memory on a server of its own: the requests above leave freed buffers that new samples would reuse
    server = _procs.start_pyzdb(bench.scratch / "timeseries-memory.pkl", "--fsync", "everysec")
    try:
        with Connection(server.uri, timeout=120) as conn:
            _memory(conn, server.process.pid, figures, 100 if quick else 1_000)
    finally:
        _procs.stop(server.process)
    bench.results["timeseries"] = figures


def _select_vs_read(conn: Connection, figures: dict, count: int) -> None:
    coll = conn.db.timeseries("bench")
    assert len(coll.select({"group": 7})) == ROWS // GROUPS
    for _ in range(2):  # interleaved rounds, so that load changes hit both alike
        figures.setdefault("read_us", []).append(_median_us(lambda i: conn.db["x"]._run(), count))
        figures.setdefault("select_us", []).append(
            _median_us(lambda i: coll.select({"group": i % GROUPS}), count)
        )
    figures["read_us"] = min(figures["read_us"])
    figures["select_us"] = min(figures["select_us"])
    say(f"  select 100 of 100k rows: {figures['select_us']:.0f} us, small read {figures['read_us']:.0f} us")


def _madd_rate(conn: Connection, figures: dict, batches: int) -> None:
    coll = conn.db.timeseries("ingest")
    series = 100
    per_series = BATCH // series
    prepared = [  # built first: the figure is madd's, not this loop's
        [(s, b * per_series + i, float(i)) for s in range(series) for i in range(per_series)]
        for b in range(batches)
    ]
    started = time.perf_counter()
    for batch in prepared:
        coll.madd(batch)
    elapsed = time.perf_counter() - started
    figures["madd_samples_per_s"] = batches * BATCH / elapsed
    say(f"  madd: {figures['madd_samples_per_s']:,.0f} samples/s ({batches} batches of {BATCH})")
    coll.drop()


def _range_vs_numpy(conn: Connection, figures: dict, count: int) -> None:
    coll = conn.db.timeseries("long")
    times = np.arange(RANGE_SAMPLES, dtype=float)
    values = np.random.default_rng(1).normal(size=RANGE_SAMPLES)
    coll.insert_ts("one", (times, values))  # a (times, values) pair of arrays: checked on the server
    got = coll.range("one", aggregation="avg", bucket=60)
    expected_t, expected_v = numpy_avg_buckets(times, values, 60)
    assert len(got) == len(expected_t) and np.allclose([v for _, v in got], expected_v)
    figures["range_us"] = _median_us(lambda i: coll.range("one", aggregation="avg", bucket=60), count)
    figures["numpy_us"] = _median_us(lambda i: numpy_avg_buckets(times, values, 60), count)
    say(f"  range avg/60 over 1M: {figures['range_us']:.0f} us, numpy {figures['numpy_us']:.0f} us")
    coll.drop()


def _memory(conn: Connection, pid: int, figures: dict, series: int) -> None:
    coll = conn.db.timeseries("memory")
    coll.madd([(s, -1, 0.0) for s in range(series)])  # rows, numpy and the request path warmed up
    before = _procs.rss_kb(pid)
    per_series = 10_000
    for start in range(0, per_series, BATCH // series):
        chunk = BATCH // series
        coll.madd([(s, start + i, float(i)) for s in range(series) for i in range(chunk)])
    samples = series * per_series
    after = _procs.rss_kb(pid)
    figures["memory_samples"] = samples
    figures["bytes_per_sample"] = (after - before) * 1024 / samples
    per_sample = figures["bytes_per_sample"]
    say(f"  memory: {per_sample:.1f} bytes per sample ({samples:,} samples, {series} series)")


def targets(results: dict) -> list[dict]:
    """Issue 11's targets for this section."""
    ts = results.get("timeseries")
    if not ts:
        return []
    select_ratio = _report.ratio(ts["select_us"], ts["read_us"])
    range_limit = ts["numpy_us"] + ts["read_us"]
    range_ratio = _report.ratio(ts["range_us"], range_limit)
    return [
        _report.target(
            "select (indexed, 100 of 100k rows) p50 <= 2 x small read p50",
            select_ratio,
            2.0,
            False,
            f"{_report.fmt(select_ratio, 2)} x ({ts['select_us']:.0f} vs {ts['read_us']:.0f} us)",
        ),
        _report.target(
            "madd, batches of 10,000, --fsync everysec >= 500,000 samples/s",
            ts["madd_samples_per_s"],
            500_000,
            True,
            f"{ts['madd_samples_per_s']:,.0f} samples/s",
        ),
        _report.target(
            "range avg bucket=60 over 1M samples <= 2 x (numpy + small read)",
            range_ratio,
            2.0,
            False,
            f"{_report.fmt(range_ratio, 2)} x ({ts['range_us']:.0f} us vs numpy {ts['numpy_us']:.0f}"
            f" + read {ts['read_us']:.0f} us)",
        ),
        _report.target(
            f"memory <= 24 bytes per stored sample ({ts['memory_samples']:,} samples)",
            ts["bytes_per_sample"],
            24.0,
            False,
            f"{ts['bytes_per_sample']:.1f} bytes/sample",
        ),
    ]
