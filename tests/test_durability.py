"""SPEC §5 against real processes: SIGKILL loses nothing acknowledged, recovery, one writer, disk errors."""

from __future__ import annotations

import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import ServerProcess, child_env, free_port_base
from pyzdb import errors
from pyzdb.client import Connection
from pyzdb.storage import journal, snapshot

WRITER = """
import os, sys
from pyzdb.client import Connection
uri, name, stop, acks = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
with Connection(uri, timeout=60, retry_interval=0.2) as conn, open(acks, "a") as log:
    conn.db[name] = []
    i = 0
    while not os.path.exists(stop) and i < 100_000:
        conn.db[name].append([i, -i])       # one request: both halves or neither
        log.write(f"{i}\\n")
        log.flush()
        i += 1
print("done", flush=True)
"""


def _acked(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _read(uri: str, name: str) -> list:
    with Connection(uri, timeout=20, retry_interval=0.2) as conn:
        return conn.db[name]._run()


def test_sigkill_under_load_loses_no_acknowledged_write(tmp_path, report):
    rounds, names = 20, ["w0", "w1"]
    stop = tmp_path / "stop"
    server = ServerProcess(tmp_path / "db.pkl", None, "--autosave-writes", "150").start()
    acks = {name: tmp_path / f"{name}.acks" for name in names}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, server.write_uri, name, str(stop), str(acks[name])],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for name in names
    ]
    checked = under_load = 0
    rng = random.Random(1234)
    try:
        for _ in range(rounds):
            time.sleep(rng.uniform(0.05, 0.4))
            server.kill()
            acked = {name: _acked(path) for name, path in acks.items()}
            under_load += all(count > 0 for count in acked.values())
            server.start()
            for name in names:
                if acked[name] == 0:
                    continue
                stored = _read(server.write_uri, name)
                assert len(stored) >= acked[name], f"{name}: {acked[name]} acknowledged, {len(stored)} stored"
                assert stored == [[i, -i] for i in range(len(stored))], (
                    f"{name}: lost, doubled or torn writes"
                )
                checked += acked[name]
        stop.touch()
        for writer in writers:
            out, _ = writer.communicate(timeout=120)
            assert writer.returncode == 0 and "done" in out
        for name in names:
            total = _acked(acks[name])
            assert _read(server.write_uri, name) == [[i, -i] for i in range(total)]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait(10)
        server.stop()
    assert under_load >= rounds // 2, f"only {under_load} of {rounds} kills hit a running write load"
    report(
        f"{rounds} SIGKILL rounds ({under_load} during the write load); after each restart every write "
        f"acknowledged so far was present ({checked} checks in all); final "
        f"{' + '.join(str(_acked(acks[name])) for name in names)} writes exact, none lost or doubled"
    )


def _journal_of(db: Path) -> Path:
    files = journal.journal_files(db)
    assert files, "no journal written"
    return files[-1][1]


def _crashed_store(tmp_path: Path, writes: int) -> ServerProcess:
    server = ServerProcess(tmp_path / "db.pkl").start()
    with Connection(server.write_uri, timeout=10) as conn:
        conn.db["l"] = []
        for i in range(writes):
            conn.db["l"].append(i)
    server.kill()
    return server


def test_torn_last_record_is_cut_with_warning(tmp_path):
    server = _crashed_store(tmp_path, 5)
    path = _journal_of(server.db)
    good = path.read_bytes()
    torn = journal.encode_record(b'{"v":1,"op":"set","path":["x"],"args":[1]}')[:-7]
    path.write_bytes(good + torn)
    server.start()
    try:
        assert _read(server.write_uri, "l") == [0, 1, 2, 3, 4]
        assert "cut a torn last record" in server.log()
        assert path.read_bytes()[: len(good)] == good
        assert list(tmp_path.glob("db.pkl.journal.*.torn-*"))[0].read_bytes() == torn
    finally:
        server.stop()


def test_corruption_mid_journal_stops_startup_and_changes_nothing(tmp_path):
    server = _crashed_store(tmp_path, 5)
    path = _journal_of(server.db)
    data = bytearray(path.read_bytes())
    offset = journal.FILE_HEADER.size + journal.RECORD_HEADER.size + 3  # inside the first record's payload
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    server.start(wait=False)
    assert server.process.wait(20) == 1
    log = server.log()
    assert str(path) in log and f"byte offset {journal.FILE_HEADER.size}" in log
    assert path.read_bytes() == bytes(data), "a corrupt journal is never overwritten"
    assert not (tmp_path / "db.pkl").exists()


def test_second_writer_on_same_store_refuses_to_start(server, tmp_path):
    second = ServerProcess(server.db, free_port_base())
    second.start(wait=False)
    assert second.process.wait(20) == 1
    assert f"pid {server.pid}" in second.log()
    with Connection(server.write_uri, timeout=10) as conn:
        conn.db["still"] = "serving"


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_disk_full_refuses_the_write_and_keeps_serving(tmp_path):
    server = ServerProcess(tmp_path / "db.pkl", None, preexec_fn=_limit_file_size).start()
    acknowledged = []
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            with pytest.raises(errors.StorageError, match="not applied"):
                for i in range(100):
                    conn.db[f"k{i}"] = "x" * 4000
                    acknowledged.append(f"k{i}")
            refused = f"k{len(acknowledged)}"
            assert refused not in conn.db, "a write that failed on disk is not applied in memory"
            assert sorted(conn.db.keys()) == sorted(acknowledged)
            assert conn.call("ping")["pid"] == server.pid
    finally:
        server.kill()
    server.preexec_fn = None
    server.start()
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            assert sorted(conn.db.keys()) == sorted(acknowledged)
    finally:
        server.stop()


def test_save_forks_snapshot_and_drops_covered_journals(server, db):
    db["a"] = list(range(1000))
    first = journal.journal_files(server.db)
    db.save()
    assert (server.db).exists()
    later = journal.journal_files(server.db)
    assert [gen for gen, _ in later] == [first[-1][0] + 1], "covered journals are deleted after the save"
    db["b"] = 1
    server.kill()
    server.start()
    with Connection(server.write_uri, timeout=10) as conn:
        assert conn.db["a"]._run() == list(range(1000)) and conn.db["b"]._run() == 1
        conn.db.undo()
        assert "b" not in conn.db, "undo history survives snapshot + journal replay"


def _snapshot_holds(path: Path, keys: set[str]) -> bool:
    state = snapshot.load(path) if path.exists() else None
    return state is not None and keys <= state["root"].keys()


def test_autosave_after_n_writes(tmp_path):
    """The 10th write makes a snapshot due; once it is on disk and the old journal dropped, none is."""
    server = ServerProcess(tmp_path / "db.pkl", None, "--autosave-writes", "10").start()
    keys = {f"k{i}" for i in range(10)}
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            for key in sorted(keys):
                conn.db[key] = key
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            _snapshot_holds(server.db, keys) and len(journal.journal_files(server.db)) == 1
        ):
            time.sleep(0.05)
        assert _snapshot_holds(server.db, keys), "no snapshot with all ten writes (no save() was sent)"
        assert len(journal.journal_files(server.db)) == 1
    finally:
        server.stop()


def test_save_during_a_running_snapshot_waits_for_one_that_includes_its_writes(server, db):
    db["big"] = {f"k{i}": [i, str(i)] for i in range(200_000)}
    first = threading.Thread(target=db.save)
    first.start()
    with Connection(server.write_uri, timeout=30) as other:
        time.sleep(0.05)  # let the first snapshot start
        other.db["late"] = "after the first snapshot began"
        other.db.save()
        assert snapshot.load(server.db)["root"].get("late") == "after the first snapshot began"
    first.join(30)
