"""The vantage-point index of one collection, and exact k-nearest-neighbour search on it (no I/O).

Rows whose series have a distance (SPEC §9: not constant, no nan) are kept
in *banks*, one per prepared length (one bank in all with a grid).  A bank
holds, per row, the series' FFT and self-kernel sum (:mod:`.distance`), so
the distance from a query to any set of rows is one batch of array
operations, and the distances from each row to the bank's vantage points.

Search is exact.  The distance is a metric (the kernel is a sum over shifts
of ``exp`` of an inner product, positive definite, so ``d`` is a Hilbert-space
distance), so for a vantage point ``v`` the triangle inequality gives the
lower bound ``|d(q, v) - d(x, v)| <= d(q, x)``.  Rows are visited in order of
their best lower bound, true distances are computed in batches, and the
search stops when the next lower bound exceeds the current k-th distance: no
row skipped can be among the k nearest.  ``SLACK`` covers rounding (a
distance near 0 is ``sqrt`` of a difference near 0, accurate to ~1e-8).

The index is derived data, like the inverse-lookup indexes: built from the
rows on first use, never pickled.  The collection's patches (so every write,
undo, redo and journal replay) mark the rows they change as stale, and every
use of the index first refreshes those: a write costs O(1) here, and a
search always sees every acknowledged write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from pyzdb.timeseries import distance as dist
from pyzdb.timeseries.query import pk_key

SLACK = 1e-6
"""Lower bounds within this of the k-th distance are not trusted to prune (rounding)."""
BRUTE_FORCE_BELOW = 512
"""Candidate sets smaller than this are searched by computing every distance."""
FIRST_BATCH = 256
"""True distances computed first (the smallest lower bounds), to get a k-th distance to prune with."""
BATCH = 2048
"""True distances computed per step afterwards."""


class Bank:
    """The rows of one prepared length: FFTs, self-kernel sums and distances to the vantage points."""

    def __init__(self, n: int, vantage_count: int) -> None:
        self.n = n
        self.vantage_count = vantage_count
        self.pks: list = []
        self.slots: dict[Any, int] = {}
        self.ffts = np.empty((16, n // 2 + 1), dtype=np.complex128)
        self.selfs = np.empty(16)
        self.to_vp = np.empty((vantage_count, 16))
        """Row ``j``: each slot's distance to vantage point ``j`` (contiguous, for the bounds)."""
        self.vps: list = []
        """The vantage points' pks, ``vps[j]`` the one of row ``j`` of ``to_vp``."""

    def __len__(self) -> int:
        return len(self.pks)

    def _grow(self, size: int) -> None:
        if size <= len(self.selfs):
            return
        # a quarter spare past a build, so that the inserts after it do not copy everything at once
        capacity, used = max(size + size // 4, 2 * len(self.selfs)), len(self.pks)
        for name in ("ffts", "selfs"):
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            new[:used] = old[:used]
            setattr(self, name, new)
        to_vp = np.empty((self.vantage_count, capacity))
        to_vp[:, :used] = self.to_vp[:, :used]
        self.to_vp = to_vp

    def vp_slots(self) -> list[int]:
        """The slots of the vantage points, in column order."""
        return [self.slots[pk] for pk in self.vps]

    def distances_to(self, slots: Any, query_fft: np.ndarray, query_self: float) -> np.ndarray:
        """True distances from a transformed query to the rows at ``slots``."""
        return dist.distances(self.ffts[slots], self.selfs[slots], query_fft, query_self, self.n)

    # --- changes ------------------------------------------------------------------------

    def add_rows(self, pks: list, prepared: np.ndarray, fill_vantage: bool = True) -> None:
        """Add rows in one batch: their transforms and their distances to the vantage points.

        With ``fill_vantage``, new rows become vantage points while the bank has fewer than it should.
        """
        start, count = len(self.pks), len(pks)
        self._grow(start + count)
        ffts, selfs = dist.transform(prepared)
        self.ffts[start : start + count] = ffts
        self.selfs[start : start + count] = selfs
        for offset, pk in enumerate(pks):
            self.slots[pk] = start + offset
        self.pks.extend(pks)
        for column, slot in enumerate(self.vp_slots()):
            found = dist.distances(ffts, selfs, self.ffts[slot], float(self.selfs[slot]), self.n)
            self.to_vp[column, start : start + count] = found
        if fill_vantage:
            for slot in range(start, min(start + count, start + self.vantage_count - len(self.vps))):
                self.vps.append(self.pks[slot])
                self._fill_column(len(self.vps) - 1, slot)

    def choose_vantage_points(self) -> None:
        """Rows spread at random, from a seed that depends only on the bank (replicas choose alike).

        Measured against farthest-first traversal, which picks outliers: random rows prune more
        (course-like data: 2.4 % of the distances computed instead of 3.3 %; random walks: 55 % / 81 %).
        """
        size = len(self.pks)
        chosen = _spread(size).choice(size, min(self.vantage_count, size), replace=False)
        self.vps = [self.pks[slot] for slot in chosen.tolist()]
        for column, slot in enumerate(chosen.tolist()):
            self._fill_column(column, slot)

    def _fill_column(self, column: int, slot: int) -> None:
        size = len(self.pks)
        found = self.distances_to(slice(0, size), self.ffts[slot], float(self.selfs[slot]))
        self.to_vp[column, :size] = found

    def remove(self, pk: Any) -> None:
        """Remove a row; a vantage point removed is replaced by another row, drawn at random."""
        slot = self.slots.pop(pk)
        last = len(self.pks) - 1
        if slot != last:  # the last row moves into the hole
            moved = self.pks[last]
            self.pks[slot] = moved
            self.slots[moved] = slot
            self.ffts[slot], self.selfs[slot] = self.ffts[last], self.selfs[last]
            self.to_vp[:, slot] = self.to_vp[:, last]
        self.pks.pop()
        if pk in self.vps:
            self._replace_vantage_point(self.vps.index(pk))

    def _replace_vantage_point(self, column: int) -> None:
        size = len(self.pks)
        others = [j for j in range(len(self.vps)) if j != column]
        free = np.ones(size, dtype=bool)
        free[[self.slots[self.vps[j]] for j in others]] = False
        if not free.any():  # every row left is a vantage point already: drop the column
            last = len(self.vps) - 1
            self.to_vp[column, :size] = self.to_vp[last, :size]
            self.vps[column] = self.vps[last]
            self.vps.pop()
            return
        slot = int(_spread(size).choice(np.flatnonzero(free)))
        self.vps[column] = self.pks[slot]
        self._fill_column(column, slot)

    # --- search ---------------------------------------------------------------------------

    def _bounds(self, to_query: np.ndarray, slots: np.ndarray | None) -> np.ndarray:
        """Each candidate's best lower bound ``max_v |d(q, v) - d(x, v)|`` on its distance to the query."""
        size = len(self.pks)
        bounds = np.zeros(size if slots is None else len(slots))
        scratch = np.empty_like(bounds)
        for j, to_v in enumerate(to_query.tolist()):
            column = self.to_vp[j, :size] if slots is None else self.to_vp[j, slots]
            np.subtract(column, to_v, out=scratch)
            np.abs(scratch, out=scratch)
            np.maximum(bounds, scratch, out=bounds)
        return bounds

    def search(
        self, query_fft: np.ndarray, query_self: float, slots: np.ndarray | None, k: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """``(slots, distances, computed)``: each row among ``slots`` (None: all) within the k-th distance.

        ``computed`` is how many true distances were computed.
        """
        size = len(self.pks)
        candidates = np.arange(size) if slots is None else slots
        if len(candidates) <= max(BRUTE_FORCE_BELOW, 2 * k) or not self.vps:
            found = self.distances_to(candidates, query_fft, query_self)
            return candidates, found, len(candidates)
        vp = self.vp_slots()
        to_query = self.distances_to(vp, query_fft, query_self)
        bounds = self._bounds(to_query, slots)
        first = min(len(candidates), max(FIRST_BATCH, 2 * k))
        head = np.argpartition(bounds, first - 1)[:first]
        done_slots = [candidates[head]]
        done = [self.distances_to(done_slots[0], query_fft, query_self)]
        kth = _kth(done, k)
        rest = np.ones(len(candidates), dtype=bool)
        rest[head] = False
        rest &= bounds <= kth + SLACK
        left = np.flatnonzero(rest)
        left = left[np.argsort(bounds[left], kind="stable")]
        for start in range(0, len(left), BATCH):
            part = left[start : start + BATCH]
            if bounds[part[0]] > kth + SLACK:
                break
            part = part[bounds[part] <= kth + SLACK]
            done_slots.append(candidates[part])
            done.append(self.distances_to(done_slots[-1], query_fft, query_self))
            kth = _kth(done, k)
        found = np.concatenate(done)
        found_slots = np.concatenate(done_slots)
        return found_slots, found, len(found)


def _spread(size: int) -> np.random.Generator:
    """The generator vantage points are drawn with: seeded by the bank's size, so deterministic."""
    return np.random.default_rng(size)


def _kth(found: list[np.ndarray], k: int) -> float:
    values = np.concatenate(found) if len(found) > 1 else found[0]
    if len(values) < k:
        return np.inf
    return float(np.partition(values, k - 1)[k - 1])


class SimilarityIndex:
    """The banks of one collection and which bank each row is in."""

    def __init__(self, grid: Any, vantage_count: int) -> None:
        self.grid = grid
        self.vantage_count = vantage_count
        self.banks: dict[int, Bank] = {}
        self.bank_of: dict[Any, int] = {}
        self.stale: dict[Any, None] = {}
        """Rows changed since the index last looked at them, in the order they changed."""
        self.last_computed = 0
        """How many true distances the last search computed (for the benchmarks)."""

    def build(self, rows: Iterable[tuple[Any, Any]]) -> None:
        """Index every ``(pk, samples)`` whose series has a distance (bulk)."""
        groups: dict[int, tuple[list, list]] = {}
        for pk, samples in rows:
            values = self._prepared(samples)
            if values is not None:
                pks, arrays = groups.setdefault(len(values), ([], []))
                pks.append(pk)
                arrays.append(values)
        for n, (pks, arrays) in groups.items():
            bank = self.banks[n] = Bank(n, self.vantage_count)
            bank.add_rows(pks, np.array(arrays), fill_vantage=False)
            bank.choose_vantage_points()
            self.bank_of.update(dict.fromkeys(pks, n))

    def _prepared(self, samples: Any) -> np.ndarray | None:
        if samples is None:
            return None
        try:
            return dist.prepared(samples.times, samples.values, self.grid)
        except ValueError:  # no distance: similar skips the row
            return None

    def refresh(self, rows: dict) -> None:
        """Bring the stale rows up to date from ``rows`` (the collection's, as they are now).

        All of them leave the index first, then those with a distance come back in one batch per
        length: a thousand rows inserted between two searches cost a few batched operations.
        """
        if not self.stale:
            return
        groups: dict[int, tuple[list, list]] = {}
        for pk in self.stale:
            self.remove(pk)
            row = rows.get(pk)
            values = self._prepared(None if row is None else row.samples)
            if values is not None:
                pks, arrays = groups.setdefault(len(values), ([], []))
                pks.append(pk)
                arrays.append(values)
        self.stale.clear()
        for n, (pks, arrays) in groups.items():
            bank = self.banks.get(n)
            if bank is None:
                bank = self.banks[n] = Bank(n, self.vantage_count)
            bank.add_rows(pks, np.array(arrays))
            self.bank_of.update(dict.fromkeys(pks, n))

    def remove(self, pk: Any) -> None:
        """Row ``pk`` is gone (or has no usable series any more)."""
        n = self.bank_of.pop(pk, None)
        if n is not None:
            bank = self.banks[n]
            bank.remove(pk)
            if not len(bank):
                del self.banks[n]

    def vantage_points(self) -> list:
        """The vantage points' pks, bank by bank (by length), each in the order chosen."""
        return [pk for n in sorted(self.banks) for pk in self.banks[n].vps]

    def nearest(
        self, prepared: np.ndarray, k: int, candidates: Any, exclude: Any, name: str
    ) -> list[tuple[Any, float]]:
        """The ``k`` rows nearest the query, as ``[(pk, distance), ...]`` by (distance, pk).

        ``candidates``: the pks allowed (``None``: every row); ``exclude``: a pk left out, or ``None``.
        """
        n = len(prepared)
        bank = self.banks.get(n)
        self._check_lengths(n, candidates, name)
        if bank is None:
            return []
        slots = _slots(bank, candidates, exclude)
        if slots is not None and not len(slots):
            return []
        ffts, selfs = dist.transform(prepared[None, :])
        found_slots, found, self.last_computed = bank.search(ffts[0], float(selfs[0]), slots, k)
        return _best(bank, found_slots, found, k)

    def _check_lengths(self, n: int, candidates: Any, name: str) -> None:
        """``ValueError`` naming a candidate whose series has another length (no grid)."""
        for length, bank in self.banks.items():
            if length == n:
                continue
            if candidates is None:
                pk = min(bank.pks, key=pk_key)
            else:
                mismatched = [pk for pk in candidates if self.bank_of.get(pk) == length]
                if not mismatched:
                    continue
                pk = min(mismatched, key=pk_key)
            raise ValueError(
                f"collection {name!r}, pk {pk!r}: series of {length} and {n} samples"
                " cannot be compared without a grid"
            )


def _slots(bank: Bank, candidates: Any, exclude: Any) -> np.ndarray | None:
    """The bank's slots of the candidate pks minus ``exclude`` (``None``: all of them)."""
    if candidates is None:
        if exclude is None or exclude not in bank.slots:
            return None
        keep = np.ones(len(bank), dtype=bool)
        keep[bank.slots[exclude]] = False
        return np.flatnonzero(keep)
    where = bank.slots
    found = [where[pk] for pk in candidates if pk in where and pk != exclude]
    return np.array(sorted(found), dtype=np.intp)


def _best(bank: Bank, slots: np.ndarray, found: np.ndarray, k: int) -> list[tuple[Any, float]]:
    """The k best by (distance, pk); every row at the k-th distance is among ``found``."""
    if len(found) > k:
        cut = float(np.partition(found, k - 1)[k - 1])
        keep = found <= cut
        slots, found = slots[keep], found[keep]
    pairs = [(bank.pks[s], d) for s, d in zip(slots.tolist(), found.tolist(), strict=True)]
    pairs.sort(key=lambda pair: (pair[1], pk_key(pair[0])))
    return pairs[:k]
