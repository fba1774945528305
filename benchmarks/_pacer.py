"""A client process that writes at a steady rate: the load of the replication section.

Usage: ``python _pacer.py URI RATE MAX_SECONDS``.

It connects to the writer at URI with ``read_your_writes=True`` (so that
each reply carries the writer's position), prints ``ready``, waits for a
``go`` line on stdin, then sets ``db["t"] = i`` for ``i = 0, 1, ...`` on a
fixed schedule of RATE writes per second (write ``i`` is due at
``start + i / RATE``; one that is late goes at once, so the average rate
holds) until a ``stop`` line arrives or MAX_SECONDS pass.  It then prints one
JSON line: ``{"acks": [...], "counts": [...], "late": N}``, the
``time.monotonic()`` of each write's acknowledgement, the writer's record
count after it, and how many writes went out more than 1 ms late.
"""

from __future__ import annotations

import json
import select
import sys
import time

from pyzdb.client import Connection

KEY = "t"


def stop_requested(wait: float) -> bool:
    """Wait up to ``wait`` seconds for a line on stdin; whether it asks to stop."""
    ready, _, _ = select.select([sys.stdin], [], [], max(0.0, wait))
    return bool(ready) and sys.stdin.readline().strip() in ("stop", "")


def paced_writes(conn: Connection, rate: float, max_seconds: float) -> dict:
    """Write on schedule until told to stop; the acknowledgement times and positions."""
    acks: list[float] = []
    counts: list[int] = []
    late = 0
    started = time.monotonic()
    for i in range(int(rate * max_seconds)):
        due = started + i / rate
        if stop_requested(due - time.monotonic()):
            break
        if time.monotonic() - due > 0.001:
            late += 1
        conn.db[KEY] = i
        acks.append(time.monotonic())
        counts.append(conn.position[1])
    return {"acks": acks, "counts": counts, "late": late}


def main() -> int:
    """Connect, wait for ``go``, write, report."""
    uri, rate, max_seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    with Connection(uri, timeout=30.0, read_your_writes=True) as conn:
        conn.db[KEY] = -1
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
        print(json.dumps(paced_writes(conn, rate, max_seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
