"""Where metrics live in pyzdb, and the requests that write and read them.

Metrics live in the time-series collection ``metrics`` (SPEC §7, §8): one row
per metric key, its points the row's samples (duplicate policy ``last``: a
later put at the same second overwrites), and the key's parts as metadata,
indexed::

    db.timeseries('metrics').get('palm.cpu')
    # {'pk': 'palm.cpu', 'ts': TimeSeries([1150864247.0, ...], [42.3, ...]),
    #  'server': 'palm', 'metric': 'cpu'}

A batch of points is one ``madd`` request whatever the number of keys (per
10,000 points), plus one ``upsert_meta`` the first time this gateway sees a
key.  Stores written by earlier versions kept metrics in the tree,
``db['metrics'][key][timestamp] = value``; the first use of a store moves
them into the collection (``madd``, then the tree entry is deleted; run again
after a crash in between, it stores the same points again).

This class is synchronous and owns one pyzdb connection: the gateway calls it
from one worker thread only.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pyzdb import errors
from pyzdb.metrics.protocol import ProtocolError, check_key
from pyzdb.proxy import Root

log = logging.getLogger("pyzdb.metrics")

COLLECTION = "metrics"
OPTIONS = {"duplicate_policy": "last", "index": ["server", "metric"]}
LEGACY_KEY = "metrics"
"""Where earlier versions kept metrics in the tree."""
MAX_POINTS_PER_REQUEST = 10_000
"""Larger batches are split, keeping requests far below pyzdb's message size limit."""
MAX_TIMESTAMP = 2**53
"""Samples are float64: larger timestamps would not come back exactly, so they are refused."""

Series = dict[str, dict[int, float]]


class _Counting:
    """A transport that counts the requests sent through it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.requests = 0

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Send one request through the wrapped connection."""
        self.requests += 1
        return self.conn.call(*args, **kwargs)


class _Dropped(Exception):
    """The collection no longer exists."""


def metadata(key: str) -> dict[str, str]:
    """A key's parts: ``serv.cpu`` -> ``{'server': 'serv', 'metric': 'cpu'}``; no dot: the metric only."""
    server, dot, metric = key.partition(".")
    return {"server": server, "metric": metric} if dot and server and metric else {"metric": key}


class MetricsStore:
    """The metrics in a pyzdb store, reached through a :class:`pyzdb.client.Connection`."""

    def __init__(self, conn: Any) -> None:
        self._transport = _Counting(conn)
        self.db = Root(self._transport)
        self._collection: Any = None
        self._described: set[str] = set()
        """Keys whose metadata this gateway has written."""

    @property
    def requests(self) -> int:
        """pyzdb requests sent so far."""
        return self._transport.requests

    def collection(self) -> Any:
        """The ``metrics`` collection, opened (or created) and moved from the tree on first use."""
        if self._collection is None:
            coll = self.db.timeseries(COLLECTION, **OPTIONS)
            self._move_legacy(coll)
            self._collection = coll
        return self._collection

    def _move_legacy(self, coll: Any) -> None:
        if LEGACY_KEY not in self.db:
            return
        old = _clean(self.db[LEGACY_KEY]._run())
        for key, series in old.items():
            huge = [t for t in series if abs(t) > MAX_TIMESTAMP]
            if huge:
                log.warning(
                    "%r: %d point(s) with timestamps beyond 2**53 left out of the move", key, len(huge)
                )
                old[key] = {t: v for t, v in series.items() if abs(t) <= MAX_TIMESTAMP}
        points = sum(len(p) for p in old.values())
        failed = self.write(old, coll)
        if failed:
            raise errors.StorageError(f"moving the metrics of {sorted(failed)} into the collection failed")
        self.db.pop(LEGACY_KEY, None)
        log.warning(
            "moved %d point(s) of %d key(s) from db[%r] into the collection", points, len(old), LEGACY_KEY
        )

    def write(self, batch: Series, coll: Any = None) -> set[str]:
        """Store every key's points; return the keys whose points were *not* confirmed stored."""
        try:
            return self._write(batch, coll)
        except _Dropped:  # someone dropped the collection: create it again, once
            self._collection = None
            self._described.clear()
            return self._write(batch, None)

    def _write(self, batch: Series, coll: Any) -> set[str]:
        try:
            if coll is None:  # (not ``coll or``: a collection's truth is its length, one request)
                coll = self.collection()
        except Exception as exc:
            log.error("opening the %r collection failed: %s: %s", COLLECTION, type(exc).__name__, exc)
            return set(batch)
        failed = {key for key, points in batch.items() if any(abs(t) > MAX_TIMESTAMP for t in points)}
        if failed:
            log.error("timestamps beyond 2**53 cannot be stored exactly: %s refused", sorted(failed))
        samples = [
            (key, t, v) for key, points in batch.items() if key not in failed for t, v in points.items()
        ]
        for start in range(0, len(samples), MAX_POINTS_PER_REQUEST):
            chunk = samples[start : start + MAX_POINTS_PER_REQUEST]
            try:
                coll.madd(chunk)
            except KeyError as exc:
                if start == 0 and "no time-series collection" in str(exc):
                    raise _Dropped from None
                log.error("storing %d point(s) failed: %s", len(chunk), exc)
                failed.update(key for key, _, _ in chunk)
            except Exception as exc:  # any failure: these points get an error reply, never ok
                log.error("storing %d point(s) failed: %s: %s", len(chunk), type(exc).__name__, exc)
                failed.update(key for key, _, _ in chunk)
                if isinstance(exc, errors.ConnectionError):  # do not wait out the timeout once per chunk
                    failed.update(batch)
                    break
        self._describe(coll, [key for key in batch if key not in failed])
        return failed

    def _describe(self, coll: Any, keys: list[str]) -> None:
        """Metadata of keys new to this gateway; a failure is logged and retried with the next batch."""
        for key in keys:
            if key in self._described:
                continue
            try:
                coll.upsert_meta(key, metadata(key))
            except Exception as exc:
                log.error("storing the metadata of %r failed: %s: %s", key, type(exc).__name__, exc)
                return
            self._described.add(key)

    def read(self, key: str | None) -> Series:
        """The points of ``key``, or of every key when ``key`` is None (``{}`` if none)."""
        coll = self.collection()
        if key is None:
            found = coll.mrange("-", "+")
        else:
            try:
                found = {key: coll.range(key)}
            except KeyError:
                return {}
        return {
            pk: {int(t): v for t, v in samples} for pk, samples in found.items() if samples and _is_key(pk)
        }


def _clean(found: Any) -> Series:
    """Keep what fits the earlier tree layout (other clients may have stored anything there)."""
    if type(found) is not dict:
        return {}
    series: Series = {}
    for key, points in found.items():
        if type(points) is not dict or not _is_key(key):
            continue
        series[key] = {ts: float(v) for ts, v in points.items() if type(ts) is int and _is_value(v)}
    return series


def _is_value(value: Any) -> bool:
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _is_key(key: Any) -> bool:
    try:
        check_key(key)
    except ProtocolError:
        return False
    return True
