"""The pickled snapshot file, written atomically.

Format: one ``pickle`` (protocol 5) of a dict ``{"format": 1, "root": ...,
"history": UndoLog, "timeseries": Registry or None, "sessions": Sessions}``
(``Store.state`` plus the dedup table).  The store, its collections and its
undo log are pickled in the same call so that values they share stay shared.

``save`` writes ``<name>.tmp-<pid>`` in the same folder, fsyncs it, renames it
over ``<name>`` and fsyncs the folder: a crash at any moment leaves either the
old or the new snapshot, never a mix.  Readers (read-only servers) therefore
never see a half-written file.  A file holding a plain pickled dict is
adopted as the store.  Pickles run code when loaded: only load snapshots this
server wrote.  ``load`` leaves what it loaded in the collector's permanent
generation (``gc.freeze``).
"""

from __future__ import annotations

import gc
import os
import pickle
from pathlib import Path
from typing import Any

FORMAT = 1


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically replace the snapshot at ``path`` with ``state``."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            pickle.dump({"format": FORMAT, **state}, handle, protocol=5)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def load(path: str | os.PathLike) -> dict[str, Any] | None:
    """Return the state saved at ``path``, or ``None`` if there is no file."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return None
    with handle:
        gc_was_enabled = gc.isenabled()
        gc.disable()  # unpickling many small objects is ~3x faster without the collector
        try:
            state = _unpickle(handle, path)
            # The loaded store lives as long as the server and holds no reference
            # cycles (refcounting frees what is dropped), so the cyclic collector never
            # needs to walk it: without this, its first passes after start-up walk
            # every loaded dict (~50 ms per pass at 1M entries).
            gc.freeze()
        finally:
            if gc_was_enabled:
                gc.enable()
    if type(state) is dict and "format" not in state:
        return {"root": state}  # a plain pickled dict: adopt it as the store
    if type(state) is not dict or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pyzdb snapshot (format {FORMAT})")
    return state


def _unpickle(handle, path: str | os.PathLike) -> Any:
    """``pickle.load``, with any failure of a damaged file turned into one ``ValueError`` naming it."""
    try:
        return pickle.load(handle)
    except Exception as exc:  # a damaged pickle raises about anything (MemoryError for a bad length too)
        raise ValueError(
            f"cannot read the snapshot {os.fspath(path)}: {type(exc).__name__}: {exc} "
            "(the file is left as it was)"
        ) from None


def stamp(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """Identity of the current snapshot file (inode, size, mtime), or ``None``."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def fsync_folder(folder: Path) -> None:
    """fsync a folder so that a rename or a new file in it is durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
