"""``select``: filter rows by their fields, project fields, sort and limit (no I/O).

A condition on an indexed field (or on ``pk``) is answered from the index:
equality and ``in`` by lookups, ``< <= > >=`` by binary search in the
index's sorted values (or, when they are of mixed kinds, by testing each
distinct value), ``!=`` and ``not in`` as complements: the same rows as
testing every row.
Conditions on other fields test the rows left by the indexed ones.  Every
argument is checked before any row is looked at.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from pyzdb.timeseries import schema as fields_
from pyzdb.timeseries.collection import Collection

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
}
OPERATORS = (*_COMPARE, "in", "not in")
_MISSING_MATCHES = ("!=", "not in")
"""A row without the field matches only these."""

Condition = tuple[str, str, Any]  # (field, operator, operand)


# --- checking the query -------------------------------------------------------------------


def conditions(coll: Collection, meta: Any) -> list[Condition]:
    """The AND-ed conditions of ``meta``, checked and with operands converted to the fields' types."""
    if meta is None:
        return []
    if type(meta) is not dict:
        raise TypeError(f"collection {coll.name!r}: meta must be a dict of field: condition")
    found = []
    for field, condition in meta.items():
        fields_.check_field(coll.name, coll.schema, field)
        tests = condition.items() if type(condition) is dict else [("==", condition)]
        for op, operand in tests:
            found.append((field, op, _operand(coll, field, op, operand)))
    return found


def _operand(coll: Collection, field: str, op: Any, operand: Any) -> Any:
    if op not in OPERATORS:
        raise ValueError(
            f"collection {coll.name!r}: unknown operator {op!r} for field {field!r}"
            f" (known: {list(OPERATORS)})"
        )
    if op in ("in", "not in"):
        if type(operand) not in (list, tuple):
            raise TypeError(f"collection {coll.name!r}: {op!r} on field {field!r} needs a list")
        return [_converted(coll, field, item) for item in operand]
    return _converted(coll, field, operand)


def _converted(coll: Collection, field: str, value: Any) -> Any:
    if field == "pk" or coll.schema is None or value is None:
        return value
    return fields_.convert(coll.name, coll.schema, field, value, f"the condition on {field!r}")


# --- evaluating it --------------------------------------------------------------------------


def matches(value: Any, op: str, operand: Any) -> bool:
    """Does a present field value satisfy ``op operand``?  Values that cannot be compared do not."""
    if op == "in":
        return _among(value, operand)
    if op == "not in":
        return not _among(value, operand)
    try:
        return bool(_COMPARE[op](value, operand))
    except TypeError:
        return op == "!="


def _among(value: Any, items: list) -> bool:
    return any(value == item for item in items)  # not ``in``: its identity test would make nan equal nan


def select_pks(coll: Collection, found: list[Condition]) -> set | list:
    """The pks of the rows meeting every condition (in no particular order)."""
    indexed = [c for c in found if c[0] == "pk" or c[0] in coll.indexes]
    scanned = [c for c in found if c not in indexed]
    if not indexed:
        candidates: Any = coll.rows
    else:
        sets = sorted((_from_index(coll, *c) for c in indexed), key=len)
        candidates = sets[0].intersection(*sets[1:])
    if not scanned:
        return candidates if isinstance(candidates, set) else list(candidates)
    rows = coll.rows
    return [pk for pk in candidates if all(_row_matches(rows[pk].fields, c) for c in scanned)]


def _row_matches(fields: dict, condition: Condition) -> bool:
    field, op, operand = condition
    if field not in fields:
        return op in _MISSING_MATCHES
    return matches(fields[field], op, operand)


def _from_index(coll: Collection, field: str, op: str, operand: Any) -> set:
    if field == "pk":
        return _pks_matching(coll, op, operand)
    index = coll.indexes[field]
    if op in ("==", "!=", "in", "not in"):
        wanted = [operand] if op in ("==", "!=") else operand
        hits = set().union(*(_lookup(index, item) for item in wanted))
        return hits if op in ("==", "in") else set(coll.rows).difference(hits)
    values = coll.sorted_keys[field].matching(op, operand)
    if values is not None:
        return set().union(*(index[value] for value in values))
    return set().union(*(pks for value, pks in index.items() if matches(value, op, operand)))


def _lookup(index: dict, value: Any) -> set:
    if value is None or (type(value) is float and math.isnan(value)):
        return set()  # no stored value equals these (a field set to None is removed)
    try:
        return index.get(value, set())
    except TypeError:  # unhashable: no indexed value equals it
        return set()


def _pks_matching(coll: Collection, op: str, operand: Any) -> set:
    if op == "==":
        return {operand} if _has(coll, operand) else set()
    if op == "in":
        return {item for item in operand if _has(coll, item)}
    return {pk for pk in coll.rows if matches(pk, op, operand)}


def _has(coll: Collection, pk: Any) -> bool:
    try:
        return type(pk) in (str, int) and pk in coll.rows
    except TypeError:
        return False


# --- shaping the answer ---------------------------------------------------------------------


def pk_key(pk: Any) -> tuple:
    """pk order: ints before strs, each in their own order."""
    return (type(pk) is str, pk)


def value_key(value: Any) -> tuple:
    """An order over any field values: numbers, then nan, then strings, then the rest by type and repr."""
    if type(value) in (int, float, bool):
        return (1, 0) if value != value else (0, value)
    if type(value) is str:
        return (2, value)
    return (3, type(value).__name__, repr(value))


def ordered(coll: Collection, pks: Any, additional: Any) -> list:
    """``pks`` in order: by pk, or by ``sort_by`` (ties by pk, rows lacking it last); then ``limit``."""
    sort_by, descending, limit = _additional(coll, additional)
    kinds = set(map(type, pks))
    result = sorted(pks) if len(kinds) <= 1 else sorted(pks, key=pk_key)  # one type: no key calls
    if sort_by is not None and sort_by != "pk":
        rows = coll.rows
        having = [pk for pk in result if sort_by in rows[pk].fields]
        lacking = [pk for pk in result if sort_by not in rows[pk].fields]
        having.sort(key=lambda pk: value_key(rows[pk].fields[sort_by]), reverse=descending)
        result = having + lacking
    elif sort_by == "pk" and descending:
        result.reverse()
    return result if limit is None else result[:limit]


def _additional(coll: Collection, additional: Any) -> tuple[str | None, bool, int | None]:
    if additional is None:
        return None, False, None
    if type(additional) is not dict:
        raise TypeError(f"collection {coll.name!r}: additional must be a dict")
    unknown = sorted(set(additional) - {"sort_by", "limit"}, key=str)
    if unknown:
        raise ValueError(f"collection {coll.name!r}: unknown additional option(s) {unknown} (sort_by, limit)")
    sort_by, descending = additional.get("sort_by"), False
    if sort_by is not None:
        if type(sort_by) is not str or sort_by in ("", "+", "-"):
            raise TypeError(f"collection {coll.name!r}: sort_by must be a field name, '+field' or '-field'")
        descending = sort_by[0] == "-"
        sort_by = sort_by[1:] if sort_by[0] in "+-" else sort_by
        fields_.check_field(coll.name, coll.schema, sort_by)
    limit = additional.get("limit")
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValueError(f"collection {coll.name!r}: limit must be an int >= 0, not {limit!r}")
    return sort_by, descending, limit


def projection(coll: Collection, fields: Any) -> list | None:
    """The fields a select returns: ``None`` (none), ``[]`` (all but ``ts``) or the names, checked."""
    if fields is None:
        return None
    if type(fields) not in (list, tuple):
        raise TypeError(f"collection {coll.name!r}: fields must be None or a list of field names")
    for field in fields:
        fields_.check_field(coll.name, coll.schema, field, allow=("pk", "ts"))
    return list(fields)


def project(coll: Collection, pk: Any, wanted: list | None) -> dict:
    """The selected fields of one row."""
    if wanted is None:
        return {}
    row = coll.rows[pk]
    if not wanted:
        return {"pk": pk, **row.fields}
    out = {}
    for field in wanted:
        if field == "pk":
            out["pk"] = pk
        elif field == "ts":
            if row.samples is not None:
                out["ts"] = row.samples.series()
        elif field in row.fields:
            out[field] = row.fields[field]
    return out
