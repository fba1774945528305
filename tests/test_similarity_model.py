"""``similar`` against brute force, and the distance's properties (hypothesis, on a ``Store``; no I/O).

The store is the one a server runs; here the search's batch sizes are made
tiny, so that a few dozen rows go through every path of the pruning (first
batch, bounds, later batches, the stop) that large collections take.  The
brute force is ``augmented_select('corr')``: every distance, computed row by
row, by the same formula (so equal to the last bit).
tests/test_similarity.py runs the same comparison against real servers at
the real batch sizes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyzdb import TimeSeries
from pyzdb.store import Store
from pyzdb.timeseries import similarity
from pyzdb.timeseries.query import pk_key

LENGTH = 16


def _call(store: Store, method: str, *args, **kwargs):
    from pyzdb.timeseries.calls import WRITE_CALLS

    if method in WRITE_CALLS:
        return store.write("ts", ("c",), method, args, kwargs)
    return store.read("ts", ("c",), method, args, kwargs)


def brute_force(store: Store, query, k: int, meta=None, include_self: bool = False) -> list:
    """The k nearest by computing every distance (``augmented_select('corr')``), skipping rows without one."""
    usable = {
        pk
        for pk, row in store.timeseries.collections["c"].rows.items()
        if row.samples is not None and np.std(row.samples.values) > 0
    }
    conditions = dict(meta or {})
    conditions["pk"] = {"in": sorted(usable, key=pk_key)}
    if type(query) in (str, int) and not include_self:
        conditions["pk"] = {"in": sorted(usable - {query}, key=pk_key)}
    found = _call(store, "augmented_select", "corr", "d", query, conditions)
    pairs = [(pk, r["d"]) for pk, r in found.items()]
    pairs.sort(key=lambda pair: (pair[1], pk_key(pair[0])))
    return [list(pair) for pair in pairs[:k]]


@st.composite
def collections(draw):
    """Rows of random walks, noise or tight clusters, some constant, inserted in random order."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["walk", "noise", "clusters"]))
    count = draw(st.integers(1, 60))
    if kind == "walk":
        rows = np.cumsum(rng.normal(size=(count, LENGTH)), axis=1)
    elif kind == "noise":
        rows = rng.normal(size=(count, LENGTH))
    else:
        centers = rng.normal(size=(draw(st.integers(1, 4)), LENGTH))
        rows = centers[rng.integers(0, len(centers), count)] + 0.01 * rng.normal(size=(count, LENGTH))
        rows = rows[np.argsort(rng.integers(0, len(centers), count), kind="stable")]
    for i in draw(st.lists(st.integers(0, count - 1), max_size=3)):
        rows[i] = 1.0  # constant: skipped
    for i in draw(st.lists(st.integers(0, count - 1), max_size=3)):
        rows[i] = rows[draw(st.integers(0, count - 1))]  # duplicates: ties broken by pk
    pks = [i if i % 3 == 0 else f"p{i}" for i in range(count)]
    levels = [draw(st.sampled_from(["A", "B", "C"])) for _ in range(count)]
    return rows, pks, levels


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=collections(),
    vantage=st.integers(1, 8),
    k=st.integers(1, 70),
    use_meta=st.booleans(),
    include_self=st.booleans(),
    deletes=st.integers(0, 5),
    undo=st.booleans(),
    shipped=st.booleans(),
)
def test_similar_is_brute_force(data, vantage, k, use_meta, include_self, deletes, undo, shipped):
    rows, pks, levels = data
    store = Store()
    store.write("ts", ("c",), "create", (), {"vantage_points": vantage, "index": ["level"]})
    t = np.arange(LENGTH, dtype=float)
    half = len(pks) // 2
    for pk, values, level in zip(pks[:half], rows[:half], levels[:half], strict=True):
        _call(store, "insert_ts", pk, TimeSeries(t, values))
        _call(store, "upsert_meta", pk, {"level": level})
    _call(store, "vantage_points")  # built now: the rest of the rows reach it through patches
    for pk, values, level in zip(pks[half:], rows[half:], levels[half:], strict=True):
        _call(store, "insert_ts", pk, TimeSeries(t, values))
        _call(store, "upsert_meta", pk, {"level": level})
    for _ in range(deletes):
        points = _call(store, "vantage_points")
        if points:
            _call(store, "delete_ts", points[0])  # a vantage point: replaced
    if undo and deletes:
        store.undo()
    meta = {"level": {"in": ["A", "B"]}} if use_meta else None
    shipped = shipped or not store.timeseries.collections["c"].rows
    query = (
        TimeSeries(t, np.sin(t) + rows[0]) if shipped else next(iter(store.timeseries.collections["c"].rows))
    )
    if not shipped and np.std(store.timeseries.collections["c"].rows[query].samples.values) == 0:
        with pytest.raises(ValueError, match="constant series has no distance"):
            _call(store, "similar", query, k, meta=meta, include_self=include_self)
        return
    expected = brute_force(store, query, k, meta, include_self)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(similarity, "BRUTE_FORCE_BELOW", 0)
        patch.setattr(similarity, "FIRST_BATCH", 2)
        patch.setattr(similarity, "BATCH", 3)
        got = _call(store, "similar", query, k, meta=meta, include_self=include_self)
    assert got == expected
    coll = store.timeseries.collections["c"]
    fresh = similarity.SimilarityIndex(None, vantage)
    fresh.build((pk, row.samples) for pk, row in coll.rows.items())
    assert sorted(coll.similarity().bank_of, key=pk_key) == sorted(fresh.bank_of, key=pk_key)
    assert len(coll.similarity().vantage_points()) == len(fresh.vantage_points())


SERIES = st.lists(st.floats(-100, 100), min_size=LENGTH, max_size=LENGTH).filter(
    lambda v: np.std(v) > 1e-6 * (1 + np.abs(v).max())
)


def _distance(store: Store, a, b) -> float:
    t = np.arange(LENGTH, dtype=float)
    return _call(store, "distance", TimeSeries(t, a), TimeSeries(t, b))


@settings(max_examples=200, deadline=None)
@given(x=SERIES, y=SERIES, z=SERIES, shift=st.integers(0, LENGTH - 1))
def test_distance_properties(x, y, z, shift):
    store = Store()
    store.write("ts", ("c",), "create", (), {})
    # near 0 a distance is sqrt of a difference near 0: ~1e-8 of rounding
    assert _distance(store, x, x) == pytest.approx(0.0, abs=1e-6)
    assert _distance(store, x, y) == pytest.approx(_distance(store, y, x), abs=1e-7)
    assert _distance(store, np.roll(x, shift), y) == pytest.approx(_distance(store, x, y), abs=1e-7)
    assert 0 <= _distance(store, x, y) <= 2
    xy, yz, xz = _distance(store, x, y), _distance(store, y, z), _distance(store, x, z)
    assert xz <= xy + yz + 1e-6, "the triangle inequality that makes the pruning exact"


@settings(max_examples=100, deadline=None)
@given(x=SERIES, y=SERIES)
def test_distance_is_spec_formula(x, y):
    store = Store()
    store.write("ts", ("c",), "create", (), {})
    a, b = np.array(x), np.array(y)
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()

    def ccor(u, v):
        return np.fft.irfft(np.fft.rfft(u) * np.conj(np.fft.rfft(v)), len(u)) / len(u)

    kernel = np.exp(5 * ccor(a, b)).sum() / math.sqrt(
        np.exp(5 * ccor(a, a)).sum() * np.exp(5 * ccor(b, b)).sum()
    )
    assert _distance(store, x, y) == pytest.approx(math.sqrt(max(0.0, 2 * (1 - kernel))), abs=1e-7)
