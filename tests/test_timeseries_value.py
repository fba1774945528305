"""``pyzdb.TimeSeries`` (SPEC §8, §4): the value, its wire form, and storing it on real servers."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from helpers import ServerProcess, wait_until
from pyzdb import TimeSeries, codec, errors
from pyzdb.client import Connection


def test_exported_from_the_package_root_beside_file():
    import pyzdb

    assert pyzdb.TimeSeries is TimeSeries
    assert {"File", "TimeSeries"} <= set(pyzdb.__all__)


def test_times_values_len_iteration_and_numpy():
    ts = TimeSeries([0, 1, 2], [0.5, 0.2, 0.9])
    assert len(ts) == 3
    assert list(ts) == [(0.0, 0.5), (1.0, 0.2), (2.0, 0.9)]
    assert ts.times.dtype == np.float64 and ts.values.dtype == np.float64
    times, values = ts.to_numpy()
    times[0] = 99  # a copy: the series does not change
    assert ts.times[0] == 0.0
    with pytest.raises(ValueError):
        ts.values[0] = 1.0  # read-only arrays: a series never changes


def test_numpy_arrays_are_accepted_and_copied():
    times, values = np.arange(5), np.linspace(0, 1, 5)
    ts = TimeSeries(times, values)
    values[0] = 42.0
    assert ts.values[0] == 0.0
    assert ts == TimeSeries(list(range(5)), [0.0, 0.25, 0.5, 0.75, 1.0])


def test_equality():
    assert TimeSeries([1], [math.nan]) == TimeSeries([1], [math.nan])
    assert TimeSeries([1, 2], [1, 2]) != TimeSeries([1, 2], [1, 3])
    assert TimeSeries([1, 2], [1, 2]) != TimeSeries([1, 3], [1, 2])
    assert TimeSeries([], []) == TimeSeries([], [])
    assert TimeSeries([1], [1]) != [(1.0, 1.0)]


@pytest.mark.parametrize(
    ("times", "values", "words"),
    [
        ([0, 2, 1], [1, 2, 3], "strictly increasing: times[2]"),
        ([0, 0], [1, 2], "strictly increasing"),
        ([0, 1], [1], "as many times as values"),
        ([0, 1], [1, "x"], "values[1]"),
        ([0, True], [1, 2], "times[1]"),
        ([0, math.nan], [1, 2], "finite"),
        ("ab", [1, 2], "sequence of numbers"),
        (np.zeros((2, 2)), [1, 2], "1-d"),
    ],
)
def test_bad_series_raise_value_error(times, values, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[")):
        TimeSeries(times, values)


def test_short_repr_for_a_long_series():
    ts = TimeSeries(range(1_000_000), np.zeros(1_000_000))
    text = repr(ts)
    assert len(text) < 200
    assert (
        text.endswith(", len=1000000)")
        and "(0.0, 0.0)" in text
        and "(999999.0, 0.0)" in text
        and "..." in text
    )
    assert repr(TimeSeries([0, 1], [2, 3])) == "TimeSeries([0.0, 1.0], [2.0, 3.0])"


def test_wire_form_is_exact_and_compact():
    ts = TimeSeries([0, 1.5, 2**40], [math.nan, math.inf, -0.1])
    raw = codec.to_wire({"a": [ts, (ts,)]})
    assert b'"$ts"' in raw
    back = codec.from_wire(raw)
    assert back["a"][0] == ts and back["a"][1] == (ts,)
    assert len(codec.to_wire(TimeSeries(range(1000), np.random.default_rng(1).random(1000)))) < 22_000


@pytest.mark.parametrize(
    "payload",
    [
        b'{"$ts": "x"}',
        b'{"$ts": ["AAAAAAAAAAA=", ""]}',  # one time, no value
        b'{"$ts": ["AAAA", "AAAA"]}',  # 3 bytes is not a float64
        b'{"$ts": ["!!", "!!"]}',
        b'{"$ts": ["AAAAAAAA8D8AAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA=="]}',  # times 1.0 then 0.0
    ],
)
def test_malformed_wire_form_is_a_protocol_error(payload):
    with pytest.raises(errors.ProtocolError, match=r"\$ts"):
        codec.from_wire(payload)


def test_pickles():
    ts = TimeSeries([1, 2], [3, 4])
    assert pickle.loads(pickle.dumps({"x": ts}, protocol=5))["x"] == ts


def test_stored_anywhere_read_back_after_restart_sigkill_and_on_a_replica(tmp_path):
    ts = TimeSeries([0, 1, 2], [0.5, 0.2, math.nan])
    server = ServerProcess(tmp_path / "db.pkl").start()
    replica = None
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            db = conn.db
            db["saved"] = {"s": ts, "l": [ts]}
            db.save()
            db["journaled"] = ts  # only in the journal when the server is killed
            assert db["saved"]["s"]._run() == ts
            server.kill()
            server.start()
            assert db["journaled"]._run() == ts
            assert db["saved"]._run() == {"s": ts, "l": [ts]}
            replica = ServerProcess(server.db, server.port_base, read_only=True).start()
            with Connection(server.read_uri, timeout=10) as reader:
                wait_until(lambda: reader.call("get").get("journaled") == ts)
            db["l"] = []
            db["l"].append(ts)
            db.undo()
            db.redo()
            assert db["l"]._run() == [ts]
    finally:
        if replica is not None:
            replica.stop()
        server.stop()
