"""Durability for the read-write server: one-writer lock, recovery, journal, snapshots.

Files beside the store ``db.pkl``::

    db.pkl               the newest complete snapshot (generation g inside)
    db.pkl.journal.<n>   journals, n >= g; replayed oldest first at start-up
    db.pkl.lock          held (portalocker) by the one read-write server; holds its pid

A snapshot is written by a forked child while the server keeps serving and
journaling into a fresh journal file; when the child has renamed the new
snapshot into place, the journals it covers are deleted.  If the child fails,
nothing is lost: the older snapshot and every journal are still there.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import portalocker

from pyzdb.storage import journal, snapshot

log = logging.getLogger("pyzdb.storage")


AfterSave = Callable[[dict, float], None]


LOCK_WAIT = 3.0
"""Seconds a starting server waits for the store's lock before giving up."""
RETRY_FIRST, RETRY_LONGEST = 1.0, 60.0
"""Seconds before the next automatic snapshot after a failed one: doubling from the first to the longest."""


def _die_with_parent(parent: int) -> None:
    """End this snapshot child if the server dies: a later server must not race its rename.

    The journals still hold everything, so an unfinished snapshot is never needed.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the lock still keeps a new server out
        pass
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(1)


PR_SET_PDEATHSIG = 1


class StoreInUseError(Exception):
    """Another read-write server holds the store."""


class Persistence:
    """The files of one store, as the read-write server uses them."""

    def __init__(
        self,
        path: str | os.PathLike,
        fsync: str = "everysec",
        autosave_writes: int = 10_000,
        autosave_seconds: float = 300.0,
    ) -> None:
        self.path = Path(path).absolute()
        self.fsync = fsync
        self.autosave_writes = autosave_writes
        self.autosave_seconds = autosave_seconds
        self.generation = 0
        self.snapshot_generation = 0
        self.writer: journal.JournalWriter | None = None
        self.writes_since_snapshot = 0
        self._snapshot_started = time.monotonic()
        self._last_sync = time.monotonic()
        self._lock_handle: Any = None
        self._child: tuple[int, int] | None = None  # (pid, generation) of a snapshot being written
        self._retry_wait = 0.0
        self._retry_at = 0.0
        """After a failed snapshot, no automatic one starts before this (monotonic) time."""
        self.retain_bytes = 0
        self.retain_seconds = 0.0
        """Journals older than the snapshot are kept while they add up to at most ``retain_bytes``
        and are younger than ``retain_seconds`` (the replication backlog); 0: deleted at once."""
        self.on_rotate: Callable[[int], None] | None = None
        """Called with the new generation each time a fresh journal takes the writes."""

    # --- start-up ----------------------------------------------------------------

    def acquire(self, wait: float = LOCK_WAIT) -> None:
        """Become the one read-write server of this store, or raise :class:`StoreInUseError`.

        Waits up to ``wait`` seconds: a server that was just killed may leave a
        snapshot child that the kernel is still ending, and the child holds the lock.
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = open(lock_path, "a+")
        deadline = time.monotonic() + wait
        while True:
            try:
                portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
                break
            except portalocker.LockException:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise StoreInUseError(
                    f"{self.path} is in use by another read-write server (pid {holder}); "
                    "stop it first, or start this one with -ro"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle
        for leftover in self.path.parent.glob(f"{self.path.name}.tmp-*"):
            leftover.unlink(missing_ok=True)  # a save cut short by a crash; the journals hold its data

    def load(self) -> tuple[dict, list[bytes]]:
        """Return the snapshot's state and the journal records to replay on top of it."""
        state = snapshot.load(self.path) or {}
        self.generation = self.snapshot_generation = state.get("generation", 0)
        files = [(gen, p) for gen, p in journal.journal_files(self.path) if gen >= self.generation]
        records: list[bytes] = []
        for index, (gen, path) in enumerate(files):
            newest = index == len(files) - 1
            found = journal.scan(path, newest)
            if found.generation not in (gen, -1):
                raise journal.CorruptJournalError(path, 8, f"header says generation {found.generation}")
            if found.torn:
                aside = journal.cut_torn_tail(found)
                log.warning("%s: cut a torn last record at byte %d (kept in %s)", path, found.end, aside)
            records.extend(found.records)
            self.generation = gen
        self.writes_since_snapshot = len(records)
        return state, records

    def open_journal(self) -> None:
        """Start appending to the journal of the current generation."""
        path = journal.journal_path(self.path, self.generation)
        if path.exists() and path.stat().st_size < journal.FILE_HEADER.size:
            path.unlink()  # a header torn at creation: nothing in it was ever acknowledged
        self.writer = journal.JournalWriter(path, self.generation)
        self._remove_journals_below(self.snapshot_generation)

    # --- serving -----------------------------------------------------------------

    def append(self, payload: bytes) -> None:
        """Journal one write request (before it is applied and answered)."""
        self.writer.append(payload)
        self.writes_since_snapshot += 1

    def commit(self) -> None:
        """Called after a batch of requests, before their replies: fsync if the policy is ``always``."""
        if self.fsync == "always":
            self.writer.sync()

    def tick(self) -> None:
        """Periodic duties: the ``everysec`` fsync."""
        now = time.monotonic()
        if self.fsync == "everysec" and now - self._last_sync >= 1.0:
            self._last_sync = now
            self.writer.sync()

    def autosave_due(self) -> bool:
        """True if enough writes or time have passed since the last snapshot."""
        if self.writes_since_snapshot == 0 or self.snapshot_running or time.monotonic() < self._retry_at:
            return False
        if self.autosave_writes and self.writes_since_snapshot >= self.autosave_writes:
            return True
        elapsed = time.monotonic() - self._snapshot_started
        return bool(self.autosave_seconds) and elapsed >= self.autosave_seconds

    # --- snapshots ---------------------------------------------------------------

    @property
    def snapshot_running(self) -> bool:
        """True while a forked child is writing a snapshot."""
        return self._child is not None

    def start_snapshot(self, state: dict, after: AfterSave | None = None) -> None:
        """Rotate the journal and fork a child that writes ``state`` as the next snapshot.

        ``after(state, started)`` runs in the child once the snapshot is in place.
        On failure (``OSError``: a full disk, no memory to fork) the current
        journal is left as it was and automatic snapshots back off.
        """
        try:
            generation = self._rotate()
        except OSError as exc:
            self._failed(f"could not start the journal of generation {self.generation + 1}: {exc}")
            raise
        started = time.time()
        # Until the child is done, no collector runs in either process: it would
        # write to every object it walks and copy the pages the two share.  (Not
        # gc.freeze(): that would be undone with gc.unfreeze(), which also thaws the
        # store that snapshot.load froze.)
        gc.disable()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            gc.enable()
            self._failed(f"could not fork the snapshot process: {exc}")
            raise
        if pid == 0:  # the child: write the file and leave without running any parent cleanup
            code = 0
            try:
                _die_with_parent(parent)
                os.nice(10)  # the serving parent comes first on a busy machine
                snapshot.save(self.path, {**state, "generation": generation})
                if after is not None:
                    after(state, started)
            except BaseException as exc:  # noqa: BLE001 - report and exit, whatever it was
                os.write(2, f"pyzdb: snapshot failed: {exc}\n".encode())
                code = 1
            os._exit(code)
        self._child = (pid, generation)

    def poll_snapshot(self, block: bool = False) -> bool | None:
        """``None`` while no snapshot finished; True/False when the running one succeeded/failed."""
        if self._child is None:
            return None
        pid, generation = self._child
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if done == 0:
            return None
        self._child = None
        gc.enable()
        if os.waitstatus_to_exitcode(status) != 0:
            self._failed(f"the snapshot of generation {generation} failed")
            return False
        self._retry_wait = self._retry_at = 0.0
        self._remove_journals_below(generation)
        return True

    def _failed(self, reason: str) -> None:
        """Log a failed snapshot and put the next automatic one off, twice as long each time."""
        self._retry_wait = min(max(2 * self._retry_wait, RETRY_FIRST), RETRY_LONGEST)
        self._retry_at = time.monotonic() + self._retry_wait
        log.error(
            "%s; the journals still hold every acknowledged write; next automatic snapshot in %.0f s",
            reason,
            self._retry_wait,
        )

    def save_now(self, state: dict, after: AfterSave | None = None) -> None:
        """Write a snapshot in this process (shutdown, or a save under the lock)."""
        self.poll_snapshot(block=True)
        generation = self._rotate()
        started = time.time()
        snapshot.save(self.path, {**state, "generation": generation})
        self._remove_journals_below(generation)
        if after is not None:
            after(state, started)

    def _rotate(self) -> int:
        """Start the next generation's journal and close the current one; return that generation.

        The current journal is synced and the next one created (with its
        header) before anything is switched: if either fails, the current
        journal stays open, unchanged, and keeps taking the writes.
        """
        self.writer.sync()
        generation = self.generation + 1
        writer = journal.JournalWriter(journal.journal_path(self.path, generation), generation)
        previous, self.writer, self.generation = self.writer, writer, generation
        if self.on_rotate is not None:
            self.on_rotate(generation)
        self.writes_since_snapshot = 0
        self._snapshot_started = time.monotonic()
        try:
            previous.close()
        except OSError as exc:  # synced just above: nothing acknowledged depends on this close
            log.error("closing journal %s: %s", previous.path, exc)
        return generation

    def _remove_journals_below(self, generation: int) -> None:
        """Delete the journals a snapshot of ``generation`` covers, but those retained (newest first)."""
        kept_bytes, now = 0, time.time()
        for gen, path in reversed(journal.journal_files(self.path)):
            if gen >= generation:
                continue
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            kept_bytes += info.st_size
            age = now - info.st_mtime
            if self.retain_seconds > 0 and kept_bytes <= self.retain_bytes and age <= self.retain_seconds:
                continue
            path.unlink(missing_ok=True)
            journal.start_path(path).unlink(missing_ok=True)

    def close(self) -> None:
        """Sync and close the journal, release the store."""
        if self.writer is not None:
            self.writer.close()
        if self._lock_handle is not None:
            portalocker.unlock(self._lock_handle)
            self._lock_handle.close()
