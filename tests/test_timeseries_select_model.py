"""``select`` on a real server against a plain-Python model of the rows (hypothesis).

Random rows, random upserts (with fields removed by ``None``), deletes and
undos, then random filters with every operator on indexed and unindexed
fields and on ``pk``, with and without a schema, sorted and limited.  Each
example uses a fresh collection on one server.
"""

from __future__ import annotations

import itertools
import operator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyzdb import TimeSeries

FIELDS = ("a", "b", "c")
SCHEMA = {"a": int, "b": str, "c": float}
# small domains, so that rows collide on pks and values, and filters hit them
TYPED_VALUES = {
    "a": st.integers(0, 2),
    "b": st.sampled_from(["x", "y"]),
    "c": st.sampled_from([0.0, 0.5, 2.5]),
}
MIXED_VALUE = st.one_of(st.integers(0, 2), st.sampled_from(["x", "y"]))
PKS = st.one_of(st.integers(0, 2), st.sampled_from(["p0", "p1"]))
OPS = ["<", "<=", "==", "!=", ">", ">=", "in", "not in"]
_COMPARE = {
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
}
_names = itertools.count()


@st.composite
def scenarios(draw):
    typed = draw(st.booleans())
    value = (lambda f: TYPED_VALUES[f]) if typed else (lambda f: MIXED_VALUE)
    index = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=3))
    field_update = st.sampled_from(FIELDS).flatmap(
        lambda f: st.tuples(st.just(f), st.one_of(value(f), value(f), value(f), st.none()))
    )
    meta = st.lists(field_update, min_size=1, max_size=3).map(dict)
    upsert = st.tuples(st.just("upsert"), PKS, meta)
    # rows first, so that the filters have something to find; then random changes
    full_meta = st.fixed_dictionaries({f: value(f) for f in FIELDS}).flatmap(
        lambda row: st.sets(st.sampled_from(FIELDS), max_size=1).map(
            lambda dropped: {f: v for f, v in row.items() if f not in dropped}
        )
    )
    seed = draw(st.lists(st.tuples(st.just("upsert"), PKS, full_meta), min_size=3, max_size=6))
    steps = seed + draw(
        st.lists(
            st.one_of(
                upsert,
                upsert,
                upsert,
                st.tuples(st.just("insert"), PKS),
                st.tuples(st.just("delete"), PKS),
                st.tuples(st.just("undo")),
            ),
            max_size=12,
        )
    )
    condition_field = st.sampled_from([*FIELDS, "pk"])

    def condition(field):
        operand = PKS if field == "pk" else value(field)
        return st.one_of(
            operand.map(lambda v: ("==", v)),
            st.tuples(st.sampled_from(OPS[:6]), operand),
            st.tuples(st.sampled_from(["<", "<=", ">", ">="]), operand),  # ranges: the sorted keys
            st.tuples(st.sampled_from(["in", "not in"]), st.lists(operand, max_size=3)),
        )

    filters = draw(
        st.lists(
            st.lists(condition_field, unique=True, max_size=2).flatmap(
                lambda shape: st.fixed_dictionaries(
                    {
                        f: st.lists(condition(f), min_size=1, max_size=2 if len(shape) < 2 else 1)
                        for f in shape
                    }
                )
            ),
            min_size=3,
            max_size=8,
        )
    )
    sort = draw(st.one_of(st.none(), st.tuples(st.sampled_from(["", "+", "-"]), condition_field)))
    limit = draw(st.one_of(st.none(), st.integers(0, 4)))
    return typed, index, steps, filters, sort, limit


def _model_matches(fields: dict, pk, conditions: dict) -> bool:
    for field, tests in conditions.items():
        for op, operand in tests:
            present = field == "pk" or field in fields
            value = pk if field == "pk" else fields.get(field)
            if not present:
                if op not in ("!=", "not in"):
                    return False
                continue
            if op in ("in", "not in"):
                hit = any(value == item for item in operand)
                ok = hit if op == "in" else not hit
            else:
                try:
                    ok = _COMPARE[op](value, operand)
                except TypeError:
                    ok = op == "!="
            if not ok:
                return False
    return True


def _pk_key(pk):
    return (type(pk) is str, pk)


def _value_key(value):
    if type(value) in (int, float):
        return (0, value)
    return (2, value)


def _model_order(model: dict, pks: list, sort, limit) -> list:
    result = sorted(pks, key=_pk_key)
    if sort is not None:
        sign, field = sort
        if field == "pk":
            result = sorted(result, key=_pk_key, reverse=sign == "-")
        else:
            having = [pk for pk in result if field in model[pk]]
            lacking = [pk for pk in result if field not in model[pk]]
            having.sort(key=lambda pk: _value_key(model[pk][field]), reverse=sign == "-")
            result = having + lacking
    return result if limit is None else result[:limit]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_select_matches_a_plain_python_model(db, scenario):
    typed, index, steps, filters, sort, limit = scenario
    coll = db.timeseries(f"model-{next(_names)}", schema=SCHEMA if typed else None, index=index)
    model: dict = {}
    series: set = set()  # the pks that have a series
    history: list[tuple[dict, set]] = []
    for step in steps:
        kind, *args = step
        if kind == "undo":
            if history:  # never past this example's own writes
                db.undo()
                model, series = history.pop()
            continue
        pk = args[0]
        before = ({k: dict(v) for k, v in model.items()}, set(series))
        if kind == "upsert":
            coll.upsert_meta(pk, args[1])
            row = model.setdefault(pk, {})
            for field, value in args[1].items():
                if value is None:
                    row.pop(field, None)
                else:
                    row[field] = float(value) if typed and field == "c" else value
        elif kind == "insert":
            if pk in series:
                with pytest.raises(ValueError, match="already has a series"):
                    coll.insert_ts(pk, TimeSeries([0], [1.0]))
                continue
            coll.insert_ts(pk, TimeSeries([0], [1.0]))
            model.setdefault(pk, {})
            series.add(pk)
        else:
            if pk not in model:
                with pytest.raises(KeyError):
                    coll.delete_ts(pk)
                continue
            coll.delete_ts(pk)
            del model[pk]
            series.discard(pk)
        history.append(before)
    for conditions in filters:
        conditions = {field: list(dict(tests).items()) for field, tests in conditions.items()}
        meta = {field: dict(tests) for field, tests in conditions.items()}
        expected = [pk for pk in model if _model_matches(model[pk], pk, conditions)]
        assert list(coll.select(meta)) == sorted(expected, key=_pk_key), meta
        additional = {"limit": limit} if limit is not None else {}
        if sort is not None:
            additional["sort_by"] = sort[0] + sort[1]
        got = coll.select(meta, fields=[], additional=additional)
        assert list(got) == _model_order(model, expected, sort, limit), (meta, additional)
        assert all(got[pk] == {"pk": pk, **model[pk]} for pk in got)
    coll.drop()
