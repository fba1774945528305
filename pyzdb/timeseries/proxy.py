"""The client's view of a time-series collection: each call is one request (no I/O of its own).

``db.timeseries(name, ...)`` returns a :class:`CollectionRef`; its methods
send ``{"op": "ts", "path": [name], "method": ...}`` through the connection's
``call``, like every other reference (``pyzdb.proxy``).  Python types in a
schema travel as their names, ``madd`` samples as three columns, and range
answers as a ``TimeSeries`` (compact on the wire) turned back into
``[(t, v), ...]`` here.
"""

from __future__ import annotations

from typing import Any

_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool"}


class Default:
    """A keyword's default in ``db.timeseries``: distinguishable from the same value passed explicitly."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


DEFAULT_SCHEMA = Default(None)
DEFAULT_INDEX = Default(())
DEFAULT_GRID = Default(None)
DEFAULT_VANTAGE_POINTS = Default(20)
DEFAULT_DUPLICATE_POLICY = Default("last")
DEFAULT_RETENTION = Default(0)


def open_collection(conn: Any, name: str, options: dict) -> CollectionRef:
    """Open collection ``name``, creating it if it does not exist (SPEC §8 ``db.timeseries``).

    Only options passed explicitly are compared with an existing collection's
    (``ValueError`` when they differ).  Opening is a read; creating, one write.
    """
    given = wire_options(name, options)
    if conn.call("ts", (name,), "open", (), given) is None:
        conn.call("ts", (name,), "create", (), given)
    return CollectionRef(conn, name)


def wire_options(name: str, options: dict) -> dict:
    """The options given explicitly to ``db.timeseries``, as the ``open`` and ``create`` calls take them."""
    return {
        key: _wire_option(name, key, value) for key, value in options.items() if type(value) is not Default
    }


def _wire_option(name: str, key: str, value: Any) -> Any:
    if key == "schema" and type(value) is dict:
        return {field: _type_name(name, field, kind) for field, kind in value.items()}
    if key == "index" and type(value) is tuple:
        return list(value)
    return value


def _type_name(name: str, field: Any, kind: Any) -> Any:
    if isinstance(kind, type):
        if kind not in _TYPE_NAMES:
            raise ValueError(
                f"collection {name!r}: field {field!r} has type {kind.__name__}; use int, float, str or bool"
            )
        return _TYPE_NAMES[kind]
    return kind  # a name ('int', ...) travels as it is; the server checks it


def names(conn: Any) -> list[str]:
    """The names of every collection."""
    return conn.call("ts", (), "names")


def _is_numpy(value: Any) -> bool:
    return type(value).__module__ == "numpy"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (the codec stores only Python's own types)."""
    if type(value) not in (int, float, str) and _is_numpy(value) and hasattr(value, "item"):
        return value.item()
    return value


def _series_arg(series: Any) -> Any:
    """A ``(times, values)`` pair of numpy arrays as a TimeSeries: it travels as ``$ts``, not as numbers."""
    if type(series) in (tuple, list) and len(series) == 2 and any(map(_is_numpy, series)):
        from pyzdb.timeseries.series import TimeSeries  # numpy arrays: numpy is loaded already

        return TimeSeries(*series)
    return _plain(series)


def _zip_select(found: list) -> dict:
    pks, rows = found
    return {pk: {} for pk in pks} if rows is None else dict(zip(pks, rows, strict=True))


def _samples(found: list) -> list:
    return list(found)


def _pairs(found: list) -> list:
    return [(pk, d) for pk, d in found]


def _grouped(found: dict) -> dict:
    return {key: list(series) for key, series in found.items()}


class BaseCollection:
    """A time-series collection's calls, built without I/O; ``_call`` sends one (each client its way).

    Each method builds one request and names how its reply becomes the result,
    so the sync :class:`CollectionRef` and the asyncio client's collection share
    every call (SPEC §10: every sync call has its async twin).
    """

    __slots__ = ("_conn", "name")

    def __init__(self, conn: Any, name: str) -> None:
        self._conn = conn
        self.name = name

    def _call(self, method: str, *args: Any, finish: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<pyzdb timeseries {self.name!r}>"

    def _len(self) -> Any:
        """The number of rows."""
        return self._call("len")

    def _contains(self, pk: Any) -> Any:
        """True if row ``pk`` exists."""
        return self._call("contains", pk)

    def options(self) -> Any:
        """The collection's options (schema as type names, index, duplicate_policy, retention, ...)."""
        return self._call("open")

    def drop(self) -> Any:
        """Remove the collection and its rows (one write, undoable)."""
        return self._call("drop")

    def insert_ts(self, pk: str | int, series: Any) -> Any:
        """Add row ``pk`` with a series, or give one to a row that has none (``ValueError`` if it has)."""
        return self._call("insert_ts", pk, _series_arg(series))

    def upsert_meta(self, pk: str | int, meta: dict) -> Any:
        """Update row ``pk``'s fields (creating the row when new); a field set to ``None`` is removed."""
        return self._call("upsert_meta", pk, meta)

    def delete_ts(self, pk: str | int) -> Any:
        """Remove row ``pk`` (``KeyError`` when missing)."""
        return self._call("delete_ts", pk)

    def get(self, pk: str | int) -> Any:
        """Row ``pk`` as ``{'pk': ..., 'ts': TimeSeries or None, **fields}`` (``KeyError`` when missing)."""
        return self._call("get", pk)

    def select(
        self, meta: dict | None = None, fields: list | None = None, additional: dict | None = None
    ) -> Any:
        """``{pk: {field: value}}`` of the rows matching ``meta``, in pk or ``sort_by`` order."""
        return self._call("select", meta, fields, additional, finish=_zip_select)

    def augmented_select(
        self,
        proc: str,
        target: str | list[str],
        arg: Any = None,
        meta: dict | None = None,
        additional: dict | None = None,
    ) -> Any:
        """``{pk: {target[i]: result[i]}}`` of a server procedure (``'stats'``, ``'corr'``) on each row."""
        return self._call("augmented_select", proc, target, arg, meta, additional)

    def similar(self, query: Any, k: int = 5, *, meta: dict | None = None, include_self: bool = False) -> Any:
        """The ``k`` rows nearest ``query`` (a pk or a series): ``[(pk, distance), ...]`` by (distance, pk).

        Exact (SPEC §9); ``meta`` (select's syntax) restricts the rows searched; a stored query is
        left out of its own answer unless ``include_self``.
        """
        return self._call(
            "similar", _series_arg(query), _plain(k), meta=meta, include_self=include_self, finish=_pairs
        )

    def distance(self, a: Any, b: Any) -> Any:
        """SPEC §9's distance of two series, each a pk or a series."""
        return self._call("distance", _series_arg(a), _series_arg(b))

    def vantage_points(self) -> Any:
        """The pks of the vantage points the server chose for its similarity index."""
        return self._call("vantage_points")

    def add(self, pk: str | int, t: float, v: float) -> Any:
        """Add one sample to row ``pk`` at its time (creating the row when new)."""
        return self._call("add", _plain(pk), _plain(t), _plain(v))

    def madd(self, samples: list) -> Any:
        """Add many ``(pk, t, v)`` samples in one request: all of them, or none."""
        if isinstance(samples, (str, bytes)) or not hasattr(samples, "__iter__"):
            raise TypeError("madd() takes a list of (pk, t, v) samples")
        samples = list(samples)
        if set(map(len, samples)) - {3}:
            i = next(i for i, sample in enumerate(samples) if len(sample) != 3)
            raise ValueError(f"madd(): sample {i} is {samples[i]!r}, not (pk, t, v)")
        columns = [list(column) for column in zip(*samples, strict=True)] if samples else [[], [], []]
        for column in columns:
            if not set(map(type, column)) <= {str, int, float}:  # numpy scalars: Python numbers
                column[:] = map(_plain, column)
        return self._call("madd", *columns)

    def range(
        self,
        pk: str | int,
        start: Any = "-",
        end: Any = "+",
        *,
        aggregation: str | None = None,
        bucket: Any = None,
    ) -> Any:
        """Samples ``[(t, v), ...]`` of row ``pk`` with ``start <= t <= end``, aggregated if asked."""
        return self._call(
            "range",
            pk,
            _plain(start),
            _plain(end),
            aggregation=aggregation,
            bucket=_plain(bucket),
            finish=_samples,
        )

    def mrange(
        self,
        start: Any = "-",
        end: Any = "+",
        *,
        meta: dict | None = None,
        aggregation: str | None = None,
        bucket: Any = None,
        group_by: Any = None,
        reduce: str | None = None,
    ) -> Any:
        """``range`` of every row ``meta`` selects: ``{pk: [(t, v), ...]}``, or per group (``group_by``)."""
        return self._call(
            "mrange",
            _plain(start),
            _plain(end),
            meta=meta,
            aggregation=aggregation,
            bucket=_plain(bucket),
            group_by=group_by,
            reduce=reduce,
            finish=_grouped,
        )


class CollectionRef(BaseCollection):
    """A time-series collection on the server (sync client); every method is one request."""

    __slots__ = ()

    def _call(self, method: str, *args: Any, finish: Any = None, **kwargs: Any) -> Any:
        result = self._conn.call("ts", (self.name,), method, args, kwargs)
        return result if finish is None else finish(result)

    def __len__(self) -> int:
        return self._len()

    def __contains__(self, pk: Any) -> bool:
        return self._contains(pk)
