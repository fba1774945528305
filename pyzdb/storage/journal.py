"""The journal: every write request, on disk before its reply is sent.

File format (``<store>.journal.<generation>``, all integers big-endian)::

    offset 0   8 bytes   magic  b"PYZDBJ1\\n"
    offset 8   8 bytes   generation (unsigned)    the snapshot generation it follows
    offset 16  records, each:
               4 bytes   payload length N (unsigned)
               4 bytes   CRC-32 of the payload
               4 bytes   CRC-32 of the 8 bytes above (the header checksum)
               N bytes   payload: the request exactly as the client sent it (JSON)

A record is appended with one ``write(2)`` before the reply leaves, so a
SIGKILL of the server loses nothing acknowledged; ``fsync`` follows the
server's policy (``always``: before the reply, ``everysec``: at most a second
later, ``no``: when the OS decides).

Generations tie journals to snapshots: a snapshot of generation ``g`` holds
every record of the journals numbered below ``g``.  Recovery loads the
snapshot, then replays the journals numbered ``g`` and above, oldest first.

Reading stops at the first record that does not check out:

* if that record runs to the end of the newest journal (fewer than 12 header
  bytes left, or a valid header whose payload is cut short, or a bad payload
  checksum on the very last record), it is a *torn tail*: a write that the
  server died in the middle of, never acknowledged.  It is cut off with a
  warning and the cut bytes are kept aside in ``<journal>.torn-<offset>``.
* anything else is corruption: :class:`CorruptJournalError` names the file and
  byte offset, and start-up stops without overwriting anything.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from pyzdb.storage.snapshot import fsync_folder

MAGIC = b"PYZDBJ1\n"
FILE_HEADER = struct.Struct(">8sQ")
RECORD_HEADER = struct.Struct(">III")
_NAME = re.compile(r"\.journal\.(\d+)$")


class CorruptJournalError(Exception):
    """A journal record in the middle of a file failed its checks."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt journal at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset


@dataclass
class JournalScan:
    """What reading one journal file found."""

    path: Path
    generation: int
    records: list[bytes]
    end: int
    """Offset just past the last good record."""
    torn: bool
    """True if bytes after ``end`` are a torn last record."""


def journal_path(store: Path, generation: int) -> Path:
    """The journal file of ``generation`` beside the snapshot ``store``."""
    return store.with_name(f"{store.name}.journal.{generation}")


def start_path(journal: Path) -> Path:
    """The side file beside a journal that records the replication position at its start (JSON)."""
    return journal.with_name(journal.name + ".start")


def journal_files(store: Path) -> list[tuple[int, Path]]:
    """Every journal file of ``store``, oldest generation first."""
    found = []
    for path in store.parent.glob(f"{store.name}.journal.*"):
        match = _NAME.search(path.name)
        if match and path.name == f"{store.name}.journal.{match.group(1)}":
            found.append((int(match.group(1)), path))
    return sorted(found)


def encode_record(payload: bytes) -> bytes:
    """The bytes of one record."""
    head = struct.pack(">II", len(payload), zlib.crc32(payload))
    return head + struct.pack(">I", zlib.crc32(head)) + payload


def scan(path: Path, newest: bool) -> JournalScan:
    """Read every good record of ``path``; a torn tail is only accepted if ``newest``."""
    data = path.read_bytes()
    if len(data) < FILE_HEADER.size:
        if newest:
            return JournalScan(path, -1, [], 0, bool(data))
        raise CorruptJournalError(path, 0, "file shorter than its header")
    magic, generation = FILE_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptJournalError(path, 0, "not a pyzdb journal (bad magic)")
    records, end = _read_records(data, path, newest)
    return JournalScan(path, generation, records, end, end < len(data))


def _read_records(data: bytes, path: Path, newest: bool) -> tuple[list[bytes], int]:
    records = []
    offset = FILE_HEADER.size
    while offset < len(data):
        reason = _check_record(data, offset)
        if reason is None:
            length = RECORD_HEADER.unpack_from(data, offset)[0]
            start = offset + RECORD_HEADER.size
            records.append(data[start : start + length])
            offset = start + length
            continue
        if newest and _is_tail(data, offset):
            break
        raise CorruptJournalError(path, offset, reason)
    return records, offset


def _check_record(data: bytes, offset: int) -> str | None:
    if len(data) - offset < RECORD_HEADER.size:
        return "record header cut short"
    length, payload_crc, header_crc = RECORD_HEADER.unpack_from(data, offset)
    if zlib.crc32(data[offset : offset + 8]) != header_crc:
        return "record header checksum mismatch"
    start = offset + RECORD_HEADER.size
    if start + length > len(data):
        return f"record of {length} bytes runs past the end of the file"
    if zlib.crc32(data[start : start + length]) != payload_crc:
        return "record payload checksum mismatch"
    return None


def _is_tail(data: bytes, offset: int) -> bool:
    """True if the bad record at ``offset`` can only be a write cut short by a crash."""
    remaining = len(data) - offset
    if remaining < RECORD_HEADER.size:
        return True
    length, _, header_crc = RECORD_HEADER.unpack_from(data, offset)
    header_ok = zlib.crc32(data[offset : offset + 8]) == header_crc
    return header_ok and offset + RECORD_HEADER.size + length >= len(data)


def cut_torn_tail(found: JournalScan) -> Path:
    """Move the torn bytes of ``found`` aside and truncate the journal; return the aside file."""
    aside = found.path.with_name(f"{found.path.name}.torn-{found.end}")
    with open(found.path, "rb") as handle:
        handle.seek(found.end)
        aside.write_bytes(handle.read())
    with open(found.path, "r+b") as handle:
        handle.truncate(found.end)
        handle.flush()
        os.fsync(handle.fileno())
    return aside


def create(path: Path, generation: int) -> None:
    """Create the journal ``path`` with its header, all or nothing.

    The header is written and fsynced under a temporary name, then renamed
    into place: a journal name never shows a file without its header (a full
    disk cannot leave one), and read-only servers following the journals
    never see a new generation that then disappears.
    """
    tmp = path.with_name(path.name + ".new")  # not a journal name: journal_files() skips it
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            header = FILE_HEADER.pack(MAGIC, generation)
            if os.write(fd, header) != len(header):
                raise OSError(f"short write of the header of {path}")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        fsync_folder(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)  # renamed but not durable: not there is the safe state
        raise


class JournalWriter:
    """Appends records to one journal file (created, with its header, if it does not exist)."""

    def __init__(self, path: Path, generation: int) -> None:
        self.path = path
        self.generation = generation
        if not path.exists():
            create(path, generation)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._end = os.fstat(self._fd).st_size
        self.dirty = False

    def append(self, payload: bytes) -> None:
        """Write one record (one ``write(2)``); on failure the file is left as it was."""
        self._write(encode_record(payload))

    def _write(self, data: bytes) -> None:
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        except OSError:
            os.ftruncate(self._fd, self._end)  # never leave half a record behind
            raise
        self._end += len(data)
        self.dirty = True

    def sync(self) -> None:
        """fsync the file if anything was written since the last sync."""
        if self.dirty:
            os.fsync(self._fd)
            self.dirty = False

    def close(self) -> None:
        """Sync and close the file."""
        try:
            self.sync()
        finally:
            os.close(self._fd)


class JournalFollower:
    """Reads, as they are appended, the records of a store's journals (for read-only servers).

    Starts after the header of the journal of ``generation`` (the one that goes
    with the snapshot just loaded) and moves to the next generation when the
    writer has rotated to it.  Stops at an incomplete last record and reads it
    once it is whole.  If a journal it needs is gone (a newer snapshot replaced
    it), it returns nothing more: the caller reloads the snapshot.
    """

    def __init__(self, store: Path, generation: int) -> None:
        self.store = Path(store)
        self.generation = generation
        self.offset = FILE_HEADER.size
        self.lost = False

    def new_records(self) -> list[bytes]:
        """The records appended since the last call, oldest first."""
        records: list[bytes] = []
        while not self.lost:
            rotated = journal_path(self.store, self.generation + 1).exists()
            records += self._read_current()
            if not rotated or self.lost:
                break
            self.generation += 1
            self.offset = FILE_HEADER.size
        return records

    def _read_current(self) -> list[bytes]:
        try:
            with open(journal_path(self.store, self.generation), "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            # not written yet, or deleted after a newer snapshot (then a newer journal exists)
            self.lost = journal_path(self.store, self.generation + 1).exists()
            return []
        records = []
        offset = 0
        while _check_record(data, offset) is None:
            length = RECORD_HEADER.unpack_from(data, offset)[0]
            start = offset + RECORD_HEADER.size
            records.append(data[start : start + length])
            offset = start + length
        self.offset += offset
        return records
