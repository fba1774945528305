"""Samples of time-series collections (SPEC §8) on real servers: add, madd, duplicates, retention, ranges."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from helpers import ServerProcess
from pyzdb import TimeSeries, errors
from pyzdb.client import Connection
from pyzdb.timeseries.calls import AGGREGATIONS

NUMPY = {
    "avg": np.mean,
    "sum": np.sum,
    "min": np.min,
    "max": np.max,
    "range": np.ptp,
    "count": len,
    "first": lambda x: x[0],
    "last": lambda x: x[-1],
    "std.p": np.std,
    "std.s": lambda x: np.std(x, ddof=1),
    "var.p": np.var,
    "var.s": lambda x: np.var(x, ddof=1),
}


def _numpy_buckets(times, values, aggregation, bucket):
    """The reference: each bucket's samples gathered one by one, aggregated by numpy."""
    groups: dict[float, list[float]] = {}
    for t, v in zip(times, values, strict=True):
        groups.setdefault(math.floor(t / bucket) * bucket, []).append(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # std.s of one sample: nan, as numpy says
        return [(start, float(NUMPY[aggregation](np.array(vs)))) for start, vs in sorted(groups.items())]


def _assert_samples_close(got, expected):
    assert [t for t, _ in got] == pytest.approx([t for t, _ in expected])
    np.testing.assert_allclose(
        [v for _, v in got], [v for _, v in expected], rtol=1e-9, atol=1e-12, equal_nan=True
    )


# --- add and madd ------------------------------------------------------------------------------


def test_add_keeps_time_order_and_creates_the_row(db):
    coll = db.timeseries("s")
    coll.add("p", 5, 1.0)
    coll.add("p", 1, 2.0)
    coll.add("p", 3, 3)
    assert coll.range("p") == [(1.0, 2.0), (3.0, 3.0), (5.0, 1.0)]
    coll.upsert_meta("q", {"x": 1})
    coll.add("q", 0, 4.0)  # a row made by upsert_meta gets its series
    assert coll.get("q") == {"pk": "q", "ts": TimeSeries([0], [4.0]), "x": 1}
    with pytest.raises(ValueError, match="'s', pk 'p': v\\[0\\] is 'x', not a number"):
        coll.add("p", 6, "x")
    with pytest.raises(ValueError, match="'s', pk 'p': time inf is not a finite number"):
        coll.add("p", math.inf, 1.0)
    with pytest.raises(TypeError, match="'s': a pk must be a str or an int"):
        coll.add(None, 6, 1.0)
    assert coll.range("p") == [(1.0, 2.0), (3.0, 3.0), (5.0, 1.0)]


def test_madd_many_rows_in_one_request(db):
    coll = db.timeseries("s")
    coll.insert_ts("a", TimeSeries([0, 1], [0.0, 1.0]))
    coll.madd([("a", 3, 3.0), ("b", 1, 10.0), ("a", 2, 2.0), ("b", 0, 9.0)])
    assert coll.range("a") == [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
    assert coll.range("b") == [(0.0, 9.0), (1.0, 10.0)]
    coll.madd([])
    assert len(coll) == 2


def test_madd_is_all_or_nothing(db):
    coll = db.timeseries("s", duplicate_policy="block")
    coll.insert_ts("a", TimeSeries([0], [0.0]))
    good = [(f"k{i % 50}", i, float(i)) for i in range(1, 5000)]
    for bad, words in [
        ((f"k{7}", 2500.5, "x"), r"sample 4999 is|values\[4999\] is 'x'"),
        ((1.5, 1, 1.0), "sample 4999 has a pk of type float"),
        (("k3", math.nan, 1.0), "sample 4999 \\(pk 'k3'\\) has time nan"),
        (("a", 0, 5.0), "pk 'a'.*a sample at time 0.0 exists"),
        (("k1", 1, 5.0), "pk 'k1'.*two samples at time 1.0"),
    ]:
        with pytest.raises(ValueError if bad[0] != 1.5 else TypeError, match=words):
            coll.madd([*good, bad])
        assert len(coll) == 1 and coll.range("a") == [(0.0, 0.0)], f"{bad} changed the store"
    with pytest.raises(ValueError, match="sample 1 is \\('k', 1\\), not \\(pk, t, v\\)"):
        coll.madd([("k", 1, 1.0), ("k", 1)])
    coll.madd(good)
    assert len(coll) == 51 and len(coll.range("k7")) == 100


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("last", [(1.0, 30.0), (2.0, 5.0)]),
        ("first", [(1.0, 10.0), (2.0, 5.0)]),
        ("min", [(1.0, 10.0), (2.0, 5.0)]),
        ("max", [(1.0, 30.0), (2.0, 5.0)]),
        ("sum", [(1.0, 60.0), (2.0, 5.0)]),
    ],
)
def test_duplicate_policies(db, policy, expected):
    coll = db.timeseries("s", duplicate_policy=policy)
    coll.add("p", 1, 10.0)
    coll.madd([("p", 1, 20.0), ("p", 2, 5.0), ("p", 1, 30.0)])  # an existing time, and twice in one batch
    assert coll.range("p") == expected


def test_duplicate_policy_block(db):
    coll = db.timeseries("s", duplicate_policy="block")
    coll.add("p", 1, 10.0)
    with pytest.raises(
        ValueError, match="'s', pk 'p': a sample at time 1.0 exists \\(duplicate_policy 'block'\\)"
    ):
        coll.add("p", 1, 11.0)
    assert coll.range("p") == [(1.0, 10.0)]


def test_retention_drops_old_samples(db):
    coll = db.timeseries("s", retention=10)
    coll.insert_ts("p", TimeSeries(range(0, 30, 5), [float(i) for i in range(6)]))  # 0 .. 25
    assert [t for t, _ in coll.range("p")] == [15.0, 20.0, 25.0]
    coll.add("p", 32, 9.0)
    assert [t for t, _ in coll.range("p")] == [25.0, 32.0]
    coll.add("p", 1, 1.0)  # older than the window: dropped at once
    assert [t for t, _ in coll.range("p")] == [25.0, 32.0]
    coll.madd([("p", 50, 1.0), ("q", 0, 1.0), ("q", 100, 1.0)])
    assert coll.range("p") == [(50.0, 1.0)] and coll.range("q") == [(100.0, 1.0)]


def test_sample_writes_are_one_undo_step_each(db):
    coll = db.timeseries("s", retention=10, duplicate_policy="sum")
    coll.insert_ts("p", TimeSeries([0, 5, 10], [1.0, 2.0, 3.0]))
    before = coll.range("p")
    coll.madd([("p", 10, 1.0), ("p", 18, 4.0), ("new", 1, 1.0)])  # sums, appends, drops 0 and 5, a new row
    after = coll.range("p")
    assert after == [(10.0, 4.0), (18.0, 4.0)]
    db.undo()
    assert coll.range("p") == before and "new" not in coll
    db.redo()
    assert coll.range("p") == after and coll.range("new") == [(1.0, 1.0)]
    coll.add("p", 19, 1.0)
    db.undo()
    assert coll.range("p") == after


def test_long_series_grow_one_sample_at_a_time(db):
    coll = db.timeseries("s")
    for i in range(300):
        coll.add("p", i, float(i))
    assert coll.range("p") == [(float(i), float(i)) for i in range(300)]
    for _ in range(100):
        db.undo()
    assert coll.range("p") == [(float(i), float(i)) for i in range(200)]
    for _ in range(50):
        db.redo()
    db.undo()
    db.redo()
    assert coll.range("p") == [(float(i), float(i)) for i in range(250)]


def test_samples_survive_sigkill_and_save(tmp_path):
    server = ServerProcess(tmp_path / "db.pkl").start()
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            coll = conn.db.timeseries("s", retention=100)
            coll.madd([("p", t, float(t)) for t in range(50)])
            conn.db.save()
            coll.madd([("p", t, float(t)) for t in range(50, 200)])  # journaled; keeps t >= 199 - 100
            coll.add("p", 150, -1.0)
            server.kill()
            server.start()
            expected = [(float(t), -1.0 if t == 150 else float(t)) for t in range(99, 200)]
            assert coll.range("p") == expected
            conn.db.undo()
            conn.db.undo()
            assert coll.range("p") == [(float(t), float(t)) for t in range(50)]
    finally:
        server.stop()


def test_undo_and_redo_of_appends_survive_a_snapshot(tmp_path):
    server = ServerProcess(tmp_path / "db.pkl").start()
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            coll = conn.db.timeseries("s")
            coll.madd([("p", t, float(t)) for t in range(10)])
            coll.madd([("p", t, float(t)) for t in range(10, 20)])  # an append: its samples held once
            conn.db.undo()
            conn.db.redo()
            conn.db.undo()
            assert server.stop() == 0  # the final snapshot pickles the undone step
            server.start()
            assert coll.range("p") == [(float(t), float(t)) for t in range(10)]
            conn.db.redo()
            assert coll.range("p") == [(float(t), float(t)) for t in range(20)]
            conn.db.save()
            server.kill()
            server.start()
            conn.db.undo()
            assert coll.range("p") == [(float(t), float(t)) for t in range(10)]
    finally:
        server.stop()


# --- range and mrange -----------------------------------------------------------------------------


@pytest.fixture
def walk(db):
    """A collection with one random walk of 5,000 samples at irregular times."""
    rng = np.random.default_rng(7)
    times = np.cumsum(rng.integers(1, 30, 5000)).astype(float)
    values = np.cumsum(rng.normal(size=5000))
    coll = db.timeseries("walk")
    coll.insert_ts("w", TimeSeries(times, values))
    return coll, times, values


def test_range_bounds(walk):
    coll, times, values = walk
    assert coll.range("w") == list(zip(times.tolist(), values.tolist(), strict=True))
    start, end = times[10], times[20]
    assert coll.range("w", start, end) == list(
        zip(times[10:21].tolist(), values[10:21].tolist(), strict=True)
    )
    assert coll.range("w", "-", times[2]) == list(zip(times[:3].tolist(), values[:3].tolist(), strict=True))
    assert coll.range("w", times[-1] + 1) == []


def test_every_aggregation_of_the_spec_is_offered():
    """The server's aggregations are exactly the ones this file checks against numpy."""
    assert set(AGGREGATIONS) == set(NUMPY) and len(AGGREGATIONS) == 12


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_range_aggregations_in_buckets_match_numpy(walk, aggregation):
    coll, times, values = walk
    for bucket in (60, 1000, 7.5):
        got = coll.range("w", aggregation=aggregation, bucket=bucket)
        _assert_samples_close(got, _numpy_buckets(times, values, aggregation, bucket))
    inside = (times >= 5000) & (times <= 20000)
    got = coll.range("w", 5000, 20000, aggregation=aggregation, bucket=600)
    _assert_samples_close(got, _numpy_buckets(times[inside], values[inside], aggregation, 600))


def test_buckets_start_at_multiples_and_empty_ones_are_left_out(db):
    coll = db.timeseries("s")
    coll.insert_ts("p", TimeSeries([1, 2, 9, 31, 32], [1.0, 2.0, 3.0, 4.0, 5.0]))
    assert coll.range("p", aggregation="sum", bucket=10) == [(0.0, 6.0), (30.0, 9.0)]
    assert coll.range("p", aggregation="count") == [(1.0, 5.0)], "no bucket: one, at the first sample"


def test_range_errors(db):
    coll = db.timeseries("s")
    coll.upsert_meta("empty", {})
    assert coll.range("empty") == [] and coll.range("empty", aggregation="avg", bucket=5) == []
    with pytest.raises(KeyError, match="'s' has no pk 'nope'"):
        coll.range("nope")
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        coll.range("empty", aggregation="mean", bucket=5)
    with pytest.raises(ValueError, match="bucket must be a number > 0"):
        coll.range("empty", aggregation="avg", bucket=0)
    with pytest.raises(ValueError, match="a bucket needs an aggregation"):
        coll.range("empty", bucket=5)
    with pytest.raises(TypeError, match="range start must be a number or '-'"):
        coll.range("empty", "+")


@pytest.fixture
def farm(db):
    """Six series over two servers and three metrics, on a shared grid of times with gaps."""
    coll = db.timeseries("farm", schema={"server": str, "metric": str}, index=["server"])
    rng = np.random.default_rng(3)
    data = {}
    for s in ("s1", "s2"):
        for m in ("cpu", "mem", "io"):
            pk = f"{s}.{m}"
            times = np.sort(rng.choice(np.arange(0, 400, 10), 25, replace=False)).astype(float)
            values = rng.normal(size=25)
            coll.insert_ts(pk, TimeSeries(times, values))
            coll.upsert_meta(pk, {"server": s, "metric": m})
            data[pk] = (times, values)
    coll.upsert_meta("lonely", {"metric": "cpu"})  # no series, no server
    return coll, data


def _numpy_reduce(members: list, reduce: str) -> list:
    by_time: dict[float, list[float]] = {}
    for times, values in members:
        for t, v in zip(times.tolist(), values.tolist(), strict=True):
            by_time.setdefault(t, []).append(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [(t, float(NUMPY[reduce](np.array(vs)))) for t, vs in sorted(by_time.items())]


def test_mrange_selects_rows_by_meta(farm):
    coll, data = farm
    got = coll.mrange("-", "+", meta={"server": "s1"})
    assert list(got) == ["s1.cpu", "s1.io", "s1.mem"]
    times, values = data["s1.cpu"]
    assert got["s1.cpu"] == list(zip(times.tolist(), values.tolist(), strict=True))
    got = coll.mrange(100, 200, meta={"metric": "cpu"}, aggregation="max", bucket=50)
    assert set(got) == {"s1.cpu", "s2.cpu", "lonely"} and got["lonely"] == []
    inside = (times >= 100) & (times <= 200)
    _assert_samples_close(got["s1.cpu"], _numpy_buckets(times[inside], values[inside], "max", 50))


@pytest.mark.parametrize("reduce", ["sum", "avg", "max", "count", "std.s"])
def test_mrange_group_by_one_field_and_several(farm, reduce):
    coll, data = farm
    got = coll.mrange("-", "+", group_by="server", reduce=reduce)
    assert list(got) == ["s1", "s2"], "rows without the field (lonely) are left out"
    for server in ("s1", "s2"):
        members = [data[pk] for pk in data if pk.startswith(server)]
        _assert_samples_close(got[server], _numpy_reduce(members, reduce))
    got = coll.mrange(
        "-", "+", meta={"metric": {"in": ["cpu", "io"]}}, group_by=["metric", "server"], reduce=reduce
    )
    assert list(got) == [("cpu", "s1"), ("cpu", "s2"), ("io", "s1"), ("io", "s2")]
    _assert_samples_close(got[("io", "s2")], _numpy_reduce([data["s2.io"]], reduce))


def test_mrange_group_by_after_bucket_aggregation(farm):
    coll, data = farm
    got = coll.mrange(0, 300, aggregation="avg", bucket=100, group_by="server", reduce="max")
    members = []
    for pk in ("s2.cpu", "s2.mem", "s2.io"):
        times, values = data[pk]
        inside = times <= 300
        bucketed = _numpy_buckets(times[inside], values[inside], "avg", 100)
        members.append((np.array([t for t, _ in bucketed]), np.array([v for _, v in bucketed])))
    _assert_samples_close(got["s2"], _numpy_reduce(members, "max"))


def test_mrange_errors(farm):
    coll, _ = farm
    with pytest.raises(ValueError, match="group_by needs a reduce"):
        coll.mrange("-", "+", group_by="server")
    with pytest.raises(ValueError, match="reduce needs a group_by"):
        coll.mrange("-", "+", reduce="sum")
    with pytest.raises(ValueError, match="unknown reduce 'median'"):
        coll.mrange("-", "+", group_by="server", reduce="median")
    with pytest.raises(KeyError, match="'farm' has no field 'color'"):
        coll.mrange("-", "+", group_by=["server", "color"], reduce="sum")
    with pytest.raises(KeyError, match="no field 'color'"):
        coll.mrange("-", "+", meta={"color": "red"})


# --- augmented_select ------------------------------------------------------------------------------


def _reference_distance(x, y, grid=None, tx=None, ty=None):
    """SPEC §9's formula, written out once more."""
    if grid is not None:
        points = np.linspace(*grid)
        x, y = np.interp(points, tx, x), np.interp(points, ty, y)
    x, y = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()

    def ccor(a, b):
        return np.fft.irfft(np.fft.rfft(a) * np.conj(np.fft.rfft(b)), len(a)) / len(a)

    k = np.exp(5 * ccor(x, y)).sum() / np.sqrt(np.exp(5 * ccor(x, x)).sum() * np.exp(5 * ccor(y, y)).sum())
    return math.sqrt(max(0.0, 2 * (1 - k)))


@pytest.fixture
def waves(db):
    coll = db.timeseries("waves", schema={"kind": str, "mean": float, "std": float}, index=["kind"])
    t = np.arange(64, dtype=float)
    series = {
        "sin": np.sin(t / 5),
        "cos": np.cos(t / 5),
        "noise": np.random.default_rng(5).normal(size=64),
        "ramp": t.copy(),
    }
    for pk, values in series.items():
        coll.insert_ts(pk, TimeSeries(t, values))
        coll.upsert_meta(pk, {"kind": "wave" if pk in ("sin", "cos") else "other"})
    coll.upsert_meta("meta-only", {"kind": "wave"})
    return coll, t, series


def test_augmented_select_stats_and_corr(waves):
    coll, t, series = waves
    got = coll.augmented_select("stats", ["m", "s"])
    assert list(got) == ["cos", "noise", "ramp", "sin"], "rows without a series are skipped"
    for pk, values in series.items():
        assert got[pk] == {"m": pytest.approx(np.mean(values)), "s": pytest.approx(np.std(values))}
    got = coll.augmented_select(
        "corr", ["d"], arg="sin", meta={"kind": "wave"}, additional={"sort_by": "-pk"}
    )
    assert list(got) == ["sin", "cos"]
    assert got["sin"]["d"] == pytest.approx(0.0, abs=1e-6)
    assert got["cos"]["d"] == pytest.approx(_reference_distance(series["sin"], series["cos"]))
    shipped = TimeSeries(t, np.sin(t / 5 + 0.3))
    got = coll.augmented_select("corr", "d", arg=shipped, meta={"pk": "noise"})
    assert got["noise"]["d"] == pytest.approx(_reference_distance(np.sin(t / 5 + 0.3), series["noise"]))


def test_corr_on_a_grid_resamples(db):
    coll = db.timeseries("g", grid=(0, 10, 50))
    ta, tb = np.linspace(0, 10, 40), np.sort(np.random.default_rng(2).uniform(-1, 11, 70))
    coll.insert_ts("a", TimeSeries(ta, np.sin(ta)))
    coll.insert_ts("b", TimeSeries(tb, np.cos(tb)))
    got = coll.augmented_select("corr", ["d"], arg="a")
    expected = _reference_distance(np.sin(ta), np.cos(tb), (0, 10, 50), ta, tb)
    assert got["b"]["d"] == pytest.approx(expected)


def test_augmented_select_errors(waves, db):
    coll, t, _ = waves
    with pytest.raises(errors.NotAllowedError, match="no procedure 'os.system'"):
        coll.augmented_select("os.system", ["x"])
    with pytest.raises(ValueError, match="'stats' gives 2 result"):
        coll.augmented_select("stats", ["m"])
    with pytest.raises(TypeError, match="'corr' needs an arg"):
        coll.augmented_select("corr", ["d"])
    with pytest.raises(KeyError, match="no pk 'nope'"):
        coll.augmented_select("corr", ["d"], arg="nope")
    coll.insert_ts("flat", TimeSeries(t, np.ones(64)))
    with pytest.raises(ValueError, match="pk 'flat': a constant series has no distance"):
        coll.augmented_select("corr", ["d"], arg="sin")
    coll.delete_ts("flat")
    coll.insert_ts("short", TimeSeries(t[:10], np.sin(t[:10])))
    with pytest.raises(ValueError, match="pk 'short': series of 10 and 64 samples cannot be compared"):
        coll.augmented_select("corr", ["d"], arg="sin")
