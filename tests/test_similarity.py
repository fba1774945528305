"""Similarity search (SPEC §9) against real servers: exact answers, the vantage-point index, bad input.

The brute force every answer is compared with is ``augmented_select('corr')``:
every distance, row by row, by the same formula (equal to the last bit).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ServerProcess, wait_until
from pyzdb import TimeSeries, errors
from pyzdb.client import Connection
from pyzdb.timeseries.query import pk_key

T = np.arange(32, dtype=float)


def brute_force(coll, query, k, meta=None, include_self=False, skip=()):
    """The k nearest by computing every distance; ``skip``: rows without a distance (constant ones)."""
    left_out = set(skip) | ({query} if type(query) in (str, int) and not include_self else set())
    found = coll.augmented_select("corr", "d", arg=query, meta=_without(meta, skip))
    found = {pk: r for pk, r in found.items() if pk not in left_out}
    pairs = sorted(((pk, r["d"]) for pk, r in found.items()), key=lambda p: (p[1], pk_key(p[0])))
    return pairs[:k]


def _without(meta, skip):
    """``meta`` AND-ed with ``pk not in skip`` (a second condition on pk goes through ``$and`` of ops)."""
    if not skip:
        return meta
    conditions = dict(meta or {})
    pk = dict(conditions.get("pk", {})) if type(conditions.get("pk")) is dict else {}
    if "pk" in conditions and type(conditions["pk"]) is not dict:
        pk["=="] = conditions["pk"]
    pk["not in"] = sorted(set(skip) | set(pk.get("not in", [])), key=pk_key)
    conditions["pk"] = pk
    return conditions


def clustered(rng, count, centers=5, spread=0.05):
    """Rows around a few random-walk centers, cluster after cluster (the seed's pruning failed on these)."""
    middle = np.cumsum(rng.normal(size=(centers, len(T))), axis=1)
    which = np.sort(rng.integers(0, centers, count))
    return middle[which] + spread * rng.normal(size=(count, len(T)))


def fill(coll, rows, levels=("A", "B", "C"), start=0):
    """Insert the rows, pks ``s0, 1, s2, 3, ...`` from ``start``, each with a level."""
    for i, values in enumerate(rows, start):
        pk = i if i % 2 else f"s{i}"
        coll.insert_ts(pk, TimeSeries(T, values))
        coll.upsert_meta(pk, {"level": levels[i % len(levels)]})


def test_spec_example_and_include_self(db):
    ts = db.timeseries("stars", index=["level"], vantage_points=3)
    t = np.linspace(0, 6, 40)
    for i in range(20):
        ts.insert_ts(f"ts-{i}", TimeSeries(t, np.sin(t + i / 5) + 0.01 * i * t))
        ts.upsert_meta(f"ts-{i}", {"level": "ABC"[i % 3]})
    found = ts.similar("ts-12", k=5)
    assert found == brute_force(ts, "ts-12", 5)
    assert all(type(pair) is tuple for pair in found) and "ts-12" not in dict(found)
    assert [pk for pk, _ in found[:2]] in (["ts-11", "ts-13"], ["ts-13", "ts-11"])
    assert ts.similar("ts-12", k=1, include_self=True) == [("ts-12", pytest.approx(0.0, abs=1e-6))]
    shipped = TimeSeries(t, np.sin(t + 12 / 5) + 0.12 * t)
    assert ts.similar(shipped, k=5) == brute_force(ts, shipped, 5)
    assert ts.similar((t, np.sin(t)), k=2) == brute_force(ts, TimeSeries(t, np.sin(t)), 2), "numpy pair"
    within = ts.similar("ts-12", k=5, meta={"level": {"in": ["A", "B"]}})
    assert within == brute_force(ts, "ts-12", 5, meta={"level": {"in": ["A", "B"]}})
    assert all(ts.get(pk)["level"] in "AB" for pk, _ in within)
    assert ts.similar("ts-12", k=100) == brute_force(ts, "ts-12", 100), "k above the rows: all of them"
    assert len(ts.similar("ts-12", k=100)) == 19
    assert ts.distance("ts-12", "ts-13") == pytest.approx(dict(found)["ts-13"])
    assert ts.distance("ts-12", shipped) == pytest.approx(ts.distance(shipped, "ts-12"))


def test_large_clustered_collection_is_exact_at_every_k(db):
    """Past the brute-force threshold (512 rows), where the bounds prune."""
    coll = db.timeseries("big", index=["level"], vantage_points=8)
    rng = np.random.default_rng(7)
    rows = clustered(rng, 1500)
    fill(coll, rows)
    pks = [i if i % 2 else f"s{i}" for i in range(1500)]
    for query in (pks[0], pks[700], TimeSeries(T, rows[3] + 0.5 * rng.normal(size=len(T)))):
        for k in (1, 10, 50, 300):
            assert coll.similar(query, k) == brute_force(coll, query, k), (query, k)
        meta = {"level": "B"}
        assert coll.similar(query, 50, meta=meta) == brute_force(coll, query, 50, meta=meta)


def test_the_index_follows_every_write(db, conn):
    coll = db.timeseries("w", vantage_points=4)
    rng = np.random.default_rng(3)
    rows = np.cumsum(rng.normal(size=(30, len(T))), axis=1)
    for i, values in enumerate(rows):
        coll.insert_ts(f"r{i}", TimeSeries(T, values))
    points = coll.vantage_points()
    assert len(points) == 4 and len(set(points)) == 4 and set(points) <= {f"r{i}" for i in range(30)}
    coll.insert_ts("twin", TimeSeries(T, rows[5] * 3 + 1))  # standardized: the same as r5
    assert coll.similar("r5", k=1)[0] == ("twin", pytest.approx(0.0, abs=1e-6)), "found by the next query"
    gone = points[0]
    coll.delete_ts(gone)
    after = coll.vantage_points()
    assert gone not in after and len(after) == 4, "a deleted vantage point is replaced"
    assert gone not in dict(coll.similar("r1", k=40))
    db.undo()
    assert gone in dict(coll.similar("r1", k=40)), "undo puts the row back in the index"
    db.redo()
    assert gone not in dict(coll.similar("r1", k=40))
    db["tree"] = 1  # writes of the tree between the collection's: undo steps stay aligned
    coll.delete_ts("twin")
    db["tree"] = 2
    db.undo()
    assert coll.similar("r5", k=1)[0][0] != "twin"
    db.undo()
    assert coll.similar("r5", k=1)[0][0] == "twin", "the second undo reverts the delete"
    assert db["tree"]._run() == 1
    coll.upsert_meta("twin", {"x": 1})  # metadata only: the series stays indexed
    assert coll.similar("r5", k=1)[0][0] == "twin"
    coll.add("twin", 100.0, 5.0)  # one more sample: 33 samples, no longer comparable with r5
    with pytest.raises(ValueError, match="pk 'twin': series of 33 and 32 samples"):
        coll.similar("r5", k=1)
    with pytest.raises(ValueError, match="'twin'"):
        coll.similar("r5", k=1, meta={"pk": {"!=": "r0"}})
    assert coll.similar("r5", k=1, meta={"pk": {"!=": "twin"}}) == brute_force(
        coll, "r5", 1, meta={"pk": {"!=": "twin"}}
    )
    db.undo()
    assert coll.similar("r5", k=1)[0][0] == "twin", "undoing the append gives back the old series"
    assert coll.similar("r7", k=31) == brute_force(coll, "r7", 31)


def test_index_survives_restart_replay_and_reaches_replicas(tmp_path):
    server = ServerProcess(tmp_path / "db.pkl").start()
    replica = None
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            coll = conn.db.timeseries("c", index=["level"], vantage_points=5)
            rng = np.random.default_rng(11)
            rows = clustered(rng, 60, centers=3)
            fill(coll, rows[:40])
            conn.db.save()
            fill_late = rows[40:]
            for i, values in enumerate(fill_late):
                coll.insert_ts(f"late{i}", TimeSeries(T, values))  # journaled only
            coll.delete_ts(coll.vantage_points()[0])
            expected = brute_force(coll, "s2", 10)
            assert coll.similar("s2", k=10) == expected
            server.kill()  # SIGKILL: the journal is replayed on start
            server.start()
            coll = conn.db.timeseries("c")
            assert coll.similar("s2", k=10) == expected
            assert len(coll.vantage_points()) == 5
            replica = ServerProcess(server.db, server.port_base, read_only=True).start()
            with Connection(server.read_uri, timeout=10) as reader:
                ro = reader.db.timeseries("c")
                wait_until(lambda: ro.similar("s2", k=10) == expected)
                assert len(ro.vantage_points()) == 5
                coll.insert_ts("new", TimeSeries(T, rows[2] + 1e-3 * rng.normal(size=len(T))))
                wait_until(lambda: ro.similar("s2", k=1)[0][0] == "new", timeout=10)
                assert ro.similar("s2", k=10) == brute_force(coll, "s2", 10)
    finally:
        if replica is not None:
            replica.stop()
        server.stop()


def test_a_grid_resamples_series_of_any_length(db):
    coll = db.timeseries("g", grid=(0, 10, 64), vantage_points=2)
    rng = np.random.default_rng(5)
    for i in range(12):
        t = np.sort(rng.uniform(-1, 11, 20 + 7 * i))
        coll.insert_ts(i, TimeSeries(t, np.sin(t * (1 + i / 10))))
    q = TimeSeries([0, 5, 10], [0.0, 1.0, 0.0])
    assert coll.similar(q, k=12) == brute_force(coll, q, 12)
    assert coll.similar(3, k=4) == brute_force(coll, 3, 4)


def test_bad_input_gets_the_spec_error_and_changes_nothing(db, conn):
    coll = db.timeseries("bad", vantage_points=2)
    for i in range(6):
        coll.insert_ts(f"r{i}", TimeSeries(T, np.sin(T / (i + 2))))
    coll.insert_ts("flat", TimeSeries(T, np.ones(len(T))))
    coll.insert_ts("short", TimeSeries(T[:10], np.sin(T[:10])))
    coll.upsert_meta("empty", {"x": 1})
    nan_values = np.sin(T)
    nan_values[3] = math.nan
    coll.insert_ts("nan", TimeSeries(T, nan_values))
    state = (len(coll), coll.vantage_points())
    fine = coll.similar("r0", k=3, meta={"pk": {"!=": "short"}})
    everything = coll.similar("r0", 9, meta={"pk": {"not in": ["short"]}})
    assert [pk for pk, _ in everything] == [
        pk for pk, _ in brute_force(coll, "r0", 9, skip=["flat", "nan", "short"])
    ]
    assert {"flat", "nan", "empty"}.isdisjoint(pk for pk, _ in everything), "rows without a distance: skipped"
    with pytest.raises(ValueError, match="pk 'flat': a constant series has no distance"):
        coll.distance("flat", "r0")
    with pytest.raises(ValueError, match="the query: a constant series has no distance"):
        coll.similar(TimeSeries(T, np.full(len(T), 2.0)))
    with pytest.raises(ValueError, match="pk 'flat': a constant series"):
        coll.similar("flat")
    with pytest.raises(ValueError, match="pk 'short': series of 10 and 32 samples cannot be compared"):
        coll.similar("r0", k=3)
    with pytest.raises(ValueError, match="pk 'short' has 10 samples and .*pk 'r0' 32"):
        coll.distance("short", "r0")
    with pytest.raises(KeyError, match="no pk 'nope'"):
        coll.similar("nope")
    with pytest.raises(KeyError, match="no pk 'nope'"):
        coll.distance("r0", "nope")
    for k in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="k must be an int >= 1"):
            coll.similar("r0", k=k, meta={"pk": {"!=": "short"}})
    for query in ([1, 2, 3], {"a": 1}, None, 2.5):
        with pytest.raises(TypeError, match="the query must be a pk or a series"):
            coll.similar(query)
    with pytest.raises(ValueError, match="the query: TimeSeries times must be strictly increasing"):
        coll.similar(([0, 0, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="the query: a series holding nan"):
        coll.similar(TimeSeries(T, nan_values))
    with pytest.raises(ValueError, match="pk 'nan': a series holding nan"):
        coll.distance("r1", "nan")
    with pytest.raises(ValueError, match="pk 'empty' has no series"):
        coll.similar("empty")
    with pytest.raises(KeyError, match="no field"):
        db.timeseries("typed", schema={"a": int}).similar(TimeSeries(T, np.sin(T)), meta={"b": 1})
    with pytest.raises(TypeError, match="include_self"):
        coll.similar("r0", include_self="yes")
    with pytest.raises(errors.ServerKeyError, match="no time-series collection 'nope'"):
        conn.call("ts", ("nope",), "similar", ("r0",), {})
    assert (len(coll), coll.vantage_points()) == state
    assert coll.similar("r0", k=3, meta={"pk": {"!=": "short"}}) == fine


@pytest.fixture(scope="module")
def shared_db(shared):
    with Connection(shared.write_uri, timeout=30) as connection:
        yield connection.db


_examples = iter(range(10**6))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["clusters", "walks", "noise"]),
    count=st.integers(520, 900),
    vantage=st.integers(1, 25),
    k=st.integers(1, 900),
    level=st.sampled_from([None, "A", ["A", "B"]]),
)
def test_similar_is_brute_force_on_a_server(shared_db, seed, kind, count, vantage, k, level):
    rng = np.random.default_rng(seed)
    if kind == "clusters":
        rows = clustered(rng, count, centers=int(rng.integers(1, 8)), spread=0.05)
    elif kind == "walks":
        rows = np.cumsum(rng.normal(size=(count, len(T))), axis=1)
    else:
        rows = rng.normal(size=(count, len(T)))
    coll = shared_db.timeseries(f"h{next(_examples)}", index=["level"], vantage_points=vantage)
    fill(coll, rows[: count // 2])
    coll.similar("s0", 1)  # the index is built here; the other rows arrive as writes
    fill(coll, rows[count // 2 :], start=count // 2)
    meta = None if level is None else {"level": {"in": level} if type(level) is list else level}
    for query in ("s0", TimeSeries(T, rows[1] + rng.normal(size=len(T)))):
        assert coll.similar(query, k, meta=meta) == brute_force(coll, query, k, meta=meta)
    coll.drop()


# --- off the request loop ------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _long_collection(db, rows=1500, length=4096):
    """A collection whose first search (the index build: 20 batches over every row) takes seconds."""
    coll = db.timeseries("long")
    rng = np.random.default_rng(2)
    t = np.arange(length, dtype=float)
    for i in range(rows):
        coll.insert_ts(i, TimeSeries(t, rng.normal(size=length)))
    return coll, TimeSeries(t, rng.normal(size=length))


def test_a_long_query_does_not_stall_other_clients(server, db):
    coll, query = _long_collection(db)
    db["x"] = 1
    done = threading.Event()
    answer = {}

    def search() -> None:
        with Connection(server.write_uri, timeout=120) as other:
            answer["found"] = other.db.timeseries("long").similar(query, k=3)
        done.set()

    searcher = threading.Thread(target=search)
    searcher.start()
    try:
        reads_meanwhile = 0
        for _ in range(100_000):  # bounded; the search ends first
            if done.is_set():
                break
            assert db["x"]._run() == 1
            db["x"] = 1  # a write too: the worker receives it, in order
            reads_meanwhile += 1
    finally:
        searcher.join(150)
    assert done.is_set() and len(answer["found"]) == 3
    assert reads_meanwhile >= 20, "reads and writes were served while the query ran"
    assert answer["found"] == brute_force(coll, query, 3)


def test_a_dead_worker_is_restarted_and_its_query_gets_a_clear_error(server, db):
    coll, query = _long_collection(db)
    (worker,) = _children(server.pid)
    failed = {}

    def search() -> None:
        with Connection(server.write_uri, timeout=120) as other:
            try:
                other.db.timeseries("long").similar(query, k=3)
            except errors.PyzdbError as exc:
                failed["error"] = exc

    searcher = threading.Thread(target=search)
    searcher.start()
    try:
        time.sleep(0.5)  # the query is in the worker, building the index
        os.kill(worker, signal.SIGKILL)
    finally:
        searcher.join(150)
    assert isinstance(failed.get("error"), errors.InternalError)
    assert "similarity worker stopped while answering this query" in str(failed["error"])
    assert len(coll) == 1500, "the server goes on"
    wait_until(lambda: len(_children(server.pid)) == 1 and _children(server.pid) != [worker])
    coll.insert_ts("late", TimeSeries(query.times, query.values * 2 + 1))
    assert coll.similar(query, k=1) == [("late", pytest.approx(0.0, abs=1e-6))], "a fresh worker, up to date"
    (idle,) = _children(server.pid)
    os.kill(idle, signal.SIGKILL)  # idle this time: replaced before the next query needs it
    wait_until(lambda: len(_children(server.pid)) == 1 and _children(server.pid) != [idle])
    coll.delete_ts("late")
    assert coll.similar(query, k=2) == brute_force(coll, query, 2)


def test_the_worker_dies_with_the_server(tmp_path):
    server = ServerProcess(tmp_path / "db.pkl").start()
    try:
        (worker,) = _children(server.pid)
        server.kill()
        wait_until(lambda: not Path(f"/proc/{worker}").exists() or _zombie(worker), timeout=10)
        server.start()  # the store's lock is free: no orphan holds it
        with Connection(server.write_uri, timeout=10) as conn:
            coll = conn.db.timeseries("c")
            coll.insert_ts("a", TimeSeries(T, np.sin(T)))
            coll.insert_ts("b", TimeSeries(T, np.cos(T)))
            assert [pk for pk, _ in coll.similar("a", k=1)] == ["b"]
    finally:
        server.stop()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_exec_gets_a_fresh_worker(tmp_path):
    """exec may change the store without the journal: the worker is replaced by a copy of the new store."""
    server = ServerProcess(tmp_path / "db.pkl", None, "--allow-exec").start()
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            coll = conn.db.timeseries("c")
            coll.insert_ts("a", TimeSeries(T, np.sin(T)))
            coll.insert_ts("b", TimeSeries(T, np.cos(T)))
            (before,) = _children(server.pid)
            assert conn.call("exec", args=("db['x'] = 1",)) == ""
            wait_until(lambda: len(_children(server.pid)) == 1 and _children(server.pid) != [before])
            assert [pk for pk, _ in coll.similar("a", k=1)] == ["b"]
            assert conn.db["x"]._run() == 1
    finally:
        server.stop()
