"""The calls of a time-series collection, as they travel (no numpy, no I/O).

A call is the request ``{"op": "ts", "path": [collection], "method": call,
"args": [...], "kwargs": {...}}``; ``names`` has an empty path.  Which calls
write decides, on both ends, whether a request goes to the read-write server.
"""

from __future__ import annotations

WRITE_CALLS = frozenset({"create", "drop", "insert_ts", "upsert_meta", "delete_ts", "add", "madd"})
READ_CALLS = frozenset(
    {
        "names",
        "open",
        "len",
        "contains",
        "get",
        "select",
        "augmented_select",
        "range",
        "mrange",
        "similar",
        "distance",
        "vantage_points",
    }
)
OPTIONS = ("schema", "index", "grid", "vantage_points", "duplicate_policy", "retention")
"""The options of a collection, in the order ``db.timeseries`` takes them."""
DUPLICATE_POLICIES = ("last", "first", "block", "min", "max", "sum")
AGGREGATIONS = (
    "avg",
    "sum",
    "min",
    "max",
    "range",
    "count",
    "first",
    "last",
    "std.p",
    "std.s",
    "var.p",
    "var.s",
)
