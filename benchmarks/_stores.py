"""The stores the benchmark measures, written as pyzdb snapshot files (no requests needed).

An *entry* is one user record: ``root["users"]["u<i>"] = {"name": "user<i>",
"age": i % 90}``.  The request benchmark's store also holds ``root["list"]``
(``list(range(10_000))``) and ``root["counter"]`` (0).
"""

from __future__ import annotations

from pathlib import Path

from pyzdb.storage import snapshot

LIST_LENGTH = 10_000


def users(entries: int) -> dict:
    """``entries`` user records keyed ``u0``, ``u1``, ..."""
    return {f"u{i}": {"name": f"user{i}", "age": i % 90} for i in range(entries)}


def write_store(path: Path, entries: int, extras: bool = False) -> Path:
    """Write a snapshot of ``entries`` users (and the list and counter if ``extras``) at ``path``."""
    root: dict = {"users": users(entries)}
    if extras:
        root["list"] = list(range(LIST_LENGTH))
        root["counter"] = 0
    snapshot.save(path, {"root": root})
    return path
