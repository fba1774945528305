"""Processes of the benchmark: servers, echo floors, Redis and load-generating clients.

Every process is started with ``subprocess.Popen`` on 127.0.0.1 and free
ports, remembered in :data:`STARTED`, and stopped by its PID (see
:func:`stop_all`).  Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
START_TIMEOUT = 60.0
LOADED = re.compile(r"replayed \d+ journaled writes in ([0-9.]+) s")
STARTED: list[subprocess.Popen] = []
"""Every process this run started, so that nothing outlives it."""


def env() -> dict[str, str]:
    """The environment of child processes: pyzdb importable (not PYDEPS: see ``_setup``), unbuffered."""
    child = dict(os.environ)
    child["PYTHONPATH"] = os.pathsep.join([str(ROOT), child.get("PYTHONPATH", "")])
    child["PYTHONUNBUFFERED"] = "1"
    return child


def free_port_base(count: int = 5) -> int:
    """A base port such that ``base .. base+count-1`` are free on 127.0.0.1 right now."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of ports found")


def spawn(command: list[str], log: Path | None = None, **kwargs) -> subprocess.Popen:
    """Start a process (output to ``log`` if given) and remember it."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env(), **kwargs)
    finally:
        if log:
            out.close()
    STARTED.append(process)
    return process


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signal one process by its PID and reap it (SIGKILL if it outstays ``timeout``)."""
    if process.poll() is None:
        os.kill(process.pid, signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
    if process in STARTED:
        STARTED.remove(process)
    return process.returncode


def stop_all() -> None:
    """Stop every process this run started that is still running."""
    for process in list(STARTED):
        stop(process, signal.SIGKILL, 10)


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from ``/proc/<pid>/status`` (``VmRSS``), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def read_line(process: subprocess.Popen, timeout: float) -> str:
    """The next line a child prints on its stdout pipe, waiting at most ``timeout`` seconds."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"pid {process.pid} printed nothing within {timeout:g} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"pid {process.pid} exited with {process.wait(10)} before answering")
    return line.strip()


# --- servers -------------------------------------------------------------------------


def pyzdb_command(db: Path, port_base: int, *extra: str) -> list[str]:
    """``python -m pyzdb server`` on ``db`` with the given port base."""
    return [sys.executable, "-m", "pyzdb", "server", "--db", str(db), "--port-base", str(port_base), *extra]


def write_uri(port_base: int) -> str:
    """Where clients of a pyzdb server with this port base send requests."""
    return f"tcp://127.0.0.1:{port_base + 1}"


def ping_request() -> bytes:
    """The bytes of a pyzdb ``ping`` request."""
    from pyzdb import protocol

    return protocol.encode_request(protocol.build_request("ping", id=1))


def wait_reply(uri: str, request: bytes, timeout: float = START_TIMEOUT, keys: dict | None = None) -> float:
    """Send ``request`` to ``uri`` (connecting before anything listens) and wait for the reply.

    Returns ``time.monotonic()`` at the reply.  The REQ socket retries its TCP
    connect every 5 ms, so the moment of the reply is within a few ms of the
    moment the server could first answer.
    """
    import zmq

    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    sock.setsockopt(zmq.RECONNECT_IVL, 5)
    if keys:
        from pyzdb.keys import ClientKeys

        ClientKeys.load(keys["server_key"], keys["client_key"]).apply(sock)
    sock.connect(uri)
    try:
        sock.send(request)
        if not sock.poll(timeout * 1000):
            raise RuntimeError(f"no reply from {uri} within {timeout:g} s")
        sock.recv()
        return time.monotonic()
    finally:
        sock.close(linger=0)


@dataclass
class Server:
    """A running pyzdb read-write server."""

    process: subprocess.Popen
    uri: str
    startup_s: float
    """From launching the process to the reply to its first ping."""
    load_s: float | None
    """What the server itself logged for loading the snapshot and replaying the journal."""


PORT_TRIES = 3
"""Starts tried on fresh ports when another process took a free port first (the machine is shared)."""


def start_pyzdb(db: Path, *extra: str, keys: dict | None = None) -> Server:
    """Start a read-write server (logging at -v) and wait until it answers a ping (with ``keys``: CURVE)."""
    for attempt in range(PORT_TRIES):
        base = free_port_base()
        log = db.with_name(f"{db.name}.{base}.log")
        started = time.monotonic()
        process = spawn(pyzdb_command(db, base, "-v", *extra), log)
        uri = write_uri(base)
        try:
            answered = wait_reply(uri, ping_request(), keys=keys)
            break
        except RuntimeError:
            stop(process, signal.SIGKILL)
            printed = log.read_text(errors="replace")
            if "Address already in use" not in printed or attempt == PORT_TRIES - 1:
                raise RuntimeError(f"pyzdb server did not start: {printed[-2000:]}") from None
    found = LOADED.search(log.read_text(errors="replace"))
    return Server(process, uri, answered - started, float(found.group(1)) if found else None)


def start_echo(mode: str) -> tuple[subprocess.Popen, str]:
    """Start an echo floor (``direct`` or ``router``, see ``_echo.py``); return it and its URI."""
    base = free_port_base()
    process = spawn([sys.executable, str(BENCH / "_echo.py"), mode, str(base)])
    uri = f"tcp://127.0.0.1:{base}"
    wait_reply(uri, b"hello", 20.0)
    return process, uri


def start_redis(binary: str, folder: Path, durable: bool) -> tuple[subprocess.Popen, int]:
    """Start ``redis-server`` on a free port: no persistence, or AOF with ``appendfsync always``."""
    port = free_port_base(1)
    folder.mkdir(parents=True, exist_ok=True)
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)]
    process = spawn(command + persistence + ["--daemonize", "no"], folder / "redis.log")
    _wait_redis(process, port)
    return process, port


def _wait_redis(process: subprocess.Popen, port: int) -> None:
    import redis

    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        try:
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()
            return
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not answer within 20 s")


# --- load-generating clients ---------------------------------------------------------


def start_clients(spec: dict, count: int) -> list[subprocess.Popen]:
    """Start ``count`` client processes (``_load.py``) and wait until each says it is ready."""
    clients = []
    for index in range(count):
        command = [sys.executable, str(BENCH / "_load.py"), json.dumps({**spec, "index": index})]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env()
        )
        STARTED.append(process)
        clients.append(process)
    for process in clients:
        if read_line(process, START_TIMEOUT) != "ready":
            raise RuntimeError(f"client {process.pid} did not start")
    return clients


def go(clients: list[subprocess.Popen], seconds: float) -> None:
    """Tell every ready client to run for ``seconds``."""
    for process in clients:
        process.stdin.write(f"go {seconds}\n")
        process.stdin.flush()


def collect(clients: list[subprocess.Popen], timeout: float) -> list[dict]:
    """The JSON result line of every client; each is then reaped."""
    results = []
    for process in clients:
        results.append(json.loads(read_line(process, timeout)))
        process.stdin.close()
        process.wait(10)
        STARTED.remove(process)
    return results


def run_clients(spec: dict, count: int, seconds: float, server_pid: int | None = None) -> dict:
    """Run ``count`` clients doing ``spec`` for ``seconds`` together; aggregate their figures.

    With ``server_pid``, also the server's CPU time per request (all its
    threads, user + system) over the run.
    """
    clients = start_clients(spec, count)
    try:
        cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
        go(clients, seconds)
        results = collect(clients, seconds + 60.0)
        server_cpu = cpu_seconds(server_pid) - cpu_before if server_pid else None
    finally:
        for process in clients:
            if process.poll() is None:
                stop(process, signal.SIGKILL)
    return aggregate(results, server_cpu)


def aggregate(results: list[dict], server_cpu: float | None) -> dict:
    """Requests per second summed over clients, latency percentiles (medians over clients), CPU."""
    requests = sum(r["count"] for r in results)
    return {
        "clients": len(results),
        "requests": requests,
        "rate": sum(r["count"] / r["elapsed"] for r in results),
        "p50_us": statistics.median(r["p50_us"] for r in results),
        "p99_us": statistics.median(r["p99_us"] for r in results),
        "client_cpu_us": sum(r["cpu_s"] for r in results) / requests * 1e6,
        "server_cpu_us": server_cpu / requests * 1e6 if server_cpu is not None else None,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all threads), from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
