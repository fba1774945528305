"""The multi-process shape (SPEC §1, §3): read-only replicas, the lock, concurrency, restarts."""

from __future__ import annotations

import signal
import time

import pytest

from helpers import ServerProcess, run_clients
from pyzdb import errors
from pyzdb.client import Connection, client


def _wait_for(predicate, timeout: float, interval: float = 0.02) -> float:
    """Poll ``predicate`` until it is true; return the seconds it took (bounded by ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def replicas(server):
    """Two read-only servers behind ``server``'s read queue."""
    procs = [ServerProcess(server.db, server.port_base, read_only=True).start() for _ in range(2)]
    yield procs
    for proc in procs:
        assert proc.stop() == 0


def test_read_only_replicas_serve_new_data_after_save(server, replicas):
    db, conn = client(server.write_uri, server.read_uri, timeout=10)
    with conn:
        db["x"] = 1
        db.save()
        pids = {conn.call("ping")["pid"] for _ in range(10)}
        assert pids == {proc.pid for proc in replicas}, "the read DEALER spreads reads over both replicas"
        db["x"] = 2
        db["l"] = [1, 2, 3]
        db.save()
        saved = time.monotonic()

        def every_replica_sees_it() -> bool:
            return all(db.get("x") == 2 for _ in range(4))

        took = _wait_for(every_replica_sees_it, timeout=3.0)
        assert took < 1.0, f"replicas picked up the save after {took:.2f} s"
        assert time.monotonic() - saved < 3.0
        assert [v for v in db["l"]] == [1, 2, 3]


def test_write_sent_to_read_queue_is_refused(server, replicas):
    with Connection(server.read_uri, timeout=10) as wrong:
        with pytest.raises(errors.ReadOnlyError):
            wrong.db["x"] = 1
        with pytest.raises(errors.ReadOnlyError):
            wrong.db.clear()
    with Connection(server.write_uri, timeout=10) as right:
        assert "x" not in right.db


LOCKED_INCREMENTS = """
import sys
from pyzdb.client import client
db, conn = client(sys.argv[1], timeout=60)
for _ in range(int(sys.argv[2])):
    db.lock()
    value = db['n']._run()
    db['n'] = value + 1
    db.unlock()
conn.close()
"""

ATOMIC_INCREMENTS = """
import sys
from pyzdb.client import client
db, conn = client(sys.argv[1], timeout=60)
for _ in range(int(sys.argv[2])):
    db['n'] += 1
conn.close()
"""


def test_lock_makes_read_modify_write_exact(server, db):
    db["n"] = 0
    run_clients(LOCKED_INCREMENTS, 4, server.write_uri, "50")
    assert db["n"]._run() == 200


def test_inplace_increment_is_atomic_without_lock(server, db):
    db["n"] = 0
    run_clients(ATOMIC_INCREMENTS, 4, server.write_uri, "100")
    assert db["n"]._run() == 400


HOLD_LOCK_FOREVER = """
import sys, time
from pyzdb.client import client
db, conn = client(sys.argv[1], timeout=60)
db.lock()
db['holder'] = 'took it'
print('locked', flush=True)
time.sleep(120)
"""


def test_lock_of_killed_holder_expires_after_lease(tmp_path):
    import subprocess
    import sys

    from helpers import child_env

    server = ServerProcess(tmp_path / "db.pkl", None, "--lock-timeout", "1.5").start()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK_FOREVER, server.write_uri],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        holder.kill()
        holder.wait(10)
        killed = time.monotonic()
        with Connection(server.write_uri, timeout=10) as conn:
            conn.db["after"] = 1  # waits in the queue until the lease runs out
            waited = time.monotonic() - killed
            assert conn.db["holder"]._run() == "took it"
        assert 1.0 <= waited < 5.0, f"waited {waited:.2f} s for a 1.5 s lease"
        assert "released: silent" in server.log()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        server.stop()


def test_expired_holder_gets_lock_error(tmp_path):
    server = ServerProcess(tmp_path / "db.pkl", None, "--lock-timeout", "0.5").start()
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            conn.db.lock()
            time.sleep(1.0)
            with pytest.raises(errors.LockError, match="expired"):
                conn.db["x"] = 1
            with pytest.raises(errors.LockError):
                conn.db.unlock()
            conn.db["x"] = 2  # usable again without the lock
            assert conn.db["x"]._run() == 2
    finally:
        server.stop()


def test_locked_block_unlocks_on_exception(server, db):
    with pytest.raises(RuntimeError):
        with db.locked():
            db["inside"] = 1
            raise RuntimeError("boom")
    with Connection(server.write_uri, timeout=5) as other:
        other.db["outside"] = 2  # would wait (and time out) if the lock were still held
        assert other.db["inside"]._run() == 1


def test_others_wait_while_locked_and_readers_keep_going(server, replicas, db):
    db["n"] = 0
    db.save()
    with Connection(server.write_uri, server.read_uri, timeout=10) as reader:
        _wait_for(lambda: all(reader.db.get("n") == 0 for _ in range(4)), timeout=3)
        with db.locked():
            started = time.monotonic()
            assert reader.db["n"]._run() == 0  # replicas answer during the lock
            assert time.monotonic() - started < 1.0
            with Connection(server.write_uri, timeout=1) as writer:
                with pytest.raises(errors.TimeoutError):
                    writer.db["n"] = 99  # queued behind the lock, not refused
            db["n"] = 1
    assert db["n"]._run() in (1, 99)


def test_client_survives_server_restart(server, tmp_path):
    db, conn = client(server.write_uri, timeout=3)
    with conn:
        db["before"] = 1
        assert server.stop(signal.SIGTERM) == 0
        started = time.monotonic()
        with pytest.raises(errors.TimeoutError):
            db["before"]._run()
        assert time.monotonic() - started < 5
        server.start()
        assert db["before"]._run() == 1
        db["after"] = 2
        assert db["after"]._run() == 2


def test_write_retried_across_restart_is_applied_once(server):
    """A write whose reply was lost is resent with the same id and not applied twice."""
    with Connection(server.write_uri, timeout=20, retry_interval=0.5) as conn:
        conn.db["l"] = []
        server.send_signal(signal.SIGSTOP)  # the server takes the request but cannot answer
        try:
            import threading

            result: list = []
            worker = threading.Thread(target=lambda: result.append(conn.db["l"].append("once")))
            worker.start()
            time.sleep(1.5)  # the client resends meanwhile
        finally:
            server.send_signal(signal.SIGCONT)
        worker.join(20)
        assert result == [None]
        assert conn.db["l"]._run() == ["once"]


def test_replicas_follow_the_journal_without_a_save(server, replicas, report):
    """Writes reach the replicas through the journal, without save(), within a second."""
    with Connection(server.write_uri, server.read_uri, timeout=10) as conn:
        lags = []
        for i in range(5):
            conn.db[f"k{i}"] = i
            written = time.monotonic()
            _wait_for(lambda i=i: all(conn.db.get(f"k{i}") == i for _ in range(4)), timeout=3.0)
            lags.append(time.monotonic() - written)
        conn.db["l"] = [1]
        conn.db["l"].append(2)
        conn.db.undo()
        conn.db.save()  # a new snapshot and a new journal generation: replicas move on to it
        conn.db["after"] = "save"
        _wait_for(lambda: all(conn.db.get("after") == "save" for _ in range(4)), timeout=3.0)
        assert conn.db["l"]._run() == [1]
    lags.sort()
    assert lags[-1] < 1.0, f"replica lag {lags}"
    report(f"replica lag behind the writer: median {lags[2] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms")
