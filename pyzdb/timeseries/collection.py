"""One collection: its rows, options and inverse-lookup indexes (no I/O).

A row is a dict of fields and, once it has one, its :class:`Samples`.  The
indexes map each value of an indexed field to the set of pks holding it.
They are derived data: never pickled, rebuilt whenever a collection is
loaded, and changed by the same three patch kinds that change the rows
(``put``, ``delete``, ``splice``), so every write, undo and redo keeps them
exact.  A row's fields dict is never changed in place: a new one replaces it,
which lets undo steps keep the old one as it was.
"""

from __future__ import annotations

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
        self._rebuild_indexes()

    @property
    def schema(self) -> dict | None:
        """Field name -> type name, or ``None`` for a collection that takes any field."""
        return self.options["schema"]

    def _rebuild_indexes(self) -> None:
        self.indexes = {field: {} for field in self.options["index"]}
        for pk, row in self.rows.items():
            self._index(pk, row.fields)

    def _index(self, pk: Any, fields: dict) -> None:
        for field, index in self.indexes.items():
            if field in fields:
                index.setdefault(fields[field], set()).add(pk)

    def _unindex(self, pk: Any, fields: dict) -> None:
        for field, index in self.indexes.items():
            if field in fields:
                value = fields[field]
                pks = index[value]
                pks.discard(pk)
                if not pks:
                    del index[value]

    # --- the patches (pyzdb.timeseries.registry applies them) ------------------------

    def put(self, pk: Any, fields: dict, samples: Samples | None) -> None:
        """Make ``pk`` the row ``(fields, samples)``, replacing any row it had."""
        old = self.rows.get(pk)
        if old is not None:
            self._unindex(pk, old.fields)
        self.rows[pk] = Row(fields, samples)
        self._index(pk, fields)

    def delete(self, pk: Any) -> None:
        """Remove the row ``pk``."""
        self._unindex(pk, self.rows.pop(pk).fields)

    def splice(self, pk: Any, start: int, stop: int, times: Any, values: Any) -> None:
        """Change the samples of row ``pk`` (see :meth:`Samples.splice`)."""
        self.rows[pk].samples.splice(start, stop, times, values)

    def append(self, appends: Appends) -> None:
        """Append each row's new samples, then let go of them (see :class:`Appends`)."""
        for pk, (times, values) in zip(appends.pks, appends.held, strict=True):
            samples = self.rows[pk].samples
            samples.splice(len(samples), len(samples), times, values)
        appends.held = None

    def truncate(self, appends: Appends) -> None:
        """Cut the appended samples off again, holding them for a redo."""
        held = []
        for pk, start in zip(appends.pks, appends.starts.tolist(), strict=True):
            samples = self.rows[pk].samples
            held.append((samples.times[start:].copy(), samples.values[start:].copy()))
            samples.splice(start, len(samples), _NOTHING, _NOTHING)
        appends.held = held

    # --- pickling: the indexes are rebuilt, never trusted from disk -----------------

    def __getstate__(self) -> dict:
        return {"name": self.name, "options": self.options, "rows": self.rows}

    def __setstate__(self, state: dict) -> None:
        self.name, self.options, self.rows = state["name"], state["options"], state["rows"]
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
