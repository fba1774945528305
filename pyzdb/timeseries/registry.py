"""The collections of one store, and every call on them: reads answered, writes planned (no I/O).

A write is planned like the tree's writes (``pyzdb.ops``): the result, the
patches that make it and the patches that undo it, computed without changing
anything, so a write that fails changes nothing.  A patch on a collection is
the tree patch ``("object", (), registry, kind, name, *args)``; the tree
hands it to :meth:`Registry.apply_patch`.  The kinds:

==========================================  =====================================
``("create", name, collection)``            put a collection (new, or dropped before)
``("drop", name)``                          remove it
``("put", name, pk, fields, samples)``      set a row (its indexes follow)
``("delete", name, pk)``                    remove a row
``("splice", name, pk, start, stop, t, v)`` change a row's samples
``("append", name, appends)``               append samples to rows (``Appends``)
``("truncate", name, appends)``             cut them off again, held for a redo
==========================================  =====================================

The registry is pickled with the tree and the undo log in one snapshot
(``Store.state``), so the collections and the undo steps that refer to them
stay one set of objects after a restart.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pyzdb import codec
from pyzdb.errors import NotAllowedError
from pyzdb.ops import Change
from pyzdb.timeseries import aggregate, procedures, query
from pyzdb.timeseries import distance as dist
from pyzdb.timeseries import schema as fields_
from pyzdb.timeseries.calls import READ_CALLS, WRITE_CALLS
from pyzdb.timeseries.collection import Appends, Collection, unhashable_indexed
from pyzdb.timeseries.query import conditions as _conditions
from pyzdb.timeseries.query import select_pks as _select_pks
from pyzdb.timeseries.samples import Samples, keep_recent, numbers, plan_merge
from pyzdb.timeseries.series import TimeSeries, as_series


class Registry:
    """Collections by name."""

    def __init__(self) -> None:
        self.collections: dict[str, Collection] = {}

    # --- entry points (pyzdb.store) ---------------------------------------------------

    def read(self, path: tuple, method: str, args: list, kwargs: dict) -> Any:
        """Answer a read call."""
        return _run(self, _READERS, path, method, args, kwargs)

    def plan(self, path: tuple, method: str, args: list, kwargs: dict) -> Change:
        """Plan a write call without changing anything."""
        return _run(self, _PLANNERS, path, method, args, kwargs)

    def apply_patch(self, kind: str, name: str, *args: Any) -> None:
        """Apply one collection patch (called by ``pyzdb.tree``)."""
        if kind == "create":
            self.collections[name] = args[0]
        elif kind == "drop":
            del self.collections[name]
        else:
            getattr(self.collections[name], kind)(*args)

    def patch(self, kind: str, name: str, *args: Any) -> tuple:
        """The tree patch that applies ``(kind, name, *args)`` to this registry."""
        return ("object", (), self, kind, name, *args)

    def collection(self, name: str) -> Collection:
        """The collection ``name`` (``KeyError`` naming it when there is none)."""
        coll = self.collections.get(fields_.check_name(name))
        if coll is None:
            raise KeyError(f"no time-series collection {name!r}")
        return coll


def _run(registry: Registry, table: dict, path: tuple, method: str, args: list, kwargs: dict) -> Any:
    function = table.get(method)
    if function is None:
        known = " ".join(sorted(READ_CALLS | WRITE_CALLS))
        raise NotAllowedError(f"time-series collections have no call {method!r} (calls: {known})")
    if method == "names":
        if path:
            raise TypeError("names() takes no collection")
        target: Any = None
    elif len(path) != 1:
        raise TypeError(f"{method}() needs exactly one collection name in the path")
    elif method in ("open", "create"):
        target = fields_.check_name(path[0])
    else:
        target = registry.collection(path[0])
    if not _fits(method, args, kwargs):
        try:
            _SIGNATURES[method].bind(registry, target, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{method}(): {exc}") from None
    return function(registry, target, *args, **kwargs)


def _fits(method: str, args: list, kwargs: dict) -> bool:
    """The common case, checked without ``inspect`` (20 us): arguments that bind to the call's signature."""
    required, positional, keywords = _SHAPES[method]
    if not required <= len(args) <= len(positional):
        return False
    return all(k in keywords and k not in positional[: len(args)] for k in kwargs)


# --- the collections -------------------------------------------------------------------


def _names(registry: Registry, _: None) -> list[str]:
    return sorted(registry.collections)


def _open(registry: Registry, name: str, **options: Any) -> dict | None:
    """The options of an existing collection, after checking those given; ``None`` when missing."""
    given = fields_.normalize_options(name, options)
    coll = registry.collections.get(name)
    if coll is None:
        return None
    fields_.differences(name, coll.options, given)
    return dict(coll.options)


def _create(registry: Registry, name: str, **options: Any) -> Change:
    given = fields_.normalize_options(name, options)
    if name in registry.collections:
        fields_.differences(name, registry.collections[name].options, given)
        return Change()
    coll = Collection(name, {**fields_.DEFAULTS, **given})
    return Change(None, [registry.patch("create", name, coll)], [registry.patch("drop", name)])


def _drop(registry: Registry, coll: Collection) -> Change:
    return Change(None, [registry.patch("drop", coll.name)], [registry.patch("create", coll.name, coll)])


def _len(_: Registry, coll: Collection) -> int:
    return len(coll.rows)


def _contains(_: Registry, coll: Collection, pk: Any) -> bool:
    return fields_.check_pk(coll.name, pk) in coll.rows


# --- rows ---------------------------------------------------------------------------------


def _where(pk: Any) -> str:
    return f"pk {pk!r}"


def _row(coll: Collection, pk: Any) -> Any:
    row = coll.rows.get(fields_.check_pk(coll.name, pk))
    if row is None:
        raise KeyError(f"collection {coll.name!r} has no pk {pk!r}")
    return row


def _restore(registry: Registry, coll: Collection, pk: Any) -> tuple:
    """The patch that puts row ``pk`` back as it is now (or removes it if it does not exist)."""
    row = coll.rows.get(pk)
    if row is None:
        return registry.patch("delete", coll.name, pk)
    return registry.patch("put", coll.name, pk, row.fields, row.samples)


def _insert_ts(registry: Registry, coll: Collection, pk: Any, series: Any) -> Change:
    fields_.check_pk(coll.name, pk)
    row = coll.rows.get(pk)
    if row is not None and row.samples is not None:
        raise ValueError(f"collection {coll.name!r}: pk {pk!r} already has a series")
    series = as_series(series, f"collection {coll.name!r}, pk {pk!r}")
    times, values = keep_recent(series.times, series.values, coll.options["retention"])
    fields = dict(row.fields) if row is not None else {}
    fields.update(_filled(coll, pk, values))
    put = registry.patch("put", coll.name, pk, fields, Samples(times, values))
    return Change(None, [put], [_restore(registry, coll, pk)])


def _filled(coll: Collection, pk: Any, values: np.ndarray) -> dict:
    """``mean`` and ``std`` (population) of a new series, for the schema fields of those names."""
    schema = coll.schema or {}
    computed = {}
    if "mean" in schema:
        computed["mean"] = float(np.mean(values)) if len(values) else math.nan
    if "std" in schema:
        computed["std"] = float(np.std(values)) if len(values) else math.nan
    return {f: fields_.convert(coll.name, schema, f, v, _where(pk)) for f, v in computed.items()}


def _upsert_meta(registry: Registry, coll: Collection, pk: Any, meta: Any) -> Change:
    fields_.check_pk(coll.name, pk)
    if type(meta) is not dict:
        raise TypeError(f"collection {coll.name!r}, pk {pk!r}: meta must be a dict of field: value")
    row = coll.rows.get(pk)
    fields = dict(row.fields) if row is not None else {}
    for field, value in meta.items():
        if value is None:
            fields_.check_field(coll.name, coll.schema, field, allow=())
            fields.pop(field, None)
        else:
            fields[field] = fields_.convert(coll.name, coll.schema, field, value, _where(pk))
    bad = unhashable_indexed(coll, fields)
    if bad:
        raise TypeError(
            f"collection {coll.name!r}, pk {pk!r}: indexed field {bad[0]!r} needs a hashable value"
        )
    put = registry.patch("put", coll.name, pk, fields, None if row is None else row.samples)
    return Change(None, [put], [_restore(registry, coll, pk)])


def _delete_ts(registry: Registry, coll: Collection, pk: Any) -> Change:
    _row(coll, pk)
    return Change(None, [registry.patch("delete", coll.name, pk)], [_restore(registry, coll, pk)])


def _get(_: Registry, coll: Collection, pk: Any) -> dict:
    row = _row(coll, pk)
    return {"pk": pk, "ts": None if row.samples is None else row.samples.series(), **row.fields}


def _select(
    _: Registry, coll: Collection, meta: Any = None, fields: Any = None, additional: Any = None
) -> list:
    """Travels as ``[pks, rows]`` (``rows`` null without ``fields``): two arrays encode and parse
    at C speed, where ``{pk: {...}}`` with int pks would be a ``$dict``; the client zips them."""
    found = query.conditions(coll, meta)
    wanted = query.projection(coll, fields)
    order = query.ordered(coll, query.select_pks(coll, found), additional)
    if wanted is None:
        return [order, None]
    return [order, [query.project(coll, pk, wanted) for pk in order]]


def _augmented_select(
    _: Registry,
    coll: Collection,
    proc: Any,
    target: Any,
    arg: Any = None,
    meta: Any = None,
    additional: Any = None,
) -> dict:
    """``{pk: {target[i]: result[i]}}`` of a registered procedure on each selected row with a series."""
    entry = procedures.PROCEDURES.get(proc) if type(proc) is str else None
    if entry is None:
        known = ", ".join(sorted(procedures.PROCEDURES))
        raise NotAllowedError(f"collection {coll.name!r}: no procedure {proc!r} (procedures: {known})")
    count, function = entry
    names = [target] if type(target) is str else target
    if type(names) not in (list, tuple) or len(names) != count or not all(type(n) is str for n in names):
        raise ValueError(
            f"collection {coll.name!r}: {proc!r} gives {count} result(s): target needs {count} names"
        )
    if proc == "corr":
        arg = _corr_arg(coll, arg)
    found = query.conditions(coll, meta)
    order = query.ordered(coll, query.select_pks(coll, found), additional)
    out = {}
    for pk in order:
        samples = coll.rows[pk].samples
        if samples is None:
            continue
        try:
            results = function(samples.times, samples.values, coll.options["grid"], arg)
        except ValueError as exc:
            raise ValueError(f"collection {coll.name!r}, pk {pk!r}: {exc}") from None
        out[pk] = dict(zip(names, results, strict=True))
    return out


def _corr_arg(coll: Collection, arg: Any) -> tuple:
    """The series ``corr`` compares with: a stored row's (by pk) or one sent with the call."""
    if type(arg) in (str, int):
        samples = _row(coll, arg).samples
        if samples is None:
            raise ValueError(f"collection {coll.name!r}: pk {arg!r} has no series to compare with")
        return samples.times.copy(), samples.values.copy()
    if arg is None:
        raise TypeError(f"collection {coll.name!r}: 'corr' needs an arg: a series or a pk")
    series = as_series(arg, f"collection {coll.name!r}: the arg of 'corr'")
    return series.times, series.values


# --- similarity (SPEC §9) -------------------------------------------------------------------


def _compared(coll: Collection, item: Any, what: str) -> tuple[str, np.ndarray]:
    """``(label, prepared values)`` of a pk (its stored series) or of a series sent with the call."""
    if type(item) in (str, int):
        samples = _row(coll, item).samples
        label = f"collection {coll.name!r}, pk {item!r}"
        if samples is None:
            raise ValueError(f"{label} has no series")
        times, values = samples.times, samples.values
    else:
        if type(item) is not TimeSeries and not (type(item) in (list, tuple) and len(item) == 2):
            raise TypeError(
                f"collection {coll.name!r}: {what} must be a pk or a series (a TimeSeries or a"
                f" (times, values) pair), not {type(item).__name__}"
            )
        label = f"collection {coll.name!r}: {what}"
        series = as_series(item, label)
        times, values = series.times, series.values
    try:
        return label, dist.prepared(times, values, coll.options["grid"])
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None


def _distance(_: Registry, coll: Collection, a: Any, b: Any) -> float:
    """SPEC §9's distance of two series, each a pk or a series."""
    (label_a, x), (label_b, y) = _compared(coll, a, "a"), _compared(coll, b, "b")
    if len(x) != len(y):
        raise ValueError(
            f"{label_a} has {len(x)} samples and {label_b} {len(y)}: without a grid they cannot be compared"
        )
    fx, sx = dist.transform(x[None, :])
    fy, sy = dist.transform(y[None, :])
    return float(dist.distances(fx, sx, fy[0], float(sy[0]), len(x))[0])


def _similar(
    _: Registry, coll: Collection, query: Any, k: Any = 5, *, meta: Any = None, include_self: Any = False
) -> list:
    """``[[pk, distance], ...]`` of the k rows nearest ``query``, by (distance, pk); exact."""
    if type(k) is not int or k < 1:
        raise ValueError(f"collection {coll.name!r}: k must be an int >= 1, not {k!r}")
    if type(include_self) is not bool:
        raise TypeError(f"collection {coll.name!r}: include_self must be True or False")
    found = _conditions(coll, meta)
    _, prepared = _compared(coll, query, "the query")
    candidates = None if meta is None else _select_pks(coll, found)
    exclude = query if type(query) in (str, int) and not include_self else None
    nearest = coll.similarity().nearest(prepared, k, candidates, exclude, coll.name)
    return [[pk, d] for pk, d in nearest]


def _vantage_points(_: Registry, coll: Collection) -> list:
    """The pks of the vantage points the server uses now."""
    return coll.similarity().vantage_points()


# --- samples ------------------------------------------------------------------------------


def _sample_changes(
    registry: Registry, coll: Collection, pk: Any, times: np.ndarray, values: np.ndarray, appends: Appends
) -> tuple[list, list]:
    """Forward and inverse patches that add samples to row ``pk`` (creating it when new).

    Samples that only go after the row's last one are planned into ``appends`` instead.
    """
    where = f"collection {coll.name!r}, pk {pk!r}"
    row = coll.rows.get(pk)
    samples = None if row is None else row.samples
    options = coll.options
    forward, inverse = plan_merge(
        samples, times, values, options["duplicate_policy"], options["retention"], where
    )
    if samples is None:  # one new series: the forward splices start from nothing
        _, _, new_t, new_v = forward[0]
        fields = {} if row is None else row.fields
        put = registry.patch("put", coll.name, pk, fields, Samples(new_t, new_v))
        return [put], [_restore(registry, coll, pk)]
    if len(forward) == 1 and forward[0][0] == len(samples):  # the usual case: samples after the last
        appends.add(pk, len(samples), forward[0][2], forward[0][3])
        return [], []
    return (
        [registry.patch("splice", coll.name, pk, *s) for s in forward],
        [registry.patch("splice", coll.name, pk, *s) for s in inverse],
    )


def _add(registry: Registry, coll: Collection, pk: Any, t: Any, v: Any) -> Change:
    fields_.check_pk(coll.name, pk)
    where = f"collection {coll.name!r}, pk {pk!r}"
    times, values = numbers([t], "t", where), numbers([v], "v", where)
    if not math.isfinite(times[0]):
        raise ValueError(f"{where}: time {t!r} is not a finite number")
    appends = Appends()
    forward, inverse = _sample_changes(registry, coll, pk, times, values, appends)
    return _with_appends(registry, coll, Change(None, forward, inverse), appends)


def _with_appends(registry: Registry, coll: Collection, change: Change, appends: Appends) -> Change:
    if appends.pks:
        appends.seal()
        change.forward.append(registry.patch("append", coll.name, appends))
        change.inverse.insert(0, registry.patch("truncate", coll.name, appends))
    return change


def _madd(registry: Registry, coll: Collection, pks: Any, times: Any, values: Any) -> Change:
    """``madd`` travels as three columns (the client splits its ``(pk, t, v)`` samples)."""
    where = f"collection {coll.name!r}: madd"
    if type(pks) is not list:
        raise TypeError(f"{where} needs a list of (pk, t, v) samples")
    times, values = numbers(times, "times", where), numbers(values, "values", where)
    if not len(pks) == len(times) == len(values):
        raise ValueError(f"{where}: {len(pks)} pks, {len(times)} times and {len(values)} values")
    groups = _by_pk(pks, where)
    bad = np.flatnonzero(~np.isfinite(times))
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{where}: sample {i} (pk {pks[i]!r}) has time {float(times[i])!r}, not a finite number"
        )
    change, appends = Change(), Appends()
    for pk, at in groups:
        forward, inverse = _sample_changes(registry, coll, pk, times[at], values[at], appends)
        change.forward += forward
        change.inverse[:0] = inverse  # undone in the reverse order of doing
    return _with_appends(registry, coll, change, appends)


def _by_pk(pks: list, where: str) -> list[tuple[Any, Any]]:
    """``[(pk, positions of its samples), ...]``; ``TypeError`` naming the first pk of a wrong type."""
    kinds = set(map(type, pks))
    if not kinds <= {str, int}:
        i = next(i for i, pk in enumerate(pks) if type(pk) not in (str, int))
        raise TypeError(f"{where}: sample {i} has a pk of type {type(pks[i]).__name__}, not str or int")
    if len(kinds) == 1 and len(pks) > 16:
        column = np.array(pks) if kinds == {str} else _int64s(pks)
        if column is not None:  # one type: numpy's sort groups them (10k samples: ~10x a dict loop)
            keys, inverse = np.unique(column, return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            cuts = np.flatnonzero(np.diff(inverse[order])) + 1
            return list(zip(keys.tolist(), np.split(order, cuts), strict=True))
    groups: dict[Any, list[int]] = {}
    for i, pk in enumerate(pks):
        groups.setdefault(pk, []).append(i)
    return [(pk, np.array(positions, dtype=np.intp)) for pk, positions in groups.items()]


def _int64s(pks: list) -> np.ndarray | None:
    if min(pks) < -(2**63) or max(pks) >= 2**63:
        return None
    return np.array(pks, dtype=np.int64)


def _range(
    _: Registry,
    coll: Collection,
    pk: Any,
    start: Any = "-",
    end: Any = "+",
    *,
    aggregation: Any = None,
    bucket: Any = None,
) -> TimeSeries:
    """Travels as a TimeSeries (compact); the client turns it into ``[(t, v), ...]``."""
    row = _row(coll, pk)
    low, high = aggregate.bound(start, "start", "-"), aggregate.bound(end, "end", "+")
    aggregate.check(aggregation, bucket)
    return _ranged(row.samples, low, high, aggregation, bucket)


def _ranged(samples: Samples | None, low: float, high: float, aggregation: Any, bucket: Any) -> TimeSeries:
    if samples is None:
        return TimeSeries._trusted(np.empty(0), np.empty(0))
    times, values = aggregate.window(samples.times, samples.values, low, high)
    times, values = aggregate.aggregate(times, values, aggregation, bucket)
    return TimeSeries._trusted(np.array(times), np.array(values))


def _mrange(
    _: Registry,
    coll: Collection,
    start: Any,
    end: Any,
    *,
    meta: Any = None,
    aggregation: Any = None,
    bucket: Any = None,
    group_by: Any = None,
    reduce: Any = None,
) -> dict:
    low, high = aggregate.bound(start, "start", "-"), aggregate.bound(end, "end", "+")
    aggregate.check(aggregation, bucket)
    groups = _group_fields(coll, group_by, reduce)
    pks = query.ordered(coll, query.select_pks(coll, query.conditions(coll, meta)), None)
    ranged = {pk: _ranged(coll.rows[pk].samples, low, high, aggregation, bucket) for pk in pks}
    if groups is None:
        return ranged
    members: dict[Any, list] = {}
    for pk, series in ranged.items():
        fields = coll.rows[pk].fields
        if all(f in fields for f in groups):
            key = _group_key(coll, fields, groups)
            members.setdefault(key, []).append((series.times, series.values))
    ordered_keys = sorted(members, key=_group_order)
    return {key: TimeSeries._trusted(*aggregate.combine(members[key], reduce)) for key in ordered_keys}


def _group_fields(coll: Collection, group_by: Any, reduce: Any) -> list[str] | None:
    if group_by is None:
        if reduce is not None:
            raise ValueError(f"collection {coll.name!r}: reduce needs a group_by")
        return None
    names = [group_by] if type(group_by) is str else group_by
    if type(names) not in (list, tuple) or not names:
        raise TypeError(f"collection {coll.name!r}: group_by must be a field name or a list of them")
    for field in names:
        fields_.check_field(coll.name, coll.schema, field, allow=())
    if reduce is None:
        raise ValueError(f"collection {coll.name!r}: group_by needs a reduce (an aggregation name)")
    aggregate.check(reduce, None, "reduce")
    return list(names)


def _group_key(coll: Collection, fields: dict, groups: list[str]) -> Any:
    values = tuple(fields[f] for f in groups)
    for field, value in zip(groups, values, strict=True):
        if not codec.is_valid_key(value):
            raise TypeError(f"collection {coll.name!r}: cannot group by field {field!r} holding {value!r}")
    return values[0] if len(values) == 1 else values


def _group_order(key: Any) -> tuple:
    parts = key if type(key) is tuple else (key,)
    return tuple(query.value_key(part) for part in parts)


_READERS: dict[str, Callable[..., Any]] = {
    "names": _names,
    "open": _open,
    "len": _len,
    "contains": _contains,
    "get": _get,
    "select": _select,
    "augmented_select": _augmented_select,
    "similar": _similar,
    "distance": _distance,
    "vantage_points": _vantage_points,
    "range": _range,
    "mrange": _mrange,
}
_PLANNERS: dict[str, Callable[..., Change]] = {
    "create": _create,
    "drop": _drop,
    "insert_ts": _insert_ts,
    "upsert_meta": _upsert_meta,
    "delete_ts": _delete_ts,
    "add": _add,
    "madd": _madd,
}
_SIGNATURES = {name: inspect.signature(f) for name, f in {**_READERS, **_PLANNERS}.items()}


def _shape(signature: inspect.Signature) -> tuple[int, tuple[str, ...], frozenset[str]]:
    """(required positional count, positional names, keyword names) after ``registry`` and the target."""
    params = list(signature.parameters.values())[2:]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return (1 << 30, (), frozenset())  # never "fits": bind() decides
    positional = tuple(p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD)
    required = sum(1 for p in params if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is p.empty)
    if any(p.kind == p.KEYWORD_ONLY and p.default is p.empty for p in params):
        return (1 << 30, (), frozenset())
    return required, positional, frozenset(p.name for p in params)


_SHAPES = {name: _shape(signature) for name, signature in _SIGNATURES.items()}
