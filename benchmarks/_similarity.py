"""The ``similarity`` section of ``make bench``: ``similar`` against issue 12's targets.

Measured on a real read-write server (``--fsync everysec``), from one client in
the benchmark process, over collections written as snapshots by pyzdb's own
store code (no 100k requests to build them):

- ``similar(k=10)`` end to end on 100,000 course-like series of length 100 (a
  normal pdf plus noise, as the seed's generator makes), against a batched
  brute force of the same distance in numpy in this process (over the rows'
  FFTs, precomputed: only the query's work is timed), answers compared;
- ``similar`` end to end at 10,000 rows;
- ``insert_ts`` with 20 vantage points at 100,000 rows (the index built);
- the fraction of rows whose true distance was computed, for course-like
  data, random walks and clustered data (in this process, on the same store
  code: the server does not report it);
- other clients' small reads while one client runs ``similar`` back to back.

``--quick`` uses 20,000 rows instead of 100,000.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import _procs
import _report
import numpy as np
from _setup import say

from pyzdb import TimeSeries
from pyzdb.client import Connection
from pyzdb.server.sessions import Sessions
from pyzdb.storage import snapshot
from pyzdb.store import Store
from pyzdb.timeseries import distance as dist

T = np.arange(0.0, 1.0, 0.01)
K = 10


def course_like(rng: np.random.Generator, count: int) -> np.ndarray:
    """The seed's generator: a normal pdf of random mean and width, plus noise of random size."""
    mean, width = rng.uniform(0.3, 0.7, (count, 1)), rng.uniform(0.05, 0.4, (count, 1))
    jitter = rng.uniform(0.0, 0.2, (count, 1))
    pdf = np.exp(-0.5 * ((T - mean) / width) ** 2) / (width * np.sqrt(2 * np.pi))
    return pdf + jitter * rng.normal(size=(count, len(T)))


def random_walks(rng: np.random.Generator, count: int) -> np.ndarray:
    """Cumulative sums of normal steps."""
    return np.cumsum(rng.normal(size=(count, len(T))), axis=1)


def clustered(rng: np.random.Generator, count: int) -> np.ndarray:
    """20 random-walk centres, rows around them, inserted cluster after cluster."""
    centres = random_walks(rng, 20)
    return centres[np.sort(rng.integers(0, 20, count))] + 0.3 * rng.normal(size=(count, len(T)))


def build_store(rows: np.ndarray) -> Store:
    """A store with the collection ``sim`` (20 vantage points, the default) holding ``rows``."""
    store = Store({"x": 1}, undo_limit=0)
    store.write("ts", ("sim",), "create", (), {})
    for i, values in enumerate(rows):
        store.write("ts", ("sim",), "insert_ts", (i, TimeSeries._trusted(T.copy(), values.copy())))
    return store


def write_snapshot(path: Path, store: Store) -> Path:
    """``store`` as a server's snapshot."""
    snapshot.save(path, {**store.state(), "sessions": Sessions()})
    return path


def _median_ms(call, count: int) -> float:
    times = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def _p99_ms(times: list[float]) -> float:
    return sorted(times)[int(0.99 * (len(times) - 1))] * 1e3


def similarity_section(bench) -> None:
    """Measure and store ``bench.results["similarity"]``."""
    quick = bench.config.mode == "quick"
    rows_count = 20_000 if quick else 100_000
    figures: dict = {"rows": rows_count}
    rng = np.random.default_rng(12)
    _fractions(figures, rng, rows_count)
    rows = course_like(rng, rows_count)
    say(f"similarity: writing {rows_count:,} course-like series")
    path = write_snapshot(bench.scratch / "similarity.pkl", build_store(rows))
    server = _procs.start_pyzdb(path, "--fsync", "everysec")
    try:
        with Connection(server.uri, timeout=300) as conn:
            coll = conn.db.timeseries("sim")
            started = time.perf_counter()
            coll.vantage_points()  # the index is built on first use
            figures["build_s"] = time.perf_counter() - started
            _against_brute_force(coll, rows, rng, figures, 10 if quick else 30)
            _inserts(coll, rng, figures, 100 if quick else 300)
            _reads_meanwhile(conn, server.uri, figures, 2.0 if quick else 5.0)
    finally:
        _procs.stop(server.process)
    small = course_like(rng, 10_000)
    server = _procs.start_pyzdb(write_snapshot(bench.scratch / "similarity-10k.pkl", build_store(small)))
    try:
        with Connection(server.uri, timeout=120) as conn:
            coll = conn.db.timeseries("sim")
            coll.vantage_points()
            queries = course_like(rng, 50)
            figures["similar_10k_ms"] = _median_ms(lambda i: coll.similar(TimeSeries(T, queries[i]), K), 50)
            say(f"  similar at 10k rows: {figures['similar_10k_ms']:.1f} ms")
    finally:
        _procs.stop(server.process)
    bench.results["similarity"] = figures


def _fractions(figures: dict, rng: np.random.Generator, count: int) -> None:
    """The share of rows whose true distance ``similar(k=10)`` computed, per kind of data (in process)."""
    for name, make in (("course", course_like), ("walks", random_walks), ("clustered", clustered)):
        rows = make(rng, count)
        store = build_store(rows)
        coll = store.timeseries.collections["sim"]
        index = coll.similarity()
        shares = []
        for i in rng.integers(0, count, 10).tolist():
            query = rows[i] + 0.1 * rng.normal(size=len(T))
            store.read("ts", ("sim",), "similar", (TimeSeries._trusted(T.copy(), query), K))
            shares.append(index.last_computed / count)
        figures[f"computed_{name}"] = statistics.median(shares)
        say(f"  {name}: {figures[f'computed_{name}']:.1%} of the true distances computed")


def _against_brute_force(coll, rows: np.ndarray, rng, figures: dict, count: int) -> None:
    prepared = (rows - rows.mean(axis=1, keepdims=True)) / rows.std(axis=1, keepdims=True)
    ffts, selfs = dist.transform(prepared)
    queries = course_like(rng, count)

    def brute(i: int) -> list:
        q = dist.prepared(T, queries[i], None)
        q_fft, q_self = dist.transform(q[None, :])
        found = dist.distances(ffts, selfs, q_fft[0], float(q_self[0]), len(T))
        best = np.argpartition(found, K)[: K + 1]
        return sorted(((int(i), float(found[i])) for i in best), key=lambda p: (p[1], p[0]))[:K]

    answers = {}
    figures["similar_ms"] = _median_ms(
        lambda i: answers.__setitem__(i, coll.similar(TimeSeries(T, queries[i]), K)), count
    )
    figures["brute_ms"] = _median_ms(brute, count)
    figures["identical"] = all([pk for pk, _ in answers[i]] == [pk for pk, _ in brute(i)] for i in answers)
    say(
        f"  similar k=10 over {len(rows):,}: {figures['similar_ms']:.1f} ms, numpy brute force"
        f" {figures['brute_ms']:.1f} ms, identical answers: {figures['identical']}"
    )


def _inserts(coll, rng, figures: dict, count: int) -> None:
    new = course_like(rng, count)
    figures["insert_ms"] = _median_ms(lambda i: coll.insert_ts(f"new{i}", TimeSeries(T, new[i])), count)
    started = time.perf_counter()
    coll.similar(TimeSeries(T, new[0]), K)  # the first search refreshes the rows inserted
    figures["similar_after_inserts_ms"] = (time.perf_counter() - started) * 1e3
    say(
        f"  insert_ts at 20 vantage points: {figures['insert_ms']:.2f} ms;"
        f" the next similar (refreshing {count} rows): {figures['similar_after_inserts_ms']:.1f} ms"
    )


_HAMMER = """
import sys, time
import numpy as np
from pyzdb import TimeSeries
from pyzdb.client import Connection
t = np.arange(0.0, 1.0, 0.01)
rng = np.random.default_rng(1)
with Connection(sys.argv[1], timeout=60) as conn:
    coll = conn.db.timeseries("sim")
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        coll.similar(TimeSeries(t, np.sin(t * rng.uniform(1, 20)) + rng.normal(size=100)), 10)
"""


def _reads_meanwhile(conn: Connection, uri: str, figures: dict, seconds: float) -> None:
    """p99 of small reads alone, then while another process runs ``similar`` back to back."""

    def reads() -> list[float]:
        times, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            conn.db["x"]._run()
            times.append(time.perf_counter() - started)
        return times

    figures["read_p99_ms"] = _p99_ms(reads())
    hammer = subprocess.Popen([sys.executable, "-c", _HAMMER, uri, str(seconds + 2)], env=_procs.env())
    try:
        time.sleep(1.0)  # its connection up and its queries running
        figures["read_p99_busy_ms"] = _p99_ms(reads())
    finally:
        hammer.wait(seconds + 30)
    say(
        f"  small read p99: {figures['read_p99_ms']:.2f} ms alone,"
        f" {figures['read_p99_busy_ms']:.2f} ms while similar runs back to back"
    )


def targets(results: dict) -> list[dict]:
    """Issue 12's targets for this section."""
    sim = results.get("similarity")
    if not sim:
        return []
    ratio = _report.ratio(sim["similar_ms"], sim["brute_ms"])
    stall = _report.ratio(sim["read_p99_busy_ms"], sim["read_p99_ms"])
    rows = f"{sim['rows']:,}"
    return [
        _report.target(
            f"similar k=10, N={rows}, median <= 0.1 x numpy brute force, identical answers",
            ratio if sim["identical"] else None,
            0.1,
            False,
            f"{_report.fmt(ratio, 3)} x ({sim['similar_ms']:.1f} vs {sim['brute_ms']:.1f} ms);"
            f" computed: course {sim['computed_course']:.1%}, walks {sim['computed_walks']:.1%},"
            f" clustered {sim['computed_clustered']:.1%}",
        ),
        _report.target(
            "similar at N=10,000: median <= 20 ms",
            sim["similar_10k_ms"],
            20.0,
            False,
            f"{sim['similar_10k_ms']:.1f} ms",
        ),
        _report.target(
            f"insert_ts, 20 vantage points, N={rows}: median <= 2 ms",
            sim["insert_ms"],
            2.0,
            False,
            f"{sim['insert_ms']:.2f} ms (the next search refreshes the rows:"
            f" {sim['similar_after_inserts_ms']:.1f} ms)",
        ),
        _report.target(
            "small reads p99 while similar runs back to back <= 2 x alone",
            stall,
            2.0,
            False,
            f"{_report.fmt(stall, 2)} x ({sim['read_p99_busy_ms']:.2f} vs {sim['read_p99_ms']:.2f} ms)",
        ),
    ]
