"""Sample ranges and their aggregation in buckets, with numpy (no I/O)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pyzdb.timeseries.calls import AGGREGATIONS


def bound(value: Any, name: str, open_end: str) -> float:
    """A range bound: a number, or ``'-'`` / ``'+'`` for the first / last sample."""
    if value == open_end and type(value) is str:
        return -math.inf if open_end == "-" else math.inf
    if type(value) not in (int, float) or math.isnan(value):
        raise TypeError(f"range {name} must be a number or {open_end!r}, not {value!r}")
    return float(value)


def window(times: np.ndarray, values: np.ndarray, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """The samples with ``start <= t <= end`` (views)."""
    lo = int(np.searchsorted(times, start, "left"))
    hi = int(np.searchsorted(times, end, "right"))
    return times[lo:hi], values[lo:hi]


def check(aggregation: Any, bucket: Any, what: str = "aggregation") -> None:
    """Refuse an unknown aggregation, a bucket that is not a positive number, or a bucket alone."""
    if aggregation is not None and aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown {what} {aggregation!r} (known: {' '.join(AGGREGATIONS)})")
    if bucket is None:
        return
    if type(bucket) not in (int, float) or not 0 < bucket < math.inf:
        raise ValueError(f"bucket must be a number > 0, not {bucket!r}")
    if aggregation is None:
        raise ValueError("a bucket needs an aggregation")


def aggregate(
    times: np.ndarray, values: np.ndarray, aggregation: str | None, bucket: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate sorted samples per bucket (each reported at its start), or over all of them.

    Buckets start at multiples of ``bucket``; empty buckets are left out.
    Without a bucket the whole range is one bucket, reported at its first sample.
    """
    if aggregation is None or not len(times):
        return times, values
    if bucket is None:
        starts = np.array([0])
        reported = times[:1]
    else:
        reported, starts = bucket_starts(times, bucket)
    return reported, reduce_segments(values, starts, aggregation)


def bucket_starts(times: np.ndarray, bucket: float) -> tuple[np.ndarray, np.ndarray]:
    """The start time and first position of every non-empty bucket of sorted ``times``."""
    first, last = math.floor(times[0] / bucket), math.floor(times[-1] / bucket)
    if last - first + 1 > len(times):  # sparse: fewer samples than buckets, look at each sample
        keys = np.floor(times / bucket)
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        return keys[starts] * bucket, starts
    # dense: a binary search per bucket edge instead of passes over every sample
    edges = np.arange(first, last + 1, dtype=np.float64) * bucket
    starts = np.searchsorted(times, edges, "left")
    starts[0] = 0  # (first * bucket may round above the first time)
    filled = np.flatnonzero(np.diff(np.append(starts, len(times))) > 0)
    return edges[filled], starts[filled]


def reduce_segments(values: np.ndarray, starts: np.ndarray, aggregation: str) -> np.ndarray:
    """One aggregate per segment ``values[starts[i]:starts[i + 1]]`` (the last runs to the end)."""
    ends = np.append(starts[1:], len(values))
    counts = (ends - starts).astype(np.float64)
    if aggregation == "count":
        return counts
    if aggregation == "first":
        return values[starts]
    if aggregation == "last":
        return values[ends - 1]
    if aggregation in ("min", "max", "range"):
        low = np.minimum.reduceat(values, starts)
        high = np.maximum.reduceat(values, starts)
        return low if aggregation == "min" else high if aggregation == "max" else high - low
    sums = np.add.reduceat(values, starts)
    if aggregation == "sum":
        return sums
    means = sums / counts
    if aggregation == "avg":
        return means
    squares = np.add.reduceat((values - np.repeat(means, ends - starts)) ** 2, starts)
    ddof = 1 if aggregation.endswith(".s") else 0
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.where(counts > ddof, squares / np.maximum(counts - ddof, 1), np.nan)
    return np.sqrt(variance) if aggregation.startswith("std") else variance


def combine(series: list[tuple[np.ndarray, np.ndarray]], reduce: str) -> tuple[np.ndarray, np.ndarray]:
    """Several series combined sample by sample: at each time, ``reduce`` over the series that have it."""
    if not series:
        return np.empty(0), np.empty(0)
    times = np.concatenate([t for t, _ in series])
    values = np.concatenate([v for _, v in series])
    order = np.argsort(times, kind="stable")
    times, values = times[order], values[order]
    if not len(times):
        return times, values
    starts = np.flatnonzero(np.concatenate(([True], times[1:] != times[:-1])))
    return times[starts], reduce_segments(values, starts, reduce)
