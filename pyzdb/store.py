"""The store: the data tree, its undo log, and the operations on them (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyzdb import ops
from pyzdb.tree import Path, apply_patches
from pyzdb.undo import UndoLog


class Store:
    """Nested dicts and lists with one undo step per write."""

    def __init__(self, root: dict | None = None, undo_limit: int = 1000) -> None:
        self.root: dict = {} if root is None else root
        self.history = UndoLog(undo_limit)

    def read(self, op: str, path: Path = (), method: str | None = None, args=(), kwargs=None) -> Any:
        """Run a read operation; the result may be a live part of the store."""
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
