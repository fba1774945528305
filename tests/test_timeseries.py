"""Time-series collections (SPEC §8) against real servers: collections, rows, select, undo, durability."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from helpers import ROOT, ServerProcess, wait_until
from pyzdb import TimeSeries, errors
from pyzdb.client import Connection

STARS_SCHEMA = {"order": int, "blarg": int, "mean": float, "std": float, "level": str}


@pytest.fixture
def stars(db):
    """The collection of SPEC §8's example, empty."""
    return db.timeseries("stars", schema=STARS_SCHEMA, index=["order", "blarg", "level"])


def _fill(stars, rows: dict) -> None:
    for pk, meta in rows.items():
        stars.insert_ts(pk, TimeSeries([0, 1, 2], [0.5, 0.2, 0.9]))
        stars.upsert_meta(pk, meta)


# --- the collections ----------------------------------------------------------------------


def test_spec_example(db):
    ts = db.timeseries(
        "stars",
        schema={"order": int, "blarg": int, "mean": float, "std": float, "level": str},
        index=["order", "blarg", "level"],
    )
    ts.insert_ts("ts-1", TimeSeries([0, 1, 2], [0.5, 0.2, 0.9]))
    ts.upsert_meta("ts-1", {"order": 3, "level": "A"})
    found = ts.select(
        {"order": {">=": 2}, "level": "A"},
        fields=["order", "mean"],
        additional={"sort_by": "-order", "limit": 10},
    )
    assert found == {"ts-1": {"order": 3, "mean": pytest.approx(0.5333333333)}}


def test_get_or_create_names_drop_len_contains(db, conn):
    assert db.timeseries_names() == []
    coll = db.timeseries("b", index=["x"], duplicate_policy="first", retention=10)
    db.timeseries("a")
    assert db.timeseries_names() == ["a", "b"]
    again = db.timeseries("b")  # alone: opens it as it is
    assert again.options()["duplicate_policy"] == "first"
    assert db.timeseries("b", index=("x",), retention=10).options()["index"] == ["x"]
    with pytest.raises(ValueError, match="'b'.*duplicate_policy"):
        db.timeseries("b", duplicate_policy="last")
    with pytest.raises(ValueError, match="index"):
        db.timeseries("b", index=["x", "y"])
    assert len(coll) == 0 and "p" not in coll
    coll.upsert_meta("p", {"x": 1})
    assert len(coll) == 1 and "p" in coll
    coll.drop()
    assert db.timeseries_names() == ["a"]
    with pytest.raises(KeyError, match="'b'"):
        len(coll)
    with pytest.raises(KeyError, match="'b'"):
        coll.drop()
    assert db._run() == {}, "collections are not part of the tree"


def test_bad_options(db):
    with pytest.raises(ValueError, match="reserved"):
        db.timeseries("c", schema={"pk": str})
    with pytest.raises(ValueError, match="'order'.*use int, float, str or bool"):
        db.timeseries("c", schema={"order": list})
    with pytest.raises(KeyError, match="'nope' is not in the schema"):
        db.timeseries("c", schema={"a": int}, index=["nope"])
    with pytest.raises(ValueError, match="duplicate_policy"):
        db.timeseries("c", duplicate_policy="newest")
    with pytest.raises(ValueError, match="retention"):
        db.timeseries("c", retention=-1)
    with pytest.raises(ValueError, match="grid"):
        db.timeseries("c", grid=(1, 0, 10))
    with pytest.raises(TypeError):
        db.timeseries(3)
    assert db.timeseries_names() == []


# --- rows ---------------------------------------------------------------------------------


def test_schema_converts_and_refuses(stars):
    stars.upsert_meta("p", {"order": "7", "blarg": 2.0, "level": 5, "mean": "1.5"})
    assert stars.get("p") == {"pk": "p", "ts": None, "order": 7, "blarg": 2, "level": "5", "mean": 1.5}
    with pytest.raises(ValueError, match=r"'stars', pk 'p': field 'order' = 'x' is not a int"):
        stars.upsert_meta("p", {"order": "x"})
    with pytest.raises(ValueError, match="'blarg' = 2.5 is not a int"):
        stars.upsert_meta("p", {"blarg": 2.5})
    with pytest.raises(KeyError, match="'color' is not in the schema"):
        stars.upsert_meta("p", {"color": "red", "order": 1})
    with pytest.raises(ValueError, match="'ts' is a reserved"):
        stars.upsert_meta("p", {"ts": 1})
    assert stars.get("p")["order"] == 7, "a refused write changes nothing"


def test_any_field_without_schema(db):
    free = db.timeseries("free", index=["tag"])
    free.upsert_meta(1, {"tag": "a", "nested": {"k": [1, (2, 3)]}, "n": 1})
    assert free.get(1) == {"pk": 1, "ts": None, "tag": "a", "nested": {"k": [1, (2, 3)]}, "n": 1}
    with pytest.raises(TypeError, match="indexed field 'tag' needs a hashable value"):
        free.upsert_meta(1, {"tag": [1]})
    assert free.select({"tag": "a"}) == {1: {}}


def test_mean_and_std_filled_on_insert(stars):
    values = [1.0, 2.0, 4.0, 8.0]
    stars.insert_ts("p", ([0, 1, 2, 3], values))  # a (times, values) pair
    row = stars.get("p")
    assert row["mean"] == pytest.approx(np.mean(values)) and row["std"] == pytest.approx(np.std(values))
    assert row["ts"] == TimeSeries([0, 1, 2, 3], values)


def test_insert_ts_rules(stars):
    stars.upsert_meta("p", {"order": 1})
    stars.insert_ts("p", TimeSeries([5], [1.0]))  # a row without a series gets one
    assert stars.get("p")["order"] == 1 and stars.get("p")["ts"] == TimeSeries([5], [1.0])
    with pytest.raises(ValueError, match="'stars': pk 'p' already has a series"):
        stars.insert_ts("p", TimeSeries([6], [1.0]))
    with pytest.raises(ValueError, match="'stars', pk 'q'.*strictly increasing"):
        stars.insert_ts("q", ([0, 2, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="'q'.*as many times as values"):
        stars.insert_ts("q", ([0, 1], [1]))
    with pytest.raises(ValueError, match=r"values\[1\]"):
        stars.insert_ts("q", ([0, 1], [1, "x"]))
    with pytest.raises(TypeError, match="'stars': a pk must be a str or an int, not float"):
        stars.insert_ts(1.5, TimeSeries([0], [1]))
    with pytest.raises(TypeError, match="TimeSeries or a \\(times, values\\) pair"):
        stars.insert_ts("q", [1, 2, 3])
    assert "q" not in stars and len(stars) == 1


def test_upsert_meta_none_removes_and_indexes_follow(stars):
    _fill(stars, {"a": {"order": 1, "level": "A"}, "b": {"order": 2, "level": "A"}})
    stars.upsert_meta("a", {"order": 5})
    assert stars.select({"order": 1}) == {}, "an old value no longer matches"
    assert stars.select({"order": 5}) == {"a": {}}
    stars.upsert_meta("a", {"level": None})
    assert "level" not in stars.get("a")
    assert stars.select({"level": "A"}) == {"b": {}}
    assert stars.select({"level": {"!=": "A"}}) == {"a": {}}, "a row without the field matches !="


def test_delete_ts_and_get(stars):
    _fill(stars, {"a": {"order": 1}})
    assert stars.get("a")["ts"] == TimeSeries([0, 1, 2], [0.5, 0.2, 0.9])
    stars.delete_ts("a")
    with pytest.raises(KeyError, match="'stars' has no pk 'a'"):
        stars.get("a")
    with pytest.raises(KeyError, match="'stars' has no pk 'a'"):
        stars.delete_ts("a")
    assert stars.select({"order": 1}) == {}


# --- select ---------------------------------------------------------------------------------


ROWS = {
    "a": {"order": 1, "blarg": 10, "level": "A"},
    "b": {"order": 2, "blarg": 10, "level": "B"},
    "c": {"order": 3, "level": "A"},
    "d": {"order": 3, "blarg": 20},
}


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (None, ["a", "b", "c", "d"]),
        ({}, ["a", "b", "c", "d"]),
        ({"order": 3}, ["c", "d"]),
        ({"order": {"==": 3}}, ["c", "d"]),
        ({"order": {"!=": 3}}, ["a", "b"]),
        ({"order": {"<": 2}}, ["a"]),
        ({"order": {"<=": 2}}, ["a", "b"]),
        ({"order": {">": 2}}, ["c", "d"]),
        ({"order": {">=": 2, "<": 3}}, ["b"]),
        ({"level": {"in": ["A", "C"]}}, ["a", "c"]),
        ({"level": {"not in": ["A"]}}, ["b", "d"]),
        ({"blarg": {"!=": 10}}, ["c", "d"]),
        ({"blarg": {">": 0}}, ["a", "b", "d"]),
        ({"mean": {">": 0}}, ["a", "b", "c", "d"]),  # unindexed: scanned
        ({"pk": "b"}, ["b"]),
        ({"pk": {"in": ["a", "x", "c"]}}, ["a", "c"]),
        ({"pk": {">": "b"}, "order": 3}, ["c", "d"]),
        ({"order": 3, "level": "A"}, ["c"]),
        ({"order": "3"}, ["c", "d"]),  # the operand is converted to the field's type
    ],
)
def test_select_operators(stars, meta, expected):
    _fill(stars, ROWS)
    assert list(stars.select(meta)) == expected


def test_select_fields_forms(stars):
    _fill(stars, {"a": {"order": 1, "level": "A"}})
    stars.upsert_meta("n", {"order": 2})  # no series
    assert stars.select({"pk": "a"}) == {"a": {}}
    everything = stars.select({"pk": "a"}, fields=[])
    assert everything == {
        "a": {
            "pk": "a",
            "order": 1,
            "level": "A",
            "mean": everything["a"]["mean"],
            "std": everything["a"]["std"],
        }
    }
    assert stars.select(fields=["level", "ts"]) == {
        "a": {"level": "A", "ts": TimeSeries([0, 1, 2], [0.5, 0.2, 0.9])},
        "n": {},
    }
    with pytest.raises(KeyError, match="no field 'nope'"):
        stars.select(fields=["nope"])
    with pytest.raises(TypeError, match="fields must be None or a list"):
        stars.select(fields="order")


def test_select_sort_and_limit(stars):
    _fill(stars, ROWS)
    assert list(stars.select(additional={"sort_by": "-order"})) == ["c", "d", "b", "a"]
    assert list(stars.select(additional={"sort_by": "order"})) == ["a", "b", "c", "d"]
    assert list(stars.select(additional={"sort_by": "+blarg"})) == ["a", "b", "d", "c"], "lacking it: last"
    assert list(stars.select(additional={"sort_by": "-blarg"})) == ["d", "a", "b", "c"]
    assert list(stars.select(additional={"sort_by": "-order", "limit": 3})) == ["c", "d", "b"]
    assert list(stars.select(additional={"limit": 0})) == []
    assert list(stars.select(additional={"sort_by": "-pk"})) == ["d", "c", "b", "a"]
    with pytest.raises(KeyError, match="no field 'x'"):
        stars.select(additional={"sort_by": "x"})
    with pytest.raises(ValueError, match="limit"):
        stars.select(additional={"limit": -1})
    with pytest.raises(ValueError, match="unknown additional"):
        stars.select(additional={"order_by": "x"})


def test_select_errors(stars):
    with pytest.raises(KeyError, match="'stars' has no field 'color'"):
        stars.select({"color": "red"})
    with pytest.raises(ValueError, match="unknown operator '~' for field 'order'"):
        stars.select({"order": {"~": 3}})
    with pytest.raises(TypeError, match="'in' on field 'level' needs a list"):
        stars.select({"level": {"in": "A"}})
    with pytest.raises(ValueError, match="'order' = 'x' is not a int"):
        stars.select({"order": "x"})


def test_int_and_str_pks_in_pk_order(db):
    coll = db.timeseries("mixed")
    for pk in ["b", 10, "a", 2]:
        coll.upsert_meta(pk, {"v": 1})
    assert list(coll.select()) == [2, 10, "a", "b"]
    assert coll.get(10)["pk"] == 10


# --- undo, redo, durability, replicas ----------------------------------------------------------


def test_each_write_is_one_undo_step_and_indexes_follow(db, stars):
    _fill(stars, {"a": {"order": 1}})  # insert_ts + upsert_meta: two steps
    stars.upsert_meta("a", {"order": 2})
    stars.delete_ts("a")
    assert "a" not in stars
    db.undo()
    assert stars.select({"order": 2}) == {"a": {}}
    db.undo()
    assert stars.select({"order": 1}) == {"a": {}} and stars.select({"order": 2}) == {}
    db.undo()
    assert stars.get("a")["ts"] is not None and "order" not in stars.get("a")
    assert stars.select({"order": 1}) == {}
    db.redo()
    db.redo()
    assert stars.select({"order": 2}) == {"a": {}} and stars.select({"order": 1}) == {}
    stars.drop()
    db.undo()
    assert db.timeseries_names() == ["stars"] and stars.select({"order": 2}) == {"a": {}}
    db.undo()
    db.undo()
    db.undo()
    db.undo()  # the collection's creation
    assert db.timeseries_names() == []
    with pytest.raises(errors.UndoError):
        db.undo()


def test_collections_survive_save_restart_and_sigkill(tmp_path):
    server = ServerProcess(tmp_path / "db.pkl").start()
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            stars = conn.db.timeseries("stars", schema=STARS_SCHEMA, index=["order", "level"])
            _fill(stars, {"a": {"order": 1, "level": "A"}, "b": {"order": 2}})
            conn.db.save()
            stars.upsert_meta("a", {"order": 5})  # journaled only
            stars.insert_ts("c", TimeSeries(np.arange(1000), np.ones(1000)))
            server.kill()
            server.start()
            stars = conn.db.timeseries("stars")
            assert stars.select({"order": 1}) == {}, "indexes rebuilt from the rows, not from disk"
            assert stars.select({"order": 5}) == {"a": {}}
            assert stars.get("c")["ts"] == TimeSeries(np.arange(1000), np.ones(1000))
            assert stars.select({"level": "A"}, fields=["order"]) == {"a": {"order": 5}}
            conn.db.undo()  # the history survives the restart too
            assert "c" not in stars
            assert server.stop() == 0  # SIGTERM: a final snapshot
            server.start()
            assert list(conn.db.timeseries("stars").select()) == ["a", "b"]
            assert conn.db.timeseries("stars").select({"order": 5}) == {"a": {}}
    finally:
        server.stop()


def test_read_only_server_answers_reads_and_refuses_writes(server, db):
    stars = db.timeseries("stars", schema=STARS_SCHEMA, index=["order"])
    _fill(stars, {"a": {"order": 1}})
    replica = ServerProcess(server.db, server.port_base, read_only=True).start()
    try:
        with Connection(server.read_uri, timeout=10) as reader:
            wait_until(
                lambda: reader.db.timeseries_names() == ["stars"] and "a" in reader.db.timeseries("stars")
            )
            ro = reader.db.timeseries("stars", index=["order"])  # opening an existing one is a read
            wait_until(lambda: ro.select({"order": 1}) == {"a": {}})
            assert len(ro) == 1 and ro.get("a")["order"] == 1 and "a" in ro
            assert ro.range("a") == [(0.0, 0.5), (1.0, 0.2), (2.0, 0.9)]
            assert ro.range("a", aggregation="max", bucket=2) == [(0.0, 0.5), (2.0, 0.9)]
            assert ro.mrange("-", "+", group_by="order", reduce="sum") == {
                1: [(0.0, 0.5), (1.0, 0.2), (2.0, 0.9)]
            }
            assert ro.augmented_select("stats", ["m", "s"])["a"]["m"] == pytest.approx(0.5333333333)
            assert ro.options()["index"] == ["order"]
            with pytest.raises(errors.ReadOnlyError):
                ro.upsert_meta("a", {"order": 2})
            with pytest.raises(errors.ReadOnlyError):
                reader.db.timeseries("new")
    finally:
        replica.stop()


def test_bad_calls_are_refused_before_the_store(conn, stars):
    with pytest.raises(errors.NotAllowedError, match="no call '__init__'"):
        conn.call("ts", ("stars",), "__init__")
    with pytest.raises(TypeError, match="get\\(\\): missing a required argument: 'pk'"):
        conn.call("ts", ("stars",), "get")
    with pytest.raises(TypeError, match="unexpected keyword"):
        conn.call("ts", ("stars",), "select", (), {"module": "os"})
    with pytest.raises(KeyError, match="no time-series collection 'nope'"):
        conn.call("ts", ("nope",), "select")
    with pytest.raises(errors.ProtocolError, match="'ts' needs a 'method' string"):
        conn.call("ts", ("stars",))


def test_oversized_request_is_refused_with_a_clear_error(tmp_path):
    server = ServerProcess(tmp_path / "db.pkl", None, "--max-message-size", "100000").start()
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            coll = conn.db.timeseries("big")
            with pytest.raises(errors.ProtocolError, match="exceeds the limit of 100000"):
                coll.insert_ts("p", TimeSeries(np.arange(20_000), np.zeros(20_000)))
            assert len(coll) == 0
    finally:
        server.stop()


def test_nan_values_are_stored(stars):
    stars.insert_ts("p", ([0, 1], [math.nan, 1.0]))
    assert math.isnan(stars.get("p")["mean"])
    assert stars.get("p")["ts"] == TimeSeries([0, 1], [math.nan, 1.0])


def test_readme_example_runs_and_prints_what_it_says(db):
    readme = (ROOT / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "db.timeseries(" in b)
    namespace: dict = {"db": db}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    stars = namespace["stars"]
    shown = [line.split("#", 1) for line in code.splitlines() if "  # " in line]  # expression # result
    assert len(shown) == 2
    for expression, result in shown:
        assert repr(eval(expression.strip(), namespace)) == result.strip(), expression  # noqa: S307
    assert stars.range("ts-2") == [(0.0, 1.0)]
