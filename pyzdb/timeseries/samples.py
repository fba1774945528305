"""The samples of one row: a growable pair of float64 arrays, and the planning of changes to them (no I/O).

Every change to a row's samples is a *splice*: replace the samples at
positions ``start:stop`` with new ones, as a list slice assignment.  A
splice's inverse is a splice too, so undo and redo hold only the samples a
write touched: appending one sample to a series of a million keeps one
sample in the undo log, not a copy of the series.

:func:`plan_merge` works out the splices that add samples under a duplicate
policy and a retention, without changing anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyzdb.timeseries.series import TimeSeries

Splice = tuple  # (start, stop, times, values)
_EMPTY = np.empty(0)
_EMPTY.flags.writeable = False
_MIN_CAPACITY = 16


class Samples:
    """The samples of one row, sorted by time; appending is amortised O(1), dropping the oldest O(1)."""

    __slots__ = ("_t", "_v", "_lo", "_hi")

    def __init__(self, times: np.ndarray = _EMPTY, values: np.ndarray = _EMPTY) -> None:
        self._t = np.array(times, dtype=np.float64)
        self._v = np.array(values, dtype=np.float64)
        self._lo, self._hi = 0, len(self._t)

    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def times(self) -> np.ndarray:
        """A view of the times: valid until the next change."""
        return self._t[self._lo : self._hi]

    @property
    def values(self) -> np.ndarray:
        """A view of the values: valid until the next change."""
        return self._v[self._lo : self._hi]

    def series(self) -> TimeSeries:
        """A :class:`TimeSeries` of the samples as they are now (a copy)."""
        return TimeSeries._trusted(self.times.copy(), self.values.copy())

    def splice(self, start: int, stop: int, times: np.ndarray, values: np.ndarray) -> None:
        """``samples[start:stop] = (times, values)``; the caller keeps the result sorted."""
        n, m = len(self), len(times)
        if start == stop == n and self._hi + m <= len(self._t):
            self._t[self._hi : self._hi + m] = times
            self._v[self._hi : self._hi + m] = values
            self._hi += m
        elif m == 0 and start == 0:
            self._lo += stop
        elif m == 0 and stop == n:
            self._hi = self._lo + start
        else:
            self._rebuild(start, stop, times, values, grow=start == stop == n)

    def _rebuild(self, start: int, stop: int, times: np.ndarray, values: np.ndarray, grow: bool) -> None:
        size = len(self) - (stop - start) + len(times)
        # appends leave an eighth spare (amortised O(1), at most 18 bytes a sample);
        # other changes allocate exactly
        capacity = max(size + size // 8, _MIN_CAPACITY) if grow else size
        new_t, new_v = np.empty(capacity), np.empty(capacity)
        for new, old, part in ((new_t, self.times, times), (new_v, self.values, values)):
            new[:start] = old[:start]
            new[start : start + len(part)] = part
            new[start + len(part) : size] = old[stop:]
        self._t, self._v, self._lo, self._hi = new_t, new_v, 0, size

    def __getstate__(self) -> tuple:
        return (self.times, self.values)  # numpy pickles only the live part of the buffer

    def __setstate__(self, state: tuple) -> None:
        self._t, self._v = (np.array(part, dtype=np.float64) for part in state)
        self._lo, self._hi = 0, len(self._t)


# --- planning changes ----------------------------------------------------------------


def _combine(policy: str, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    if policy == "last":
        return new
    if policy == "first":
        return old
    if policy == "min":
        return np.fmin(old, new)
    if policy == "max":
        return np.fmax(old, new)
    return old + new  # "sum"


def _dedupe(times: np.ndarray, values: np.ndarray, policy: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Sort new samples by time and combine those at the same time, in the order they were given."""
    if len(times) < 2 or bool(np.all(times[1:] > times[:-1])):
        return times, values  # the usual case: in order already
    order = np.argsort(times, kind="stable")
    times, values = times[order], values[order]
    if len(times) < 2:
        return times, values
    starts = np.flatnonzero(np.concatenate(([True], times[1:] != times[:-1])))
    if len(starts) == len(times):
        return times, values
    if policy == "block":
        dup = times[np.flatnonzero(times[1:] == times[:-1])[0]]
        raise ValueError(f"{where}: two samples at time {float(dup)!r} (duplicate_policy 'block')")
    ends = np.concatenate((starts[1:], [len(times)]))
    if policy == "last":
        combined = values[ends - 1]
    elif policy == "first":
        combined = values[starts]
    elif policy == "sum":
        combined = np.add.reduceat(values, starts)
    else:
        combined = (np.fmin if policy == "min" else np.fmax).reduceat(values, starts)
    return times[starts], combined


def plan_merge(
    samples: Samples | None, times: np.ndarray, values: np.ndarray, policy: str, retention: float, where: str
) -> tuple[list[Splice], list[Splice]]:
    """The forward and inverse splices that add ``(times, values)`` to ``samples``.

    Samples at a time already present follow ``policy``; with ``retention`` > 0,
    samples older than the newest minus ``retention`` are dropped.  Raises
    ``ValueError`` (naming ``where``) under the ``block`` policy.
    """
    times, values = _dedupe(times, values, policy, where)
    old_t = _EMPTY if samples is None else samples.times
    old_v = _EMPTY if samples is None else samples.values
    n = len(old_t)
    lo = int(np.searchsorted(old_t, times[0], "left")) if len(times) else n
    region_t, region_v = old_t[lo:].copy(), old_v[lo:].copy()
    merged_t, merged_v = _merge(region_t, region_v, times, values, policy, where)
    forward = [(lo, n, merged_t, merged_v)]
    inverse = [(lo, lo + len(merged_t), region_t, region_v)]
    if retention > 0 and len(merged_t):
        cutoff = merged_t[-1] - retention
        drop_new = int(np.searchsorted(merged_t, cutoff, "left"))
        drop_old = int(np.searchsorted(old_t[:lo], cutoff, "left"))
        if drop_new:
            merged_t, merged_v = merged_t[drop_new:], merged_v[drop_new:]
            forward = [(lo, n, merged_t, merged_v)]
            inverse = [(lo, lo + len(merged_t), region_t, region_v)]
        if drop_old:
            forward.append((0, drop_old, _EMPTY, _EMPTY))
            inverse.insert(0, (0, 0, old_t[:drop_old].copy(), old_v[:drop_old].copy()))
    return forward, inverse


def _merge(
    old_t: np.ndarray, old_v: np.ndarray, times: np.ndarray, values: np.ndarray, policy: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
    if not len(old_t):
        return times, values
    at = np.searchsorted(old_t, times)
    clipped = np.minimum(at, len(old_t) - 1)
    existing = (at < len(old_t)) & (old_t[clipped] == times)
    kept_v = old_v.copy()
    if existing.any():
        if policy == "block":
            raise ValueError(
                f"{where}: a sample at time {float(times[existing][0])!r} exists (duplicate_policy 'block')"
            )
        kept_v[at[existing]] = _combine(policy, old_v[at[existing]], values[existing])
    merged_t = np.concatenate((old_t, times[~existing]))
    merged_v = np.concatenate((kept_v, values[~existing]))
    order = np.argsort(merged_t, kind="stable")
    return merged_t[order], merged_v[order]


def keep_recent(times: np.ndarray, values: np.ndarray, retention: float) -> tuple[np.ndarray, np.ndarray]:
    """The samples of a new series that a ``retention`` keeps."""
    if retention <= 0 or not len(times):
        return times, values
    cut = int(np.searchsorted(times, times[-1] - retention, "left"))
    return times[cut:], values[cut:]


def numbers(items: Any, name: str, where: str) -> np.ndarray:
    """A float64 array of a list of ints and floats; ``ValueError`` naming the first other item."""
    if type(items) is not list:
        raise TypeError(f"{where}: {name} must be a list of numbers")
    kinds = set(map(type, items))
    if not kinds <= {int, float}:
        for index, item in enumerate(items):
            if type(item) not in (int, float):
                raise ValueError(f"{where}: {name}[{index}] is {item!r}, not a number")
    try:
        return np.array(items, dtype=np.float64)
    except OverflowError:
        raise ValueError(f"{where}: {name} holds an integer too large for a float") from None
