"""Two pyzdb trees side by side: 1-client small read and write latency, and server CPU, A against B.

Usage::

    .venv/bin/python benchmarks/side_by_side.py TREE_A TREE_B [BLOCKS] [-- SERVER OPTIONS...]

Each tree (a checkout, e.g. made with ``git worktree add /tmp/a COMMIT``) runs
one read-write server on free 127.0.0.1 ports; one client (TREE_B's) sends
``BLOCKS`` (default 30) alternating blocks of 300 requests to each, so that a
change in the machine's load hits both alike, and prints the median latency
and the server CPU per request of each.  The figures of docs/decisions/0002
and of several commit messages come from it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from _procs import free_port_base

PER_BLOCK = 300
WARMUP = 200


def start(tree: str, options: list[str]):
    """A server of ``tree`` on fresh files, and a connection to it holding 1,000 user records."""
    from pyzdb.client import Connection

    folder, base = tempfile.mkdtemp(), free_port_base(6)
    command = [sys.executable, "-m", "pyzdb", "server", "--db", f"{folder}/db.pkl", "--port-base", str(base)]
    env = dict(os.environ, PYTHONPATH=tree)
    process = subprocess.Popen(
        command + options, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    conn = Connection(f"tcp://127.0.0.1:{base + 1}", timeout=20)
    conn.call("ping")
    conn.db["users"] = {f"u{i}": {"name": f"user{i}", "age": i % 90} for i in range(1000)}
    return process, conn


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


OPS = {
    "read": lambda db, i: db["users"]["u123"]["name"]._run(),
    "write": lambda db, i: db["users"].__setitem__(f"u{i % 1000}", {"name": f"user{i}", "age": i % 90}),
}


def compare(servers: dict, op: str, blocks: int) -> str:
    """One line: both medians, their ratio, and both servers' CPU per request."""
    call = OPS[op]
    latencies = {name: [] for name in servers}
    cpu = dict.fromkeys(servers, 0.0)
    for _process, conn in servers.values():
        for i in range(WARMUP):
            call(conn.db, i)
    for block in range(blocks):
        for name in ("A", "B") if block % 2 == 0 else ("B", "A"):
            process, conn = servers[name]
            before = cpu_seconds(process.pid)
            for i in range(PER_BLOCK):
                started = time.perf_counter()
                call(conn.db, i)
                latencies[name].append(time.perf_counter() - started)
            cpu[name] += cpu_seconds(process.pid) - before
    count = blocks * PER_BLOCK
    a, b = (statistics.median(latencies[n]) * 1e6 for n in ("A", "B"))
    return (
        f"{op}: p50 A {a:.1f} us, B {b:.1f} us, B/A {b / a:.3f}; "
        f"server CPU/req A {cpu['A'] / count * 1e6:.1f} us, B {cpu['B'] / count * 1e6:.1f} us"
    )


def main() -> int:
    """Start both servers, compare, stop them by PID."""
    args, options = sys.argv[1:], []
    if "--" in args:
        args, options = args[: args.index("--")], args[args.index("--") + 1 :]
    tree_a, tree_b = args[:2]
    blocks = int(args[2]) if len(args) > 2 else 30
    sys.path.insert(0, tree_b)
    servers = {}
    try:
        servers["A"] = start(tree_a, options)
        servers["B"] = start(tree_b, options)
        for op in OPS:
            print(compare(servers, op, blocks))
    finally:
        for process, conn in servers.values():
            conn.close()
            process.kill()
            process.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
