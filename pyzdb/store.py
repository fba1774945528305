"""The store: the data tree, its undo log, and the operations on them (no I/O)."""

from __future__ import annotations

import copy
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

    def batch(self, operations: list[tuple], before_commit: Callable[[], None] | None = None) -> list:
        """Run ``(is_write, op, path, method, args, kwargs)`` operations in order, all or nothing.

        Each sees the ones before it.  If one raises, the writes before it are
        reverted by their inverse patches, the store is as it was, and the
        error gets ``batch_index``.  ``before_commit`` (the journal append)
        runs once every operation has succeeded; if it raises, everything is
        reverted too.  The writes make one undo step.  Read results are
        copied, so a later operation of the batch cannot change them.
        """
        forward: list = []
        inverses: list[list] = []
        results: list = []
        try:
            for index, (write, op, path, method, args, kwargs) in enumerate(operations):
                try:
                    if write:
                        change = ops.plan_write(self.root, op, tuple(path), method, list(args), kwargs)
                        apply_patches(self.root, change.forward)
                        forward.extend(change.forward)
                        inverses.append(change.inverse)
                        results.append(change.result)
                    else:
                        results.append(copy.deepcopy(self.read(op, path, method, args, kwargs)))
                except Exception as exc:
                    exc.batch_index = index
                    raise
            if before_commit is not None:
                before_commit()
        except BaseException:
            for inverse in reversed(inverses):
                apply_patches(self.root, inverse)
            raise
        if forward:
            self.history.record(forward, [patch for inverse in reversed(inverses) for patch in inverse])
        return results

    def undo(self, before_apply: Callable[[], None] | None = None) -> None:
        """Revert the newest write (raises ``UndoError`` when there is none)."""
        self.history.undo(self.root, before_apply)

    def redo(self, before_apply: Callable[[], None] | None = None) -> None:
        """Re-apply the newest undone write (raises ``UndoError`` when there is none)."""
        self.history.redo(self.root, before_apply)
