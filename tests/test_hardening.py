"""Hostile requests that once corrupted, amplified or stalled (issue 16), against real servers.

Each test sends its messages over raw pyzmq sockets, so they reach the server
exactly as written, and then checks that the store is still readable whole
and unchanged: bad input gets a clear error and changes nothing (SPEC §6).
"""

from __future__ import annotations

import errno
import json
import operator
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from helpers import ServerProcess, raw_request
from pyzdb import codec, errors, formatsize
from pyzdb.client import Connection
from pyzdb.storage import journal, snapshot

CANARY = {"n": 1, "l": [1, 2, 3], "s": "abc", "d": {"k": [None, True]}}


@pytest.fixture
def shared_db(shared: ServerProcess) -> Iterator[Any]:
    """The root of ``shared``, holding exactly :data:`CANARY`."""
    with Connection(shared.write_uri, timeout=10) as conn:
        conn.db.clear()
        conn.db.update(CANARY)
        yield conn.db


def send(context: zmq.Context, uri: str, message: str | bytes) -> dict:
    """Send one raw request and return its decoded reply (fails if none comes in time)."""
    raw = message.encode() if type(message) is str else message
    reply = raw_request(context, uri, [raw])
    assert reply is not None, f"no reply to {raw[:100]!r}"
    return json.loads(reply[-1])


def assert_refused(reply: dict, error_type: str, match: str = "") -> None:
    """``reply`` is an error of ``error_type`` whose message contains ``match``."""
    assert reply["ok"] is False, reply
    assert reply["error"]["type"] == error_type, reply
    assert match in reply["error"]["message"], reply


def assert_unchanged(db: Any) -> None:
    """The whole store reads back, and it is still :data:`CANARY`."""
    assert db._run() == CANARY


# --- defect 1: an escaped tag is still a tag --------------------------------------

ESCAPED_TAGS = {
    "escaped-file": '{"\\u0024file": {"name": "x", "frame": 1}}',
    "escaped-slice": '{"\\u0024slice": [1, 2, 3]}',
    "escaped-letter": '{"$\\u0066ile": {"name": "x", "frame": 1}}',
    "slice-in-a-list": '[1, {"\\u0024slice": [null, null, null]}]',
}


@pytest.mark.parametrize("value", ESCAPED_TAGS.values(), ids=ESCAPED_TAGS.keys())
def test_escaped_tag_is_refused_and_the_store_stays_readable(shared, shared_db, zmq_context, value):
    reply = send(
        zmq_context, shared.write_uri, f'{{"v": 1, "op": "set", "path": ["esc"], "args": [{value}]}}'
    )
    assert_refused(reply, "ProtocolError")
    assert_unchanged(shared_db)


def test_escaped_slice_in_keyword_arguments_is_refused(shared, shared_db, zmq_context):
    message = (
        '{"v": 1, "op": "call", "path": [], "method": "update", "kwargs": {"k": {"\\u0024slice": [1, 2, 3]}}}'
    )
    assert_refused(send(zmq_context, shared.write_uri, message), "ProtocolError", "$slice")
    assert_unchanged(shared_db)


# --- defect 2: tuple keys in a path count towards the depth -----------------------


def nested_tuple(levels: int) -> str:
    """A ``$tuple`` nested ``levels`` deep around the integer 1, as JSON."""
    return '{"$tuple": [' * levels + "1" + "]}" * levels


def test_deep_tuple_key_in_a_path_is_refused(shared, shared_db, zmq_context):
    message = f'{{"v": 1, "op": "set", "path": ["d", {nested_tuple(99)}], "args": [[[[[[1]]]]]]}}'
    assert_refused(send(zmq_context, shared.write_uri, message), "ProtocolError", "deeper than 100 levels")
    assert_unchanged(shared_db)


def test_tuple_key_at_the_depth_limit_is_accepted_and_reads_back(shared, shared_db, zmq_context):
    """``{"d": {K: v}}`` with ``K`` 98 deep is 100 levels: stored, and the whole store reads back."""
    message = f'{{"v": 1, "op": "set", "path": ["d", {nested_tuple(98)}], "args": [[[[[[1]]]]]]}}'
    assert send(zmq_context, shared.write_uri, message)["ok"] is True
    root = shared_db._run()
    assert len(root["d"]) == 2
    del shared_db["d"][next(key for key in root["d"] if type(key) is tuple)]
    assert_unchanged(shared_db)


# --- defect 7: the envelope takes plain JSON, not tags ---------------------------

TAGGED_ENVELOPES = {
    "v-as-int-tag": '{"v": {"$int": "0x1"}, "op": "ping"}',
    "id-as-int-tag": '{"v": 1, "op": "ping", "id": {"$int": "0x5"}}',
    "seq-as-int-tag": '{"v": 1, "op": "set", "path": ["n"], "args": [2], "client": "c", '
    '"seq": {"$int": "0x7"}}',
    "whole-request-as-dict-tag": '{"$dict": [["v", 1], ["op", "set"], ["path", ["n"]], ["args", [2]]]}',
}


@pytest.mark.parametrize("message", TAGGED_ENVELOPES.values(), ids=TAGGED_ENVELOPES.keys())
def test_tagged_envelope_member_is_refused(shared, shared_db, zmq_context, message):
    assert_refused(send(zmq_context, shared.write_uri, message), "ProtocolError")
    assert_unchanged(shared_db)


def test_big_integer_arguments_still_travel_as_tags(shared, shared_db, zmq_context):
    message = '{"v": 1, "op": "set", "path": ["big"], "args": [{"$int": "-0x20000000000001"}], "id": 3}'
    assert send(zmq_context, shared.write_uri, message) == {"v": 1, "id": 3, "ok": True, "result": None}
    assert shared_db["big"]._run() == -(2**53) - 1
    del shared_db["big"]


# --- defect 4: results that would be far larger than the request ------------------

AMPLIFIERS = {
    "star-width": ("%*d", (20_000_000, 1), operator.imod),
    "literal-width": ("%020000000d", 1, operator.imod),
    "precision": ("%.20000000f", 1.0, operator.imod),
    "int-precision": ("%.20000000d", 1, operator.imod),
    "bytes-width": (b"%*d", (20_000_000, 1), operator.imod),
    "int-times-str": (20_000_000, "ab", operator.imul),
    "int-times-list": (20_000_000, [1], operator.imul),
    "int-times-int": (1 << 40_000, 1 << 40_000, operator.imul),
}


@pytest.mark.parametrize(("start", "operand", "inplace"), AMPLIFIERS.values(), ids=AMPLIFIERS.keys())
def test_result_far_larger_than_the_request_is_refused(shared_db, start, operand, inplace):
    shared_db["grow"] = start
    with pytest.raises(ValueError, match="limit|more than"):
        inplace(shared_db["grow"], operand)  # db['grow'] %= operand: one request
    assert shared_db["grow"]._run() == start
    del shared_db["grow"]
    assert_unchanged(shared_db)


def test_ordinary_formatting_and_repeating_still_work(shared_db):
    shared_db["f"] = "%05d|%-4s|%.2f"
    ref = shared_db["f"]
    ref %= (42, "ab", 2.5)
    shared_db["t"] = 3
    ref = shared_db["t"]
    ref *= "ab"
    assert (shared_db["f"]._run(), shared_db["t"]._run()) == ("00042|ab  |2.50", "ababab")
    del shared_db["f"], shared_db["t"]


@pytest.mark.parametrize("seed", range(3))
def test_format_bound_is_never_below_the_real_length(seed):
    """The bound the server checks before ``%=`` holds for random formats and arguments."""
    rng = random.Random(seed)
    pieces = [*"%()a-+ #0.*hlLdiuxXocpeEfFgGsrab", "5", "12", ".3", "%%", "\x00", "é"]
    values = [
        0,
        -123456789,
        2**200,
        1.5,
        -1e308,
        "a\x00\U000e0000",
        b"\x00a",
        None,
        True,
        [1, "x"],
        (2,),
        40,
    ]
    for _ in range(3000):
        fmt = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 10)))
        args = tuple(rng.choice(values) for _ in range(rng.randrange(4))) if rng.random() < 0.8 else {"a": 7}
        for form in (fmt, fmt.encode()):
            try:
                result = form % args
            except (TypeError, ValueError, OverflowError, KeyError):
                continue
            assert formatsize.bound(form, args) >= len(result), (form, args)


# --- defect 5: requests that cost seconds -----------------------------------------


def colliding_keys(count: int) -> str:
    """A ``$dict`` of ``count`` integer keys that all hash to 0, as JSON."""
    pairs = ", ".join(f'[{{"$int": "{hex(k * (2**61 - 1))}"}}, 0]' for k in range(1, count + 1))
    return f'{{"$dict": [{pairs}]}}'


@pytest.mark.parametrize("op", ["set", "contains"])
def test_dict_of_colliding_keys_is_refused_before_it_is_built(shared, shared_db, zmq_context, op):
    path = '["c"]' if op == "set" else "[]"
    message = f'{{"v": 1, "op": "{op}", "path": {path}, "args": [{colliding_keys(3000)}]}}'
    assert_refused(send(zmq_context, shared.write_uri, message), "ProtocolError", "share")
    assert_unchanged(shared_db)


def test_update_with_colliding_pairs_is_refused(shared_db):
    pairs = [[k * (2**61 - 1), 0] for k in range(1, 3001)]
    with pytest.raises(ValueError, match="share"):
        shared_db["d"].update(pairs)
    assert_unchanged(shared_db)


def test_a_few_keys_with_one_hash_are_accepted(shared_db):
    keys = {-1: "a", -2: "b", 0: "c", 2**61 - 1: "d", 0.5: "e", 2**60: "f"}  # natural collisions
    shared_db["few"] = keys
    assert shared_db["few"]._run() == keys
    del shared_db["few"]


def test_integer_beyond_the_size_limit_is_refused(shared, shared_db, zmq_context):
    huge = "0x" + "f" * 250_000  # a million bits: %= on two of them took seconds, at every replay too
    message = f'{{"v": 1, "op": "iop", "path": ["n"], "method": "mod", "args": [{{"$int": "{huge}"}}]}}'
    assert_refused(send(zmq_context, shared.write_uri, message), "ProtocolError", "bits exceeds the limit")
    assert_unchanged(shared_db)


def test_integer_at_the_size_limit_is_stored_and_reads_back(shared_db):
    shared_db["big"] = -(2**codec.MAX_INT_BITS - 1)
    assert shared_db["big"]._run() == -(2**codec.MAX_INT_BITS - 1)
    del shared_db["big"]
    assert_unchanged(shared_db)


# --- defect 3: a full disk during a snapshot --------------------------------------


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 4 MB tmpfs of its own, unmounted after the test (needs root: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs the suite as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, timeout=30
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last page with one file and return it (other files keep their last page)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (b"\xff" * 65536, b"\xff" * 4096, b"\xff"):
            for _ in range(1000):  # bounded: 4 MB is 64 of the largest chunks
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


def on_small_disk(disk: Path, tmp_path: Path, *options: str) -> ServerProcess:
    """A server whose store is on ``disk`` and whose log is not (it must not fill up with the disk)."""
    server = ServerProcess(disk / "db.pkl", None, "--autosave-writes", "0", *options)
    server.log_path = tmp_path / "server.log"
    return server.start()


def try_writes(conn: Connection, prefix: str, count: int, acknowledged: dict) -> None:
    """Write ``count`` keys; record in ``acknowledged`` those the server acknowledged."""
    for i in range(count):
        key, value = f"{prefix}{i}", [i, "x" * 200]
        try:
            conn.db[key] = value
        except errors.StorageError:
            continue
        acknowledged[key] = value


def test_save_on_a_full_disk_keeps_the_journal_and_every_acknowledged_write(small_disk, tmp_path):
    server = on_small_disk(small_disk, tmp_path, "--autosave-seconds", "0")
    acknowledged: dict = {}
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            try_writes(conn, "before", 5, acknowledged)
            journals = journal.journal_files(server.db)
            filler = fill(small_disk)
            with pytest.raises(errors.StorageError, match="save failed"):
                conn.db.save()
            assert journal.journal_files(server.db) == journals, "a failed save leaves no journal behind"
            try_writes(conn, "full", 30, acknowledged)
            filler.unlink()
            try_writes(conn, "after", 30, acknowledged)
            assert all(f"after{i}" in acknowledged for i in range(30)), "writes succeed once space is back"
        server.kill()
        server.start()  # it once refused to start: "bad magic" in a journal with no header
        with Connection(server.write_uri, timeout=10) as conn:
            assert conn.db._run() == acknowledged
    finally:
        server.stop()
    assert "could not start the journal" in server.log()


def test_automatic_snapshot_on_a_full_disk_backs_off_and_says_so(small_disk, tmp_path):
    server = on_small_disk(small_disk, tmp_path, "--autosave-seconds", "0.2")
    acknowledged: dict = {}
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            filler = fill(small_disk)
            time.sleep(0.3)  # the first write below makes a snapshot due at once
            try_writes(conn, "k", 5, acknowledged)
            assert len(acknowledged) == 5, "small writes still fit in the journal's last page"
            time.sleep(3)  # a snapshot is due all along: it once retried every 0.1 s, a journal each time
            assert len(journal.journal_files(server.db)) == 1
            failures = server.log().count("next automatic snapshot in")
            assert 1 <= failures <= 3, server.log()
            filler.unlink()
            deadline = time.monotonic() + 20  # the back-off is at most 4 s by now
            while time.monotonic() < deadline and not snapshot_holds(server.db, acknowledged):
                time.sleep(0.1)
            assert snapshot_holds(server.db, acknowledged), "the snapshot succeeds once space is back"
            assert conn.db._run() == acknowledged
    finally:
        server.stop()


def snapshot_holds(path: Path, expected: dict) -> bool:
    """True if the snapshot at ``path`` holds exactly ``expected``."""
    try:
        state = snapshot.load(path)
    except (OSError, EOFError, ValueError):
        return False
    return state is not None and state["root"] == expected


# --- the codec's records and limits, without a server ------------------------------


def test_loads_records_tags_however_they_are_spelled():
    tags: dict = {}
    codec.loads(b'[{"\\u0024slice": [1, 2, 3]}, {"$\\u0074uple": [1]}]', tags)
    assert set(tags) == {"$slice", "$tuple"}


def test_key_hash_check_counts_distinct_keys_only():
    nan = float("nan")
    codec.check_key_hashes([1, 1.0, True] * 100 + [nan] * 100)  # equal keys, and one nan object, are one key
    with pytest.raises(ValueError, match="share the hash 0"):
        codec.check_key_hashes([k * (2**61 - 1) for k in range(codec.MAX_KEYS_PER_HASH + 1)])
