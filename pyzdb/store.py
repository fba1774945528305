"""The store: the data tree, its undo log, and the operations on them (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyzdb import ops
from pyzdb.tree import Path, apply_patches
from pyzdb.undo import UndoLog


class Store:
    """Nested dicts and lists with one undo step per write."""

    def __init__(self, root: dict | None = None, undo_limit: int = 1000, timeseries: Any = None) -> None:
        self.root: dict = {} if root is None else root
        self.history = UndoLog(undo_limit)
        self._timeseries = timeseries

    @classmethod
    def from_state(cls, state: dict, undo_limit: int) -> Store:
        """The store saved as :meth:`state` (any key may be missing: an older or an empty snapshot)."""
        store = cls(state.get("root", {}), undo_limit, state.get("timeseries"))
        if "history" in state:
            store.history = state["history"]
            store.history.resize(undo_limit)
        return store

    def state(self) -> dict:
        """What a snapshot keeps of the store: pickled together, so undo steps and data stay shared."""
        return {"root": self.root, "history": self.history, "timeseries": self._timeseries}

    @property
    def timeseries(self) -> Any:
        """The time-series collections (``pyzdb.timeseries.registry.Registry``), made on first use."""
        if self._timeseries is None:
            from pyzdb.timeseries.registry import Registry  # numpy: only for stores that use collections

            self._timeseries = Registry()
        return self._timeseries

    def read(self, op: str, path: Path = (), method: str | None = None, args=(), kwargs=None) -> Any:
        """Run a read operation; the result may be a live part of the store."""
        if op == "ts":
            return self.timeseries.read(tuple(path), method, list(args), kwargs or {})
        return ops.read(self.root, op, tuple(path), method, list(args), kwargs or {})

    def write(
        self,
        op: str,
        path: Path = (),
        method: str | None = None,
        args=(),
        kwargs=None,
        before_apply: Callable[[], None] | None = None,
    ) -> Any:
        """Run a write operation as one undo step and return its result.

        ``before_apply`` runs once the write is known to be valid and before the
        store changes (the journal append); if it raises, nothing changes.
        """
        if op == "ts":
            change = self.timeseries.plan(tuple(path), method, list(args), kwargs or {})
        else:
            change = ops.plan_write(self.root, op, tuple(path), method, list(args), kwargs or {})
        if before_apply is not None:
            before_apply()
        apply_patches(self.root, change.forward)
        self.history.record(change.forward, change.inverse)
        return change.result

    def plan(self, op: str, path: Path = (), method: str | None = None, args=(), kwargs=None) -> None:
        """Check that a write would succeed, changing nothing (raises what :meth:`write` would)."""
        ops.plan_write(self.root, op, tuple(path), method, list(args), kwargs or {})

    def undo(self, before_apply: Callable[[], None] | None = None) -> None:
        """Revert the newest write (raises ``UndoError`` when there is none)."""
        self.history.undo(self.root, before_apply)

    def redo(self, before_apply: Callable[[], None] | None = None) -> None:
        """Re-apply the newest undone write (raises ``UndoError`` when there is none)."""
        self.history.redo(self.root, before_apply)
