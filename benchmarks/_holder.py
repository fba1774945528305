"""The plain-dict reference: a Python process that holds the same data as a pyzdb store.

Usage: ``python _holder.py SNAPSHOT|- [SAVE_TO]``.

Loads the snapshot file the pyzdb server loads (``-``: nothing, for the
empty interpreter's baseline), the same way (``pickle.load`` with the
collector off), keeps its ``root`` dict and prints one JSON line:
``{"rss_kb", "load_s"}``.  With SAVE_TO it then pickles the dict there,
fsyncs it and prints ``{"save_s"}``: what a save costs a plain dict.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import sys
import time


def rss_kb() -> int:
    """This process's VmRSS in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def load(path: str) -> dict:
    """The ``root`` of the snapshot at ``path`` (``{}`` for ``-``)."""
    if path == "-":
        return {}
    gc.disable()
    with open(path, "rb") as handle:
        state = pickle.load(handle)
    gc.enable()
    return state["root"]


def save(root: dict, path: str) -> float:
    """Pickle ``root`` to ``path`` and fsync it; return the seconds it took."""
    started = time.perf_counter()
    with open(path, "wb") as handle:
        pickle.dump(root, handle, protocol=5)
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - started


def main() -> int:
    """Load, report, optionally save."""
    started = time.perf_counter()
    root = load(sys.argv[1])
    print(json.dumps({"rss_kb": rss_kb(), "load_s": time.perf_counter() - started}), flush=True)
    if len(sys.argv) > 2:
        seconds = save(root, sys.argv[2])
        os.unlink(sys.argv[2])
        print(json.dumps({"save_s": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
