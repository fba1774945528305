"""The store: the data tree, its undo log, and the operations on them (no I/O)."""

from __future__ import annotations

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

    def write(self, op: str, path: Path = (), method: str | None = None, args=(), kwargs=None) -> Any:
        """Run a write operation as one undo step and return its result."""
        change = ops.plan_write(self.root, op, tuple(path), method, list(args), kwargs or {})
        apply_patches(self.root, change.forward)
        self.history.record(change.forward, change.inverse)
        return change.result

    def undo(self) -> None:
        """Revert the newest write (raises ``UndoError`` when there is none)."""
        self.history.undo(self.root)

    def redo(self) -> None:
        """Re-apply the newest undone write (raises ``UndoError`` when there is none)."""
        self.history.redo(self.root)
