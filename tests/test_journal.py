"""The journal file format: records round-trip, torn tails are cut, corruption is named (no server)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyzdb.storage import journal

payloads = st.lists(st.binary(min_size=0, max_size=64), min_size=1, max_size=12)


def _write(folder: Path, records: list[bytes], generation: int = 3) -> Path:
    path = journal.journal_path(folder / "db.pkl", generation)
    writer = journal.JournalWriter(path, generation)
    for record in records:
        writer.append(record)
    writer.close()
    return path


@settings(max_examples=200, deadline=None)
@given(payloads)
def test_records_round_trip(records):
    with tempfile.TemporaryDirectory() as folder:
        found = journal.scan(_write(Path(folder), records), newest=False)
    assert (found.generation, found.records, found.torn) == (3, records, False)


@settings(max_examples=200, deadline=None)
@given(payloads, st.data())
def test_any_cut_of_the_newest_journal_gives_a_prefix(records, data):
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), records)
        whole = path.read_bytes()
        cut = data.draw(st.integers(journal.FILE_HEADER.size, len(whole)))
        path.write_bytes(whole[:cut])
        found = journal.scan(path, newest=True)
        assert found.records == records[: len(found.records)]
        assert found.torn == (found.end != cut)
        if found.torn:
            aside = journal.cut_torn_tail(found)
            assert path.read_bytes() == whole[: found.end]
            assert aside.read_bytes() == whole[found.end : cut]


@settings(max_examples=200, deadline=None)
@given(payloads, st.data())
def test_a_flipped_byte_is_never_read_as_data(records, data):
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), records)
        whole = bytearray(path.read_bytes())
        position = data.draw(st.integers(journal.FILE_HEADER.size, len(whole) - 1))
        whole[position] ^= data.draw(st.integers(1, 255))
        path.write_bytes(bytes(whole))
        try:
            found = journal.scan(path, newest=True)
        except journal.CorruptJournalError as exc:
            assert exc.path == path and journal.FILE_HEADER.size <= exc.offset <= position
            return
        assert found.torn, "a damaged file is either refused or read up to the damage"
        assert found.records == records[: len(found.records)] and found.end <= position


def test_corruption_in_an_older_journal_is_never_a_torn_tail(tmp_path):
    path = _write(tmp_path, [b"a" * 10, b"b" * 10])
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(journal.CorruptJournalError, match="byte offset"):
        journal.scan(path, newest=False)


def test_bad_magic_is_refused(tmp_path):
    path = _write(tmp_path, [b"x"])
    path.write_bytes(b"NOTAJRNL" + path.read_bytes()[8:])
    with pytest.raises(journal.CorruptJournalError, match="bad magic"):
        journal.scan(path, newest=True)


def test_journal_files_are_listed_oldest_first(tmp_path):
    for generation in (10, 2, 7):
        _write(tmp_path, [b"x"], generation)
    (tmp_path / "db.pkl.journal.3.torn-40").write_bytes(b"")
    assert [gen for gen, _ in journal.journal_files(tmp_path / "db.pkl")] == [2, 7, 10]


def test_failed_append_leaves_no_partial_record(tmp_path):
    path = journal.journal_path(tmp_path / "db.pkl", 0)
    writer = journal.JournalWriter(path, 0)
    writer.append(b"kept")
    size = path.stat().st_size
    os.close(writer._fd)  # make the next write fail
    writer._fd = os.open(path, os.O_RDONLY)
    with pytest.raises(OSError):
        writer.append(b"refused")
    os.close(writer._fd)
    assert path.stat().st_size == size
    assert journal.scan(path, newest=True).records == [b"kept"]
