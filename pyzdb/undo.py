"""pyzdb's own undo log (no I/O).

Every write request is one *step*: the patches that made it (``forward``)
and the patches that undo it (``inverse``), both planned by ``pyzdb.ops``
before the store changed.  ``undo()`` applies a step's inverse and moves it to
the redo stack; ``redo()`` applies its forward patches again; any new write
clears the redo stack.  The undo stack keeps the newest ``limit`` steps.

Patches may hold values that are also in the store.  That is safe because
steps are undone and redone strictly in order: when a step is undone or
redone, the store is exactly as it was when the step was recorded.  The log
is pickled together with the store (one ``pickle.dump``), which keeps those
shared values shared, and so do the time-series collections that ``object``
patches refer to (``Store.state``).  See
docs/decisions/0001-own-undo-log.md for why pyzdb does not use the
``undoable`` package.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from pyzdb.errors import UndoError
from pyzdb.tree import Patch, apply_patches

Step = tuple[list[Patch], list[Patch]]


class UndoLog:
    """Bounded undo and redo stacks of steps."""

    def __init__(self, limit: int = 1000) -> None:
        if limit < 0:
            raise ValueError("the undo limit cannot be negative")
        self.limit = limit
        self._undo: deque[Step] = deque(maxlen=limit)
        self._redo: list[Step] = []

    def record(self, forward: list[Patch], inverse: list[Patch]) -> None:
        """Remember a write that has just been applied."""
        self._undo.append((forward, inverse))
        self._redo.clear()

    def undo(self, root: Any, before_apply: Callable[[], None] | None = None) -> None:
        """Revert the newest step, or raise :class:`UndoError`; ``before_apply`` may veto by raising."""
        if not self._undo:
            raise UndoError("nothing to undo")
        if before_apply is not None:
            before_apply()
        step = self._undo.pop()
        apply_patches(root, step[1])
        self._redo.append(step)

    def redo(self, root: Any, before_apply: Callable[[], None] | None = None) -> None:
        """Re-apply the newest undone step, or raise :class:`UndoError`; ``before_apply`` may veto."""
        if not self._redo:
            raise UndoError("nothing to redo")
        if before_apply is not None:
            before_apply()
        step = self._redo.pop()
        apply_patches(root, step[0])
        self._undo.append(step)

    @property
    def can_undo(self) -> int:
        """How many steps can be undone."""
        return len(self._undo)

    @property
    def can_redo(self) -> int:
        """How many steps can be redone."""
        return len(self._redo)

    def __getstate__(self) -> dict:
        return {"limit": self.limit, "undo": list(self._undo), "redo": self._redo}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limit"])
        self._undo.extend(state["undo"])
        self._redo.extend(state["redo"])

    def resize(self, limit: int) -> None:
        """Change the bound, keeping the newest steps."""
        steps = list(self._undo)
        self.limit = limit
        self._undo = deque(steps, maxlen=limit)
