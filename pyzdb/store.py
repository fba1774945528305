"""The store: the data tree, its undo log, and the operations on them (no I/O)."""

from __future__ import annotations

import copy
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pyzdb import codec, errors, ops
from pyzdb.tree import Path, apply_patches, resolve
from pyzdb.undo import UndoLog

PAGE_ENVELOPE_BYTES = 128
"""Room a page's reply needs besides its items: ``{"v":1,"id":..,"ok":true,"result":{..}}``."""
MIN_PAGE_BYTES = 256
MAX_PAGE_ITEMS = 1_000_000


class ChangeLog:
    """The store's version, and which values changed since an earlier one (no I/O).

    The version counts the writes applied (it is saved with the snapshot, and a
    replica that replays the same journal counts the same).  For each write
    the log marks the node each patch changed, and every node above it, with
    the new version; a value at ``path`` changed since ``v`` if a mark at
    ``path`` (a change inside it) or at a node above it (the value replaced)
    is newer than ``v``.  The marks are bounded: the oldest are forgotten, and
    ``floor`` says up to which version the log no longer knows (a question
    about an older version answers "changed").  Undo, redo and exec change
    everything.

    Marking costs a few microseconds a write, so the log marks only while
    streams are being read: from the first ``page`` request (:meth:`watch`)
    until ``WATCH_S`` seconds after the last one.  Otherwise it only counts,
    and ``floor`` follows the version; a stream always starts with a page
    that watches, so it only loses the answer "unchanged" if it pauses longer
    than that between two pages.
    """

    __slots__ = ("version", "floor", "limit", "watching_until", "_under", "_at")

    WATCH_S = 300.0

    def __init__(self, version: int = 0, limit: int = 100_000) -> None:
        self.version = version
        self.floor = version
        self.limit = limit
        self.watching_until = 0.0
        """Until when (``time.monotonic()``) writes are marked: some stream read a page recently."""
        self._under: OrderedDict[tuple, int] = OrderedDict()
        self._at: OrderedDict[tuple, int] = OrderedDict()

    def watch(self) -> None:
        """A stream read a page: mark the writes of the next ``WATCH_S`` seconds."""
        self.watching_until = time.monotonic() + self.WATCH_S

    def record(self, patches: list) -> None:
        """A write made of ``patches`` was applied."""
        self.version += 1
        if time.monotonic() > self.watching_until:  # nobody streams: count only
            self.floor = self.version
            if self._at:
                self._under.clear()
                self._at.clear()
            return
        for patch in patches:
            kind, node = patch[0], patch[1]
            if kind == "object":
                continue  # a time-series collection: not part of the tree that streams read
            # set and put_at change one child; the others may move every child of the node
            changed = (*node, patch[2]) if kind in ("set", "put_at") else tuple(node)
            self._mark(self._at, changed)
            for depth in range(len(changed) + 1):
                self._mark(self._under, changed[:depth])

    def everything(self) -> None:
        """Record a change that may have touched any value (undo, redo, exec)."""
        self.version += 1
        self.floor = self.version
        self._under.clear()
        self._at.clear()

    def changed_since(self, path: tuple, version: int) -> bool:
        """True if the value at ``path`` may have changed after ``version``."""
        if version < self.floor or version > self.version:
            return True
        if self._under.get(path, 0) > version:
            return True
        return any(self._at.get(path[:depth], 0) > version for depth in range(len(path) + 1))

    def _mark(self, table: OrderedDict, key: tuple) -> None:
        try:
            table[key] = self.version
        except TypeError:  # an unhashable step cannot be looked up either: forget all before now
            self.floor = self.version
            return
        table.move_to_end(key)
        if len(table) > self.limit:
            self.floor = max(self.floor, table.popitem(last=False)[1])


class Store:
    """Nested dicts and lists with one undo step per write."""

    def __init__(
        self, root: dict | None = None, undo_limit: int = 1000, timeseries: Any = None, version: int = 0
    ) -> None:
        self.root: dict = {} if root is None else root
        self.history = UndoLog(undo_limit)
        self._timeseries = timeseries
        self.changes = ChangeLog(version)

    @classmethod
    def from_state(cls, state: dict, undo_limit: int) -> Store:
        """The store saved as :meth:`state` (any key may be missing: an older or an empty snapshot)."""
        store = cls(state.get("root", {}), undo_limit, state.get("timeseries"), state.get("version", 0))
        if "history" in state:
            store.history = state["history"]
            store.history.resize(undo_limit)
        return store

    def state(self) -> dict:
        """What a snapshot keeps of the store: pickled together, so undo steps and data stay shared."""
        return {
            "root": self.root,
            "history": self.history,
            "timeseries": self._timeseries,
            "version": self.changes.version,
        }

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
        if op == "page":
            return self.page(tuple(path), *args)
        return ops.read(self.root, op, tuple(path), method, list(args), kwargs or {})

    def page(self, path: Path, start: Any, items: Any, max_bytes: Any, since: Any) -> dict:
        """One page of a stream: items ``start`` on of the list (or dict keys) at ``path``.

        At most ``items`` items and at most ``max_bytes`` bytes of reply on the
        wire; ``next`` is where the following page starts (``None``: the last
        page).  With ``since`` (the version of the stream's first page), a
        change to the value after it raises :class:`ChangedError`.
        """
        start, items, max_bytes = _page_arguments(path, start, items, max_bytes, since)
        self.changes.watch()
        if since is not None and self.changes.changed_since(path, since):
            raise errors.ChangedError(
                f"the value at {list(path)!r} changed since the stream's first page (version {since}; "
                f"this server is at {self.changes.version})"
            )
        node = resolve(self.root, path)
        if type(node) is list:
            chunk = node[start : start + items]
        elif type(node) is dict:
            chunk = list(itertools.islice(node, start, start + items))
        else:
            raise TypeError(f"only a list or a dict can be streamed, not a {type(node).__name__}")
        chunk = _fit(chunk, max_bytes - PAGE_ENVELOPE_BYTES, start)
        end = start + len(chunk)
        return {"items": chunk, "next": end if end < len(node) else None, "version": self.changes.version}

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
        change = self._plan(op, path, method, args, kwargs or {})
        if before_apply is not None:
            before_apply()
        apply_patches(self.root, change.forward)
        self.history.record(change.forward, change.inverse)
        self.changes.record(change.forward)
        return change.result

    def plan(self, op: str, path: Path = (), method: str | None = None, args=(), kwargs=None) -> None:
        """Check that a write would succeed, changing nothing (raises what :meth:`write` would)."""
        self._plan(op, path, method, args, kwargs or {})

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
                        change = self._plan(op, path, method, args, kwargs)
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
            self.changes.record(forward)
        return results

    def _plan(self, op: str, path: Path, method: str | None, args, kwargs: dict) -> Any:
        """The change a write would make (the collections plan op ``ts``, ``pyzdb.ops`` the tree)."""
        if op == "ts":
            return self.timeseries.plan(tuple(path), method, list(args), kwargs)
        return ops.plan_write(self.root, op, tuple(path), method, list(args), kwargs)

    def undo(self, before_apply: Callable[[], None] | None = None) -> None:
        """Revert the newest write (raises ``UndoError`` when there is none)."""
        self.history.undo(self.root, before_apply)
        self.changes.everything()

    def redo(self, before_apply: Callable[[], None] | None = None) -> None:
        """Re-apply the newest undone write (raises ``UndoError`` when there is none)."""
        self.history.redo(self.root, before_apply)
        self.changes.everything()


def _page_arguments(path: Path, start: Any, items: Any, max_bytes: Any, since: Any) -> tuple[int, int, int]:
    if any(type(step) is slice for step in path):
        raise errors.NotAllowedError("a slice cannot be streamed; stream the list and skip")
    for name, value, low, high in (
        ("start", start, 0, None),
        ("page_items", items, 1, MAX_PAGE_ITEMS),
        ("page_bytes", max_bytes, MIN_PAGE_BYTES, None),
    ):
        if type(value) is not int or value < low or (high is not None and value > high):
            bounds = f"from {low}" + (f" to {high}" if high is not None else "")
            raise ValueError(f"{name} must be an integer {bounds}, not {codec.brief(value)}")
    if since is not None and type(since) is not int:
        raise ValueError(f"since must be a version number or null, not {codec.brief(since)}")
    return start, items, max_bytes


def _fit(chunk: list, budget: int, start: int) -> list:
    """The longest head of ``chunk`` whose JSON fits ``budget`` bytes (halving until it does)."""
    while True:
        size = len(codec.dumps(codec.encode(chunk, "result")))
        if size <= budget:
            return chunk
        if len(chunk) == 1:
            raise errors.TooLargeError(
                f"item {start} takes {size} bytes on the wire, more than page_bytes allows "
                f"({budget + PAGE_ENVELOPE_BYTES}); read it with _run()"
            )
        chunk = chunk[: len(chunk) // 2]
