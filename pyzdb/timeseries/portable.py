"""Collections in a plain, checked form, for full copies to replicas (no pickle, no I/O).

A snapshot pickles the collections with the tree, but a replica on another
machine must never unpickle what comes from the network, so a full copy
carries them as plain values that pyzdb's codec encodes:

    [{"name": str, "options": {...}, "rows": [[pk, fields, TimeSeries | None], ...]}, ...]

:func:`from_plain` checks everything as a write would (names, options, pks,
field values, the series' order) and rebuilds the indexes, so a copy that
decodes is a registry the writer could have built.
"""

from __future__ import annotations

from typing import Any

from pyzdb.timeseries import schema
from pyzdb.timeseries.collection import Collection, Row, unhashable_indexed
from pyzdb.timeseries.registry import Registry
from pyzdb.timeseries.samples import Samples
from pyzdb.timeseries.series import TimeSeries


def to_plain(registry: Registry) -> list[dict]:
    """Every collection of ``registry``, as plain values (series as :class:`TimeSeries`)."""
    return [
        {
            "name": coll.name,
            "options": coll.options,
            "rows": [
                [pk, row.fields, None if row.samples is None else row.samples.series()]
                for pk, row in coll.rows.items()
            ],
        }
        for coll in registry.collections.values()
    ]


def from_plain(data: Any) -> Registry:
    """The registry that :func:`to_plain` described; ``ValueError`` naming the first thing wrong."""
    if type(data) is not list:
        raise ValueError("the collections of a copy are a list")
    registry = Registry()
    for entry in data:
        try:
            coll = _collection(entry)
        except (TypeError, KeyError) as exc:
            raise ValueError(f"collection in a copy: {exc}") from None
        if coll.name in registry.collections:
            raise ValueError(f"collection {coll.name!r} twice in a copy")
        registry.collections[coll.name] = coll
    return registry


def _collection(entry: Any) -> Collection:
    if type(entry) is not dict or set(entry) != {"name", "options", "rows"}:
        raise ValueError("a collection of a copy has exactly a name, options and rows")
    name = schema.check_name(entry["name"])
    options = entry["options"]
    if type(options) is not dict or set(options) != set(schema.DEFAULTS):
        raise ValueError(f"collection {name!r}: its options must name exactly {sorted(schema.DEFAULTS)}")
    empty = Collection(name, {**schema.DEFAULTS, **schema.normalize_options(name, options)})
    if type(entry["rows"]) is not list:
        raise ValueError(f"collection {name!r}: its rows are a list")
    rows: dict[Any, Row] = {}
    for row in entry["rows"]:
        pk, fields, samples = _row(empty, row)
        if pk in rows:
            raise ValueError(f"collection {name!r}: pk {pk!r} twice")
        rows[pk] = Row(fields, samples)
    return Collection.with_rows(name, empty.options, rows)


def _row(coll: Collection, row: Any) -> tuple[Any, dict, Samples | None]:
    if type(row) is not list or len(row) != 3:
        raise ValueError(f"collection {coll.name!r}: a row of a copy is [pk, fields, series]")
    pk, fields, series = row
    schema.check_pk(coll.name, pk)
    if type(fields) is not dict:
        raise ValueError(f"collection {coll.name!r}, pk {pk!r}: fields are a dict")
    fields = {
        field: schema.convert(coll.name, coll.schema, field, value, f"pk {pk!r}")
        for field, value in fields.items()
    }
    bad = unhashable_indexed(coll, fields)
    if bad:
        raise ValueError(f"collection {coll.name!r}, pk {pk!r}: indexed field {bad[0]!r} is not hashable")
    if series is None:
        return pk, fields, None
    if type(series) is not TimeSeries:
        raise ValueError(f"collection {coll.name!r}, pk {pk!r}: its series is a TimeSeries or null")
    return pk, fields, Samples(series.times, series.values)
