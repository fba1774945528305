"""One load-generating client process of the benchmark (started by ``_procs.start_clients``).

Usage: ``python _load.py SPEC_JSON``.  The spec names the workload (``op``)
and its target (``uri`` or ``port``).  The client connects, warms up, prints
``ready``, waits for ``go SECONDS`` on stdin, then sends requests one at a
time (each after the previous reply) for that long and prints one JSON line:
``{"count", "elapsed", "cpu_s", "p50_us", "p99_us"}`` (``cpu_s``: this
client's own CPU time, user + system, during the run).

With ``"hammer": FILE`` it instead runs until SIGUSR1 (at most
``MAX_HAMMER`` seconds) and writes the ``time.monotonic()`` of every reply to
FILE (native doubles), for the save()-blocking measurement.
"""

from __future__ import annotations

import array
import json
import os
import signal
import sys
import time
from collections.abc import Callable

WARMUP = 50
IN_FLIGHT = 8
"""Writes the ``window`` workload keeps in flight on its DEALER socket."""
MAX_HAMMER = 300.0
RECORD_KEYS = 100_000
"""Writes overwrite the records ``u0 .. u99999`` of the benchmark store."""


def pyzdb_workload(spec: dict) -> Callable[[], object]:
    """One request of a pyzdb workload, through the synchronous client."""
    from pyzdb.client import Connection

    conn = Connection(
        spec["uri"], timeout=60.0, server_key=spec.get("server_key"), client_key=spec.get("client_key")
    )
    db = conn.db
    op = spec["op"]
    if op == "ping":
        return lambda: conn.call("ping")
    if op == "read":
        return lambda: db["users"]["u123"]["name"]._run()
    if op == "len":
        return lambda: len(db["list"])
    if op == "iter":
        return lambda: [v for v in db["list"]]
    if op == "incr":
        return lambda: _increment(db)
    if op == "write":
        return _writer(db, spec["index"])
    raise ValueError(f"unknown pyzdb op {op!r}")


def _increment(db) -> None:
    db["counter"] += 1


def _writer(db, index: int) -> Callable[[], None]:
    state = {"i": index * 7919}

    def write() -> None:
        i = state["i"] = state["i"] + 1
        db["users"][f"u{i % RECORD_KEYS}"] = {"name": f"user{i}", "age": i % 90}

    return write


def window_workload(spec: dict) -> Callable[[], object]:
    """Writes with ``IN_FLIGHT`` outstanding on one raw DEALER: each call takes a reply and sends a write.

    Its "latency" is the time between two replies, not a request's round trip.
    """
    import zmq

    from pyzdb import protocol

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(spec["uri"])
    client = os.urandom(8).hex()
    state = {"seq": 0}

    def send_next() -> None:
        seq = state["seq"] = state["seq"] + 1
        i = spec["index"] * 7919 + seq
        record = {"name": f"user{i}", "age": i % 90}
        message = protocol.build_request(
            "set", ("users", f"u{i % RECORD_KEYS}"), args=(record,), id=seq, client=client, seq=seq
        )
        sock.send_multipart([b"", protocol.encode_request(message)])

    for _ in range(IN_FLIGHT):
        send_next()

    def step() -> None:
        sock.recv_multipart()
        send_next()

    return step


def echo_workload(spec: dict) -> Callable[[], object]:
    """One request to an echo floor: the bytes of pyzdb's small read, sent and echoed back."""
    import zmq

    from pyzdb import protocol

    payload = protocol.encode_request(protocol.build_request("get", ("users", "u123", "name"), id=1))
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    sock.connect(spec["uri"])

    def echo() -> bytes:
        sock.send(payload)
        return sock.recv()

    return echo


def redis_workload(spec: dict) -> Callable[[], object]:
    """One Redis GET of a small string, or SET of a small JSON record."""
    from _setup import use_pydeps

    use_pydeps()
    import redis

    client = redis.Redis(host="127.0.0.1", port=spec["port"])
    if spec["op"] == "redis_get":
        return lambda: client.get("u123:name")
    state = {"i": spec["index"] * 7919}

    def set_record() -> None:
        i = state["i"] = state["i"] + 1
        client.set(f"u{i % RECORD_KEYS}", json.dumps({"name": f"user{i}", "age": i % 90}))

    return set_record


def workload(spec: dict) -> Callable[[], object]:
    """The request function named by the spec."""
    if spec["op"] == "echo":
        return echo_workload(spec)
    if spec["op"] == "window":
        return window_workload(spec)
    if spec["op"].startswith("redis_"):
        return redis_workload(spec)
    return pyzdb_workload(spec)


def timed_run(request: Callable[[], object], seconds: float) -> dict:
    """Send requests for ``seconds``; return the count and latency percentiles."""
    clock = time.perf_counter
    latencies = []
    cpu_before = sum(os.times()[:2])
    started = clock()
    deadline = started + seconds
    now = started
    while now < deadline:
        request()
        after = clock()
        latencies.append(after - now)
        now = after
    cpu = sum(os.times()[:2]) - cpu_before
    latencies.sort()
    return {
        "count": len(latencies),
        "elapsed": now - started,
        "cpu_s": cpu,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6,
    }


def hammer(request: Callable[[], object], out: str) -> dict:
    """Send requests until SIGUSR1; write the reply times to ``out``."""
    stopped = []
    signal.signal(signal.SIGUSR1, lambda *_: stopped.append(True))
    clock = time.monotonic
    stamps = array.array("d", [clock()])
    deadline = stamps[0] + MAX_HAMMER
    while not stopped and stamps[-1] < deadline:
        request()
        stamps.append(clock())
    with open(out, "wb") as handle:
        stamps.tofile(handle)
    return {"count": len(stamps)}


def main() -> int:
    """Warm up, say ``ready``, run on ``go``, print the result."""
    spec = json.loads(sys.argv[1])
    request = workload(spec)
    for _ in range(WARMUP):
        request()
    print("ready", flush=True)
    command = sys.stdin.readline().split()
    if not command or command[0] != "go":
        return 1
    if "hammer" in spec:
        result = hammer(request, spec["hammer"])
    else:
        result = timed_run(request, float(command[1]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
