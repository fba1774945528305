"""Sample writes against a plain-Python model (hypothesis), on the I/O-free store the servers run.

Random ``add``/``madd``/``insert_ts``/``delete_ts``/undo/redo under every
duplicate policy, with and without retention; after each step every row's
samples must be the model's ``{t: v}`` in time order, and a snapshot (pickle)
of the store must give the same rows back.  The same code paths answer
requests on real servers (tests/test_timeseries_samples.py); here thousands of
steps run in seconds.
"""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyzdb.errors import UndoError
from pyzdb.store import Store

POLICIES = ["last", "first", "block", "min", "max", "sum"]
PKS = st.sampled_from(["a", "b", 3])
TIMES = st.integers(0, 30)
VALUES = st.integers(-5, 5).map(float)
SAMPLE = st.tuples(PKS, TIMES, VALUES)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), SAMPLE),
        st.tuples(st.just("madd"), st.lists(SAMPLE, max_size=12)),
        st.tuples(st.just("madd"), st.lists(SAMPLE, max_size=12)),
        st.tuples(st.just("insert"), PKS, st.lists(TIMES, unique=True, max_size=6)),
        st.tuples(st.just("delete"), PKS),
        st.tuples(st.just("undo")),
        st.tuples(st.just("redo")),
    ),
    max_size=25,
)


def _combine(policy: str, old: float, new: float) -> float:
    return {"last": new, "first": old, "min": min(old, new), "max": max(old, new), "sum": old + new}[policy]


class Model:
    """Rows as ``{pk: {t: v}}``, with the collection's policy and retention, and undo/redo stacks."""

    def __init__(self, policy: str, retention: int) -> None:
        self.policy, self.retention = policy, retention
        self.rows: dict = {}
        self.undo: list = []
        self.redo: list = []

    def _keep(self, points: dict) -> dict:
        if self.retention <= 0 or not points:
            return points
        cutoff = max(points) - self.retention
        return {t: v for t, v in points.items() if t >= cutoff}

    def write(self, rows: dict) -> None:
        self.undo.append(self.rows)
        self.redo.clear()
        self.rows = rows

    def add_samples(self, samples: list) -> bool:
        """Apply samples in order; False (and no change) if ``block`` refuses them."""
        rows = {pk: dict(points) for pk, points in self.rows.items()}
        for pk, t, v in samples:
            points = rows.setdefault(pk, {})
            if t in points:
                if self.policy == "block":
                    return False
                points[t] = _combine(self.policy, points[t], v)
            else:
                points[t] = v
        for pk in {pk for pk, _, _ in samples}:
            rows[pk] = self._keep(rows[pk])
        self.write(rows)
        return True


def _stored(store: Store) -> dict:
    coll = store.timeseries.collections["m"]
    return {
        pk: dict(zip(row.samples.times.tolist(), row.samples.values.tolist(), strict=True))
        for pk, row in coll.rows.items()
    }


def _check(store: Store, model: Model) -> None:
    stored = _stored(store)
    assert stored == {pk: {float(t): v for t, v in points.items()} for pk, points in model.rows.items()}
    for row in store.timeseries.collections["m"].rows.values():
        times = row.samples.times.tolist()
        assert times == sorted(set(times)), "strictly increasing"


@settings(max_examples=300, deadline=None)
@given(policy=st.sampled_from(POLICIES), retention=st.sampled_from([0, 0, 10]), steps=STEPS)
def test_sample_writes_match_a_plain_python_model(policy, retention, steps):
    store = Store(undo_limit=1000)
    store.write("ts", ("m",), "create", (), {"duplicate_policy": policy, "retention": retention})
    model = Model(policy, retention)
    for step in steps:
        kind, *args = step
        if kind in ("add", "madd"):
            samples = [args[0]] if kind == "add" else args[0]
            expected = model.add_samples(samples)
            call_args = (
                samples[0]
                if kind == "add"
                else [list(column) for column in zip(*samples, strict=True)] or [[], [], []]
            )
            if expected:
                store.write("ts", ("m",), kind, call_args)
            else:
                with pytest.raises(ValueError, match="duplicate_policy 'block'"):
                    store.write("ts", ("m",), kind, call_args)
        elif kind == "insert":
            pk, times = args
            if pk in model.rows:
                with pytest.raises(ValueError, match="already has a series"):
                    store.write("ts", ("m",), "insert_ts", (pk, (sorted(times), [1.0] * len(times))))
                continue
            store.write("ts", ("m",), "insert_ts", (pk, (sorted(times), [1.0] * len(times))))
            model.write({**model.rows, pk: model._keep(dict.fromkeys(sorted(times), 1.0))})
        elif kind == "delete":
            if args[0] not in model.rows:
                with pytest.raises(KeyError):
                    store.write("ts", ("m",), "delete_ts", (args[0],))
                continue
            store.write("ts", ("m",), "delete_ts", (args[0],))
            model.write({pk: points for pk, points in model.rows.items() if pk != args[0]})
        elif kind == "undo":
            if not model.undo:  # never past this collection's creation
                continue
            store.undo()
            model.redo.append(model.rows)
            model.rows = model.undo.pop()
        else:
            if not model.redo:
                with pytest.raises(UndoError):
                    store.redo()
                continue
            store.redo()
            model.undo.append(model.rows)
            model.rows = model.redo.pop()
        _check(store, model)
    again = Store.from_state(pickle.loads(pickle.dumps(store.state())), 1000)
    _check(again, model)
    while model.undo:  # the whole history undoes cleanly, down to the empty collection
        again.undo()
        model.rows = model.undo.pop()
        _check(again, model)
