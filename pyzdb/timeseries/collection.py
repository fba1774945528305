"""One collection: its rows, options and inverse-lookup indexes (no I/O).

A row is a dict of fields and, once it has one, its :class:`Samples`.  The
indexes map each value of an indexed field to the set of pks holding it.
They are derived data: never pickled, rebuilt whenever a collection is
loaded, and changed by the same three patch kinds that change the rows
(``put``, ``delete``, ``splice``), so every write, undo and redo keeps them
exact.  A row's fields dict is never changed in place: a new one replaces it,
which lets undo steps keep the old one as it was.

The similarity index (:mod:`pyzdb.timeseries.similarity`) is derived data
too: built on first use; the same patches mark the rows it must refresh
before its next use.

Each index also keeps its distinct values in order (:class:`SortedKeys`)
while they are all numbers or all strings, so that ``<``, ``<=``, ``>`` and
``>=`` on an indexed field find their values by binary search.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np

from pyzdb.timeseries.samples import Samples

_NOTHING = np.empty(0)


class Appends:
    """Samples one write appends after the last samples of rows: the usual write, made cheap to undo.

    The undo log keeps the write's patches, ``append`` for redo and
    ``truncate`` for undo, both holding this object.  It holds the samples
    only while they are not in the rows (before the write, and while it is
    undone): the log does not keep a second copy of every appended sample,
    and a step costs about 16 bytes per row it appended to.
    """

    __slots__ = ("pks", "starts", "held")

    def __init__(self) -> None:
        self.pks: list = []
        self.starts: Any = []
        self.held: list | None = []

    def add(self, pk: Any, start: int, times: np.ndarray, values: np.ndarray) -> None:
        """Plan: row ``pk`` (``start`` samples long) gets ``times``/``values`` at its end."""
        self.pks.append(pk)
        self.starts.append(start)
        self.held.append((times, values))

    def seal(self) -> Appends:
        """Done planning: the positions become one int64 array."""
        self.starts = np.array(self.starts, dtype=np.int64)
        return self

    def __getstate__(self) -> tuple:
        return (self.pks, self.starts, self.held)

    def __setstate__(self, state: tuple) -> None:
        self.pks, self.starts, self.held = state


def key_kind(value: Any) -> str | None:
    """``'num'`` or ``'str'``: values of one kind are ordered among themselves; ``None`` for others (nan)."""
    kind = type(value)
    if kind in (int, float, bool):
        return "num" if value == value else None
    return "str" if kind is str else None


class SortedKeys:
    """The distinct values of one index in order, while they are all of one :func:`key_kind`.

    A value of another kind makes it unusable until the indexes are rebuilt
    (on load); range conditions then test every distinct value instead.
    """

    __slots__ = ("keys", "kind", "usable")

    def __init__(self, keys: Iterable = ()) -> None:
        values = list(keys)
        kinds = {key_kind(value) for value in values}
        self.usable = len(kinds) <= 1 and None not in kinds
        self.kind = next(iter(kinds)) if self.usable and kinds else None
        self.keys = sorted(values) if self.usable else []

    def add(self, value: Any) -> None:
        """A new distinct value."""
        if not self.usable:
            return
        kind = key_kind(value)
        if kind is None or (self.keys and kind != self.kind):
            self.usable, self.keys = False, []
            return
        self.kind = kind
        bisect.insort(self.keys, value)

    def remove(self, value: Any) -> None:
        """A value no row holds any more."""
        if self.usable:
            del self.keys[bisect.bisect_left(self.keys, value)]

    def matching(self, op: str, operand: Any) -> list | None:
        """The values ``v`` with ``v op operand``, or ``None`` when this cannot tell (then test each)."""
        if not self.usable or (self.keys and key_kind(operand) != self.kind):
            return None
        keys = self.keys
        if op == "<":
            return keys[: bisect.bisect_left(keys, operand)]
        if op == "<=":
            return keys[: bisect.bisect_right(keys, operand)]
        if op == ">":
            return keys[bisect.bisect_right(keys, operand) :]
        return keys[bisect.bisect_left(keys, operand) :]  # ">="


class Row:
    """The fields of one row and its samples (``None`` until it has a series)."""

    __slots__ = ("fields", "samples")

    def __init__(self, fields: dict, samples: Samples | None) -> None:
        self.fields = fields
        self.samples = samples

    def __getstate__(self) -> tuple:
        return (self.fields, self.samples)

    def __setstate__(self, state: tuple) -> None:
        self.fields, self.samples = state


class Collection:
    """Rows by pk, the collection's options, and the indexes of its indexed fields."""

    def __init__(self, name: str, options: dict) -> None:
        self.name = name
        self.options = options
        self.rows: dict[Any, Row] = {}
        self.indexes: dict[str, dict[Any, set]] = {}
        self.sorted_keys: dict[str, SortedKeys] = {}
        self._similarity: Any = None
        self._rebuild_indexes()

    @classmethod
    def with_rows(cls, name: str, options: dict, rows: dict[Any, Row]) -> Collection:
        """A collection holding ``rows`` (pk -> :class:`Row`), its indexes built from them."""
        coll = cls(name, options)
        coll.rows = rows
        coll._rebuild_indexes()
        return coll

    @property
    def schema(self) -> dict | None:
        """Field name -> type name, or ``None`` for a collection that takes any field."""
        return self.options["schema"]

    def similarity(self) -> Any:
        """The similarity index (:class:`~.similarity.SimilarityIndex`), built on first use, up to date."""
        if self._similarity is None:
            from pyzdb.timeseries.similarity import SimilarityIndex  # it imports query, which imports us

            index = SimilarityIndex(self.options["grid"], self.options["vantage_points"])
            index.build((pk, row.samples) for pk, row in self.rows.items())
            self._similarity = index
        else:
            self._similarity.refresh(self.rows)
        return self._similarity

    def _resimilar(self, pk: Any) -> None:
        """Row ``pk``'s series changed: the similarity index (once built) refreshes it before its next use.

        A patch only marks the row, so writes stay O(1) however long the series (``add`` to a metric
        every second), and many writes to one row between two searches cost one refresh.
        """
        if self._similarity is not None:
            self._similarity.stale[pk] = None

    def _rebuild_indexes(self) -> None:
        self.indexes = {field: {} for field in self.options["index"]}
        for pk, row in self.rows.items():
            for field, index in self.indexes.items():
                if field in row.fields:
                    index.setdefault(row.fields[field], set()).add(pk)
        self.sorted_keys = {field: SortedKeys(index) for field, index in self.indexes.items()}

    def _index(self, pk: Any, fields: dict) -> None:
        for field, index in self.indexes.items():
            if field in fields:
                value = fields[field]
                pks = index.get(value)
                if pks is None:
                    index[value] = {pk}
                    self.sorted_keys[field].add(value)
                else:
                    pks.add(pk)

    def _unindex(self, pk: Any, fields: dict) -> None:
        for field, index in self.indexes.items():
            if field in fields:
                value = fields[field]
                pks = index[value]
                pks.discard(pk)
                if not pks:
                    del index[value]
                    self.sorted_keys[field].remove(value)

    # --- the patches (pyzdb.timeseries.registry applies them) ------------------------

    def put(self, pk: Any, fields: dict, samples: Samples | None) -> None:
        """Make ``pk`` the row ``(fields, samples)``, replacing any row it had."""
        old = self.rows.get(pk)
        if old is not None:
            self._unindex(pk, old.fields)
        self.rows[pk] = Row(fields, samples)
        self._index(pk, fields)
        if old is None or old.samples is not samples:
            self._resimilar(pk)

    def delete(self, pk: Any) -> None:
        """Remove the row ``pk``."""
        self._unindex(pk, self.rows.pop(pk).fields)
        self._resimilar(pk)

    def splice(self, pk: Any, start: int, stop: int, times: Any, values: Any) -> None:
        """Change the samples of row ``pk`` (see :meth:`Samples.splice`)."""
        self.rows[pk].samples.splice(start, stop, times, values)
        self._resimilar(pk)

    def append(self, appends: Appends) -> None:
        """Append each row's new samples, then let go of them (see :class:`Appends`)."""
        for pk, (times, values) in zip(appends.pks, appends.held, strict=True):
            samples = self.rows[pk].samples
            samples.splice(len(samples), len(samples), times, values)
            self._resimilar(pk)
        appends.held = None

    def truncate(self, appends: Appends) -> None:
        """Cut the appended samples off again, holding them for a redo."""
        held = []
        for pk, start in zip(appends.pks, appends.starts.tolist(), strict=True):
            samples = self.rows[pk].samples
            held.append((samples.times[start:].copy(), samples.values[start:].copy()))
            samples.splice(start, len(samples), _NOTHING, _NOTHING)
            self._resimilar(pk)
        appends.held = held

    # --- pickling: the indexes are rebuilt, never trusted from disk -----------------

    def __getstate__(self) -> dict:
        return {"name": self.name, "options": self.options, "rows": self.rows}

    def __setstate__(self, state: dict) -> None:
        self.name, self.options, self.rows = state["name"], state["options"], state["rows"]
        self._similarity = None
        self._rebuild_indexes()


def unhashable_indexed(collection: Collection, fields: dict) -> Iterable[str]:
    """The indexed fields of ``fields`` whose value cannot be an index key."""
    return [f for f in collection.indexes if f in fields and not _hashable(fields[f])]


def _hashable(value: Any) -> bool:
    if not isinstance(value, Hashable):
        return False
    try:
        hash(value)
    except TypeError:  # a tuple holding a list
        return False
    return True
