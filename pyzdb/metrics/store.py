"""Where metrics live in the pyzdb tree, and the requests that write and read them.

Layout: ``db['metrics'][key][timestamp] = value``, one dict per metric key,
int timestamps as keys (pyzdb keeps int keys), float values::

    db['metrics'] == {'palm.cpu': {1150864247: 42.3, 1150864248: 4.0},
                      'eardrum.memory': {1150864250: 1024.0, 1150864251: 2048.0}}

A batch of points is written with one request per metric key in it (per
10,000 points of a key), ``db['metrics'][key].update(points)``: pyzdb has no
request that writes at several paths, and a shallow ``update`` of
``db['metrics']`` would replace a key's older points.  Only the first points
of a key cost more: the update fails with ``KeyError``, then ``setdefault``
creates the key, atomically even if another gateway writes the same key (see
``MetricsStore._merge``).

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

ROOT_KEY = "metrics"
MAX_POINTS_PER_REQUEST = 10_000
"""Larger batches of one key are split, keeping requests far below pyzdb's message size limit."""

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


class MetricsStore:
    """The metrics in a pyzdb store, reached through a :class:`pyzdb.client.Connection`."""

    def __init__(self, conn: Any) -> None:
        self._transport = _Counting(conn)
        self.db = Root(self._transport)

    @property
    def requests(self) -> int:
        """pyzdb requests sent so far."""
        return self._transport.requests

    def write(self, batch: Series) -> set[str]:
        """Store every key's points; return the keys whose points were *not* confirmed stored."""
        failed: set[str] = set()
        unreachable = False
        for key, points in batch.items():
            if unreachable:  # do not wait out the timeout once per key
                failed.add(key)
                continue
            try:
                self.write_series(key, points)
            except Exception as exc:  # any failure: these points get an error reply, never ok
                log.error(
                    "storing %d point(s) of %r failed: %s: %s", len(points), key, type(exc).__name__, exc
                )
                failed.add(key)
                unreachable = isinstance(exc, errors.ConnectionError)
        return failed

    def write_series(self, key: str, points: dict[int, float]) -> None:
        """Merge ``points`` into the key's dict; one request (per 10,000 points) once the key exists."""
        items = list(points.items())
        for start in range(0, len(items), MAX_POINTS_PER_REQUEST):
            self._merge(key, dict(items[start : start + MAX_POINTS_PER_REQUEST]))

    def _merge(self, key: str, points: dict[int, float]) -> None:
        try:
            self.db[ROOT_KEY][key].update(points)
            return
        except KeyError:
            pass  # the key (or db['metrics'] itself) does not exist yet
        if ROOT_KEY not in self.db:
            self.db.setdefault(ROOT_KEY, {})
        stored = self.db[ROOT_KEY].setdefault(key, points)
        if stored != points:  # another writer created the key in between: merge into it
            self.db[ROOT_KEY][key].update(points)

    def read(self, key: str | None) -> Series:
        """The points of ``key``, or of every key when ``key`` is None (``{}`` if none)."""
        try:
            if key is None:
                found = self.db[ROOT_KEY]._run()
            else:
                found = {key: self.db[ROOT_KEY][key]._run()}
        except KeyError:
            return {}
        return _clean(found)


def _clean(found: Any) -> Series:
    """Keep what fits the layout (other clients may have stored anything there)."""
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
