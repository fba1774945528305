"""``run.py --profile``: where the time of pyzdb's small read and small write goes.

For each workload, a read-write server runs under ``python -m cProfile``
(its main thread is the request loop; the queue devices are libzmq threads
that hold no GIL) and one client sends ``REQUESTS`` requests, profiled in
this process.  The top functions by own time, server and client, are printed
and written to ``benchmarks/results/profile-<workload>.txt``.  Before that,
the Python cost of pyzdb's own code per request is timed without sockets or
profiler, in a hot loop and with cold caches (``profile-inprocess.txt``).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

import _procs
import _stores

REQUESTS = 20_000
TOP = 18


def client_loop(uri: str, workload: str) -> cProfile.Profile:
    """Send ``REQUESTS`` requests of the workload, profiled; print the rate."""
    from pyzdb.client import Connection

    with Connection(uri, timeout=60.0) as conn:
        db = conn.db
        value = {"name": "someone", "age": 42}
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        for i in range(REQUESTS):
            if workload == "read":
                db["users"]["u123"]["name"]._run()
            else:
                db["users"][f"u{i % 100_000}"] = value
        profile.disable()
        elapsed = time.perf_counter() - started
    print(
        f"{workload}: {REQUESTS} requests in {elapsed:.2f} s under the profiler ({REQUESTS / elapsed:,.0f}/s)"
    )
    return profile


def top(stats: pstats.Stats, title: str) -> str:
    """The ``TOP`` functions by own time, as text."""
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("tottime").print_stats(TOP)
    body = out.getvalue()
    return f"--- {title} ---\n" + body[body.index("   ncalls") :]


def profile_workload(scratch: Path, workload: str) -> str:
    """Profile one workload on both ends; return the report."""
    store = _stores.write_store(scratch / f"profile-{workload}.pkl", 100_000, extras=True)
    out = scratch / f"server-{workload}.prof"
    base = _procs.free_port_base()
    command = [sys.executable, "-m", "cProfile", "-o", str(out), *_procs.pyzdb_command(store, base)[1:]]
    server = _procs.spawn(command, scratch / f"server-{workload}.log")
    try:
        _procs.wait_reply(_procs.write_uri(base), _procs.ping_request())
        client = client_loop(_procs.write_uri(base), workload)
    finally:
        _procs.stop(server, signal.SIGTERM, 60.0)
    return "\n".join(
        [
            top(pstats.Stats(str(out)), f"{workload}: server main thread"),
            top(pstats.Stats(client), f"{workload}: client"),
        ]
    )


def per_call_us(function, count: int = REQUESTS) -> float:
    """Microseconds per call of ``function`` (no profiler)."""
    started = time.perf_counter()
    for i in range(count):
        function(i)
    return (time.perf_counter() - started) / count * 1e6


COLD_CALLS = 1_000
FLUSH_BYTES = 64 * 2**20
"""More than this machine's caches (L2 1 MiB per core, L3 32 MiB shared)."""


def cold_call_us(function, count: int = COLD_CALLS) -> float:
    """Median microseconds per call of ``function`` when every call starts with cold caches.

    Before each (timed) call, ``FLUSH_BYTES`` of memory are written (not timed):
    what a request meets in a server that other threads and processes share the
    cores with, where a hot loop flatters Python code several times over.
    """
    flush = bytearray(FLUSH_BYTES)
    ones = b"\x01" * len(flush[::64])
    clock = time.perf_counter
    times = []
    for i in range(count):
        flush[::64] = ones  # one write per cache line
        started = clock()
        function(i)
        times.append(clock() - started)
    times.sort()
    return times[len(times) // 2] * 1e6


def inprocess_costs() -> str:
    """What pyzdb's own Python costs per request, without sockets (handler; client encode/decode)."""
    from pyzdb import protocol
    from pyzdb.server.handler import Handler
    from pyzdb.store import Store

    handler = Handler(Store({"users": _stores.users(100_000)}, 1000))
    read = protocol.encode_request(protocol.build_request("get", ("users", "u123", "name"), id=1))
    reply = handler.handle([read])
    value = {"name": "someone", "age": 42}

    def write_bytes(i: int) -> bytes:
        message = protocol.build_request("set", ("users", f"u{i}"), args=(value,), id=i, client="c", seq=i)
        return protocol.encode_request(message)

    writes = [write_bytes(i) for i in range(1, REQUESTS + 1)]

    def client_read(i: int) -> None:
        protocol.encode_request(protocol.build_request("get", ("users", "u123", "name"), id=i))
        protocol.decode_reply(reply)

    calls = {
        "server handler, small read (parse + answer)": lambda i: handler.handle([read]),
        "server handler, small write (no journal)": lambda i: handler.handle([writes[i]]),
        "client, small read (build + encode + decode)": client_read,
        "client, small write (build + encode)": lambda i: write_bytes(i + 1),
    }
    lines = [f"{'':<46} {'hot':>9} {'cold':>9}"]
    for name, call in calls.items():
        lines.append(f"{name:<46} {per_call_us(call):6.1f} us {cold_call_us(call):6.1f} us")
    title = (
        "--- in-process costs per request (no sockets, no profiler; hot: mean of a tight loop,"
        f" cold: median with {FLUSH_BYTES >> 20} MiB written before each call) ---"
    )
    return "\n".join([title, *lines]) + "\n"


def main() -> int:
    """Profile the small read and the small write."""
    results = _procs.ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    costs = inprocess_costs()
    (results / "profile-inprocess.txt").write_text(costs)
    print(costs)
    with tempfile.TemporaryDirectory(prefix="pyzdb-profile-") as scratch:
        try:
            for workload in ("read", "write"):
                report = profile_workload(Path(scratch), workload)
                (results / f"profile-{workload}.txt").write_text(report)
                print(report)
        finally:
            _procs.stop_all()
    return 0
