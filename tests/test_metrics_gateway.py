"""The metrics gateway over raw TCP sockets, byte for byte, against a real pyzdb server.

Each test runs a pyzdb server (tests/helpers.ServerProcess) and the gateway
(``python -m pyzdb.metrics``) as separate processes on free ports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from helpers import ROOT, ServerProcess, child_env
from metrics_helpers import GatewayProcess, exchange, read_replies
from pyzdb import TimeSeries
from pyzdb.client import Connection
from pyzdb.metrics import store as metrics_store
from pyzdb.metrics.store import MetricsStore

LEGACY = ROOT / "tests" / "data" / "legacy-metrics"
OK = b"ok\n\n"
WRONG = b"error\nwrong command\n\n"


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    """One pyzdb server and one gateway for the tests of this module that do not stop them."""
    folder = tmp_path_factory.mktemp("metrics")
    server = ServerProcess(folder / "db.pkl").start()
    try:
        with GatewayProcess(server.write_uri, folder, "-vv") as gateway:
            yield server, gateway
    finally:
        server.stop()


@pytest.fixture
def server(processes):
    """The module's pyzdb server."""
    return processes[0]


@pytest.fixture
def gateway(processes):
    """The module's gateway; the metrics are deleted after each test."""
    yield processes[1]
    with Connection(processes[0].write_uri, timeout=10) as conn:
        if "metrics" in conn.db.timeseries_names():
            coll = conn.db.timeseries("metrics")
            for pk in coll.select():
                coll.delete_ts(pk)


def test_put_and_get_examples_byte_for_byte(gateway, server):
    with gateway.connect() as sock:
        assert exchange(sock, b"put palm.cpu 42.3 1150864247\n") == OK
        assert exchange(sock, b"put palm.cpu 2.0 1150864248\n") == OK
        assert exchange(sock, b"put palm.cpu 4.0 1150864248\n") == OK  # overwrites
        assert exchange(sock, b"put eardrum.memory 2048 1150864251\n") == OK
        assert exchange(sock, b"put eardrum.memory 1024 1150864250\n") == OK
        assert (
            exchange(sock, b"get palm.cpu\n") == b"ok\npalm.cpu 42.3 1150864247\npalm.cpu 4.0 1150864248\n\n"
        )
        assert exchange(sock, b"get *\n") == (  # keys in order
            b"ok\neardrum.memory 1024.0 1150864250\neardrum.memory 2048.0 1150864251\n"
            b"palm.cpu 42.3 1150864247\npalm.cpu 4.0 1150864248\n\n"
        )
        assert exchange(sock, b"get nothing.here\n") == OK
    with Connection(server.write_uri, timeout=10) as conn:  # the documented place: the collection
        metrics = conn.db.timeseries("metrics")
        assert metrics.get("palm.cpu") == {
            "pk": "palm.cpu",
            "ts": TimeSeries([1150864247, 1150864248], [42.3, 4.0]),
            "server": "palm",
            "metric": "cpu",
        }
        assert list(metrics.select({"server": "eardrum"})) == ["eardrum.memory"]
        assert metrics.range("eardrum.memory", aggregation="sum", bucket=60) == [(1150864200.0, 3072.0)]
        assert "metrics" not in conn.db


def test_get_star_on_an_empty_store(gateway):
    with gateway.connect() as sock:
        assert exchange(sock, b"get *\n") == OK


MALFORMED = [
    b"got palm.cpu\n",
    b"put palm.cpu 1.0\n",
    b"put palm.cpu 1.0 1150864247 7\n",
    b"put palm.cpu abc 1150864247\n",
    b"put palm.cpu 1.0 1150864247.5\n",
    b"get\n",
    b"get a b\n",
    b"\n",
]


def test_malformed_requests_get_wrong_command_and_the_connection_goes_on(gateway):
    with gateway.connect() as sock:
        for n, request_line in enumerate(MALFORMED):
            assert exchange(sock, request_line) == WRONG, request_line
            assert exchange(sock, b"put ok.key %d %d\n" % (n, n)) == OK
        expected = b"".join(b"ok.key %d.0 %d\n" % (n, n) for n in range(len(MALFORMED)))
        assert exchange(sock, b"get *\n") == b"ok\n" + expected + b"\n"  # nothing else was stored


def test_requests_split_over_packets(gateway):
    pieces = [b"pu", b"t split.key 1", b"2.5 100", b"\r\ng", b"et split", b".key\n"]
    with gateway.connect() as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.02)  # separate TCP segments (TCP_NODELAY is on)
        assert read_replies(sock, 2) == OK + b"ok\nsplit.key 12.5 100\n\n"


def test_requests_coalesced_in_one_packet_are_answered_in_order(gateway):
    packet = b"put a 1 3\nput a 2 1\nbad\nget a\nput b 5 5\nput a 9 3\nget *\n"
    with gateway.connect() as sock:
        assert exchange(sock, packet, 7) == (
            OK + OK + WRONG + b"ok\na 2.0 1\na 1.0 3\n\n" + OK + OK + b"ok\na 2.0 1\na 9.0 3\nb 5.0 5\n\n"
        )


def test_twenty_concurrent_connections(gateway):
    count, start, results = 20, threading.Barrier(20, timeout=10), {}

    def client(n: int) -> None:
        with gateway.connect() as sock:
            start.wait()
            puts = b"".join(b"put conn.%d %d.5 %d\n" % (n, i, i) for i in range(10))
            shared = b"put shared %d %d\n" % (n, n)
            results[n] = exchange(sock, puts + shared + b"get conn.%d\n" % n, 12)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for n in range(count):
        own = b"".join(b"conn.%d %d.5 %d\n" % (n, i, i) for i in range(10))
        assert results[n] == OK * 11 + b"ok\n" + own + b"\n"
    with gateway.connect() as sock:
        everything = exchange(sock, b"get *\n")
    assert everything.count(b"\n") == 2 + count * 10 + count
    assert b"".join(b"shared %d.0 %d\n" % (n, n) for n in range(count)) in everything


def test_puts_arriving_together_share_pyzdb_requests(gateway):
    with gateway.connect() as sock:
        assert exchange(sock, b"put x 0 0\nput y 0 0\n", 2) == OK * 2  # both keys exist from here on
        mark = len(gateway.log())
        packet = b"".join(b"put %s %d %d\n" % (b"xy"[i % 2 : i % 2 + 1], i, i) for i in range(200))
        assert exchange(sock, packet, 200) == OK * 200
    batches = re.findall(r"stored (\d+) put\(s\) of \d+ key\(s\) in (\d+) request\(s\)", gateway.log()[mark:])
    assert sum(int(puts) for puts, _ in batches) == 200
    assert sum(int(requests) for _, requests in batches) <= 20  # 200 without batching


def test_store_writes_one_request_per_batch_and_splits_large_ones(gateway, server, monkeypatch):
    monkeypatch.setattr(metrics_store, "MAX_POINTS_PER_REQUEST", 3)
    with Connection(server.write_uri, timeout=10) as conn:
        store = MetricsStore(conn)
        assert store.write({"a.x": {1: 1.0}, "b": {1: 2.0}}) == set()  # opens the collection, metadata
        sent = store.requests
        assert store.write({"a.x": {2: 2.0}, "b": {2: 3.0}}) == set()
        assert store.requests - sent == 1, "one madd for every key of the batch"
        assert store.write({"a.x": {t: float(t) for t in range(10, 17)}}) == set()
        assert store.requests - sent == 1 + 3  # 7 points, at most 3 per request
        metrics = conn.db.timeseries("metrics")
        assert metrics.range("a.x") == [
            (1.0, 1.0),
            (2.0, 2.0),
            *((float(t), float(t)) for t in range(10, 17)),
        ]
        assert metrics.select(fields=[]) == {
            "a.x": {"pk": "a.x", "server": "a", "metric": "x"},
            "b": {"pk": "b", "metric": "b"},
        }


def test_store_keeps_points_other_clients_put_and_recreates_a_dropped_collection(gateway, server):
    with Connection(server.write_uri, timeout=10) as conn:
        store = MetricsStore(conn)
        assert store.write({"k": {1: 1.0}}) == set()
        conn.db.timeseries("metrics").add("k", 0, 9.0)
        assert store.write({"k": {2: 2.0}}) == set()
        assert store.read("k") == {"k": {0: 9.0, 1: 1.0, 2: 2.0}}  # neither write lost
        conn.db.timeseries("metrics").drop()
        assert store.write({"k": {3: 3.0}}) == set()
        assert store.read(None) == {"k": {3: 3.0}}
        assert store.write({"huge": {2**60: 1.0}}) == {"huge"}, "beyond float64's exact integers"


def test_no_ok_when_the_store_is_down(tmp_path):
    """A put the store did not confirm is answered with an error, and the gateway recovers."""
    server = ServerProcess(tmp_path / "db.pkl").start()
    gateway = GatewayProcess(server.write_uri, tmp_path, "--timeout", "1")
    try:
        with gateway.start().connect() as sock:
            assert exchange(sock, b"put before 1 1\n") == OK
            assert server.stop() == 0
            assert exchange(sock, b"put lost 2 2\nget *\n", 2) == b"error\nstorage failed\n\n" * 2
            server.start()  # same store, same ports: the gateway's pyzdb connection carries on
            assert exchange(sock, b"put after 3 3\nget *\n", 2) == OK + b"ok\nafter 3.0 3\nbefore 1.0 1\n\n"
        assert gateway.stop() == 0  # SIGTERM: a clean exit
    finally:
        gateway.stop()
        server.stop()


def test_help_describes_the_protocol():
    done = subprocess.run(
        [sys.executable, "-m", "pyzdb.metrics", "--help"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    assert done.returncode == 0
    for text in ("--host", "--port", "--db", "put <key> <value> <timestamp>", "wrong command", "127.0.0.1"):
        assert text in done.stdout


def test_a_store_written_by_the_tree_layout_keeps_its_metrics(tmp_path):
    """tests/data/legacy-metrics: a snapshot and a journal with metrics in db['metrics'] (pyzdb 67d8c6c)."""
    for name in ("db.pkl", "db.pkl.journal.1"):
        shutil.copy(LEGACY / name, tmp_path / name)
    server = ServerProcess(tmp_path / "db.pkl").start()
    try:
        with GatewayProcess(server.write_uri, tmp_path) as gateway, gateway.connect() as sock:
            assert exchange(sock, b"get *\n") == (
                b"ok\neardrum.memory 1024.0 1150864250\neardrum.memory 2048.0 1150864251\n"
                b"palm.cpu 42.3 1150864247\npalm.cpu 4.0 1150864248\nsolo 7.0 100\n\n"
            )
            assert exchange(sock, b"put palm.cpu 1.5 1150864249\nget palm.cpu\n", 2) == OK + (
                b"ok\npalm.cpu 42.3 1150864247\npalm.cpu 4.0 1150864248\npalm.cpu 1.5 1150864249\n\n"
            )
        with Connection(server.write_uri, timeout=10) as conn:
            assert "metrics" not in conn.db, "moved out of the tree"
            assert conn.db["other"]._run() == {"kept": True}
            metrics = conn.db.timeseries("metrics")
            assert metrics.select({"metric": "cpu"}, fields=["server"]) == {"palm.cpu": {"server": "palm"}}
            assert metrics.get("solo")["metric"] == "solo"
    finally:
        server.stop()
