"""A collection's options and fields: validation and conversion on write (no I/O).

Every error names the collection, and the pk or field when there is one.
"""

from __future__ import annotations

import math
from typing import Any

from pyzdb import codec
from pyzdb.files import files_in
from pyzdb.timeseries.calls import DUPLICATE_POLICIES, OPTIONS

RESERVED = ("pk", "ts")
"""Field names every row has: its key and its series."""
FIELD_DEPTH = codec.MAX_DEPTH - 4
"""Deepest field value: a row's fields sit a few levels below a collection in snapshots and replies."""
DEFAULTS: dict[str, Any] = {
    "schema": None,
    "index": [],
    "grid": None,
    "vantage_points": 20,
    "duplicate_policy": "last",
    "retention": 0,
}


def check_name(name: Any) -> str:
    """A collection name: a non-empty ``str``."""
    if type(name) is not str:
        raise TypeError(f"a collection name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("a collection name cannot be empty")
    return name


def check_pk(collection: str, pk: Any) -> Any:
    """A pk: a ``str`` or an ``int`` (not a bool)."""
    if type(pk) not in (str, int):
        raise TypeError(f"collection {collection!r}: a pk must be a str or an int, not {type(pk).__name__}")
    return pk


def normalize_options(collection: str, given: dict) -> dict:
    """The options given to ``db.timeseries``, checked and in their stored form."""
    unknown = sorted(set(given) - set(OPTIONS), key=str)
    if unknown:
        raise TypeError(f"collection {collection!r}: unknown option(s) {unknown} (known: {list(OPTIONS)})")
    options = {}
    if "schema" in given:
        options["schema"] = _schema(collection, given["schema"])
    schema = options.get("schema")
    for name, check in _CHECKS.items():
        if name in given:
            options[name] = check(collection, given[name], schema)
    return options


def differences(collection: str, existing: dict, given: dict) -> None:
    """Raise ``ValueError`` if ``given`` options (normalized) differ from the collection's."""
    if "index" in given and "schema" not in given and existing["schema"] is not None:
        _index(collection, given["index"], existing["schema"])  # the index must fit the schema it has
    for name, value in given.items():
        if _comparable(name, value) != _comparable(name, existing[name]):
            raise ValueError(
                f"collection {collection!r} exists with {name}={existing[name]!r}, not {value!r};"
                f" open it with db.timeseries({collection!r}) alone to use it as it is"
            )


def _comparable(name: str, value: Any) -> Any:
    if name == "index":
        return sorted(value)
    if name == "schema" and value is not None:
        return sorted(value.items())
    return value


def _schema(collection: str, schema: Any) -> dict[str, str] | None:
    if schema is None:
        return None
    if type(schema) is not dict:
        raise TypeError(f"collection {collection!r}: schema must be a dict of field: type")
    normalized = {}
    for field, kind in schema.items():
        _field_name(collection, field)
        if kind not in CONVERTERS:
            raise ValueError(
                f"collection {collection!r}: field {field!r} has type {kind!r}; use int, float, str or bool"
            )
        normalized[field] = kind
    return normalized


def _field_name(collection: str, field: Any) -> str:
    if type(field) is not str or not field:
        raise TypeError(f"collection {collection!r}: a field name must be a non-empty str, not {field!r}")
    if field in RESERVED:
        raise ValueError(f"collection {collection!r}: {field!r} is a reserved field name")
    return field


def _index(collection: str, index: Any, schema: dict | None) -> list[str]:
    if type(index) not in (list, tuple):
        raise TypeError(f"collection {collection!r}: index must be a list of field names")
    for field in index:
        _field_name(collection, field)
        if schema is not None and field not in schema:
            raise KeyError(f"collection {collection!r}: indexed field {field!r} is not in the schema")
    if len(set(index)) != len(index):
        raise ValueError(f"collection {collection!r}: index {list(index)} names a field twice")
    return sorted(index)


def _grid(collection: str, grid: Any, _schema: Any) -> list | None:
    if grid is None:
        return None
    if type(grid) not in (list, tuple) or len(grid) != 3:
        raise TypeError(f"collection {collection!r}: grid must be (start, stop, n)")
    start, stop, n = grid
    if not (_is_number(start) and _is_number(stop) and math.isfinite(start) and math.isfinite(stop)):
        raise ValueError(f"collection {collection!r}: grid start and stop must be finite numbers")
    if type(n) is not int or n < 2 or not start < stop:
        raise ValueError(f"collection {collection!r}: grid needs start < stop and an int n >= 2")
    return [float(start), float(stop), n]


def _vantage_points(collection: str, count: Any, _schema: Any) -> int:
    if type(count) is not int or count < 1:
        raise ValueError(f"collection {collection!r}: vantage_points must be an int >= 1, not {count!r}")
    return count


def _duplicate_policy(collection: str, policy: Any, _schema: Any) -> str:
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(
            f"collection {collection!r}: duplicate_policy {policy!r} is not one of {list(DUPLICATE_POLICIES)}"
        )
    return policy


def _retention(collection: str, retention: Any, _schema: Any) -> float | int:
    if not _is_number(retention) or not retention >= 0 or math.isinf(retention):
        raise ValueError(f"collection {collection!r}: retention must be a number >= 0, not {retention!r}")
    return retention


_CHECKS = {
    "index": _index,
    "grid": _grid,
    "vantage_points": _vantage_points,
    "duplicate_policy": _duplicate_policy,
    "retention": _retention,
}


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


# --- field values ------------------------------------------------------------------


def _to_int(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is bool:
        return int(value)
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str:
        return int(value.strip())
    raise ValueError


def _to_float(value: Any) -> float:
    if type(value) in (int, float, bool):
        return float(value)
    if type(value) is str:
        return float(value)
    raise ValueError


def _to_str(value: Any) -> str:
    if type(value) in (str, int, float, bool):
        return str(value)
    raise ValueError


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _to_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) in (int, float) and value in (0, 1):
        return bool(value)
    if type(value) is str and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


CONVERTERS = {"int": _to_int, "float": _to_float, "str": _to_str, "bool": _to_bool}


def convert(collection: str, schema: dict | None, field: Any, value: Any, where: str) -> Any:
    """The value to store for ``field``; ``where`` (``"pk 'ts-1'"``) names the row in errors."""
    if schema is None:
        _field_name(collection, field)
        return _free_value(collection, field, value, where)
    if field in RESERVED:
        raise ValueError(f"collection {collection!r}, {where}: {field!r} is a reserved field name")
    kind = schema.get(field) if type(field) is str else None
    if kind is None:
        raise KeyError(f"collection {collection!r}, {where}: field {field!r} is not in the schema")
    try:
        return CONVERTERS[kind](value)
    except (ValueError, OverflowError):
        raise ValueError(
            f"collection {collection!r}, {where}: field {field!r} = {codec.brief(value)} is not a {kind}"
        ) from None


def _free_value(collection: str, field: str, value: Any, where: str) -> Any:
    """A field of a collection without schema: any storable value but a File, not too deep."""
    if files_in(value):
        raise TypeError(f"collection {collection!r}, {where}: field {field!r} cannot hold a File")
    if codec.depth_of(value) > FIELD_DEPTH:
        raise ValueError(f"collection {collection!r}, {where}: field {field!r} is nested too deeply")
    return value


def check_field(collection: str, schema: dict | None, field: Any, allow: tuple = ("pk",)) -> str:
    """A field named in a query: in the schema (``KeyError`` otherwise) or one of ``allow``."""
    if type(field) is not str:
        raise TypeError(f"collection {collection!r}: a field name must be a str, not {type(field).__name__}")
    if field in allow:
        return field
    if field in RESERVED:
        raise ValueError(f"collection {collection!r}: field {field!r} cannot be used here")
    if schema is not None and field not in schema:
        raise KeyError(f"collection {collection!r} has no field {field!r} in its schema")
    return field
