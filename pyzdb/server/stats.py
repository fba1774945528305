"""Server statistics for ``db.stats()`` (SPEC §12): counters on the hot path, figures on demand.

Answering a request adds one to a counter and one to a latency histogram
bucket (log-spaced, four buckets per power of two: about ±12 %), which costs
a fraction of a microsecond; percentiles, memory and file figures are only
computed when someone asks for ``stats``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pyzdb import __version__

_SUB_BITS = 2
"""Buckets per power of two: 2**_SUB_BITS."""


class Latency:
    """A histogram of durations in nanoseconds."""

    __slots__ = ("buckets", "count")

    def __init__(self) -> None:
        self.buckets = [0] * (64 << _SUB_BITS)
        self.count = 0

    def observe(self, ns: int) -> None:
        """Count one duration."""
        bits = ns.bit_length()
        if bits > _SUB_BITS + 1:
            index = (bits << _SUB_BITS) | ((ns >> (bits - _SUB_BITS - 1)) & ((1 << _SUB_BITS) - 1))
        else:
            index = ns
        self.buckets[min(index, len(self.buckets) - 1)] += 1
        self.count += 1

    def percentile(self, fraction: float) -> float | None:
        """The duration (ns, a bucket's middle) below which ``fraction`` of those counted lie."""
        if not self.count:
            return None
        wanted = fraction * self.count
        seen = 0
        for index, count in enumerate(self.buckets):
            seen += count
            if seen >= wanted and count:
                return _bucket_middle(index)
        return _bucket_middle(len(self.buckets) - 1)


def _bucket_middle(index: int) -> float:
    if index < 1 << (_SUB_BITS + 2):  # durations under 2**(_SUB_BITS+1) ns count as themselves
        return float(index)
    bits, sub = index >> _SUB_BITS, index & ((1 << _SUB_BITS) - 1)
    width = 1 << (bits - _SUB_BITS - 1)
    return (1 << (bits - 1)) + sub * width + width / 2


class RequestStats:
    """Requests answered, by op, and their latency, by kind (read or write)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.slow = 0
        """Requests logged as slow (the slowlog)."""
        self.by_op: dict[str, int] = {}
        self._read, self._write = Latency(), Latency()
        self.latency = {"read": self._read, "write": self._write}

    def observe(self, op: str, write: bool, ns: int) -> None:
        """Count one answered request that took ``ns`` nanoseconds."""
        by_op = self.by_op
        by_op[op] = by_op.get(op, 0) + 1
        (self._write if write else self._read).observe(ns)

    def sections(self, role: str) -> dict[str, Any]:
        """The ``server``, ``requests``, ``latency`` and ``memory`` sections."""
        latency = {}
        for kind, histogram in self.latency.items():
            p50, p99 = histogram.percentile(0.5), histogram.percentile(0.99)
            latency[kind] = {
                "count": histogram.count,
                "p50_us": None if p50 is None else round(p50 / 1000, 1),
                "p99_us": None if p99 is None else round(p99 / 1000, 1),
            }
        return {
            "server": {
                "version": __version__,
                "role": role,
                "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started, 3),
            },
            "requests": {
                "total": sum(self.by_op.values()),
                "read": self.latency["read"].count,
                "write": self.latency["write"].count,
                "by_op": dict(self.by_op),
                "slow": self.slow,
            },
            "latency": latency,
            "memory": {"rss_bytes": rss_bytes()},
        }


def rss_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def persistence_section(files: Any) -> dict[str, Any]:
    """The ``persistence`` section of a server that writes its own files (``Persistence``)."""
    writer = files.writer
    try:
        saved = Path(files.path).stat().st_mtime
        snapshot_age = round(time.time() - saved, 3)
    except OSError:
        snapshot_age = None
    return {
        "journal": {
            "generation": files.generation,
            "bytes": None if writer is None else writer._end,
            "records_since_snapshot": files.writes_since_snapshot,
            "fsync": files.fsync,
        },
        "snapshots": {
            "running": files.snapshot_running,
            "age_s": snapshot_age,
        },
    }
