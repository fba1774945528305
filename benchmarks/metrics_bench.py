"""Puts per second through the metrics gateway, against an in-memory reference server.

Run from the project folder::

    .venv/bin/python benchmarks/metrics_bench.py [--runs 5] [--puts 400] [--pipelined-puts 4000]

It starts, on free ports of 127.0.0.1, a pyzdb server (fresh store in a
temporary folder), the gateway (``python -m pyzdb.metrics``) and the
reference: a minimal asyncio server that keeps metrics in a dict (below, the
design most text-protocol metric servers start from).  Four concurrent
connections then send puts to each, in two ways:

- one at a time: each connection waits for ``ok`` before the next put (as
  ``Client.put`` does);
- pipelined: each connection sends 100 puts at once, then reads the 100 replies.

Each figure is the median of ``--runs`` runs; the ratio is gateway / reference.
Everything started is stopped (by PID) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import _procs  # benchmarks/ is on sys.path when this file runs as a script

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 4
WINDOW = 100
START_TIMEOUT = 15.0


# --- the reference: metrics in a dict ----------------------------------------------


class ReferenceProtocol(asyncio.Protocol):
    """The reference design: parse lines, keep ``{key: {timestamp: value}}`` in memory."""

    metrics: dict[str, dict[int, float]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport."""
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        """Answer every complete line."""
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        self.transport.write(b"".join(self.answer(line.decode()) for line in lines))

    def answer(self, line: str) -> bytes:
        """The reply to one request line."""
        fields = line.split(" ")
        try:
            if fields[0] == "put" and len(fields) == 4:
                self.metrics.setdefault(fields[1], {})[int(fields[3])] = float(fields[2])
                return b"ok\n\n"
            if fields[0] == "get" and len(fields) == 2:
                keys = self.metrics if fields[1] == "*" else [fields[1]]
                points = [
                    f"{key} {value} {ts}\n"
                    for key in keys
                    for ts, value in sorted(self.metrics.get(key, {}).items())
                ]
                return ("ok\n" + "".join(points) + "\n").encode()
        except ValueError:
            pass
        return b"error\nwrong command\n\n"


async def serve_reference(port: int) -> None:
    """Run the reference server until SIGTERM."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    server = await loop.create_server(ReferenceProtocol, "127.0.0.1", port)
    await stopped.wait()
    server.close()


# --- the load ----------------------------------------------------------------------


async def one_at_a_time(port: int, key: str, first: int, count: int) -> None:
    """Send ``count`` puts on one connection, each after the previous ``ok``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for ts in range(first, first + count):
        writer.write(b"put %s %d.5 %d\n" % (key.encode(), ts % 1000, ts))
        if await reader.readexactly(4) != b"ok\n\n":
            raise RuntimeError(f"unexpected reply on port {port}")
    writer.close()


async def pipelined(port: int, key: str, first: int, count: int) -> None:
    """Send ``count`` puts on one connection, ``WINDOW`` at a time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for start in range(first, first + count, WINDOW):
        stamps = range(start, min(start + WINDOW, first + count))
        writer.write(b"".join(b"put %s %d.5 %d\n" % (key.encode(), ts % 1000, ts) for ts in stamps))
        if await reader.readexactly(4 * len(stamps)) != b"ok\n\n" * len(stamps):
            raise RuntimeError(f"unexpected reply on port {port}")
    writer.close()


async def puts_per_second(port: int, mode: Callable[..., Awaitable[None]], count: int, first: int) -> float:
    """Run ``CONNECTIONS`` concurrent connections of ``count`` puts each; return puts/s."""
    started = time.perf_counter()
    await asyncio.gather(*(mode(port, f"bench.c{n}", first, count) for n in range(CONNECTIONS)))
    return CONNECTIONS * count / (time.perf_counter() - started)


# --- processes ---------------------------------------------------------------------


def start(args: list[str], log: Path) -> subprocess.Popen:
    """Start a Python process of this project, output to ``log``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_listening(process: subprocess.Popen, port: int) -> None:
    """Block until ``port`` accepts connections (bounded)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{process.args} did not listen on {port}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM by PID, SIGKILL if it does not exit in time."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


# --- main --------------------------------------------------------------------------


def measure(gateway_port: int, reference_port: int, args: argparse.Namespace) -> None:
    """Print the median puts/s of each target and mode, and the ratios."""
    modes = [("one at a time", one_at_a_time, args.puts), ("pipelined", pipelined, args.pipelined_puts)]
    first = 0
    for label, mode, count in modes:
        figures: dict[str, list[float]] = {"gateway": [], "reference": []}
        for _ in range(args.runs):
            for name, port in (("gateway", gateway_port), ("reference", reference_port)):
                figures[name].append(asyncio.run(puts_per_second(port, mode, count, first)))
            first += count
        gateway, reference = (statistics.median(figures[name]) for name in ("gateway", "reference"))
        print(
            f"{label:>14}: gateway {gateway:9.0f} puts/s   reference {reference:9.0f} puts/s   "
            f"ratio {gateway / reference:.3f}   ({CONNECTIONS} connections x {count} puts, "
            f"median of {args.runs})"
        )


def main() -> int:
    """Start everything, measure, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default: %(default)s)")
    parser.add_argument("--puts", type=int, default=400, help="puts per connection, one at a time")
    parser.add_argument("--pipelined-puts", type=int, default=4000, help="puts per connection, pipelined")
    parser.add_argument("--reference-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_server:
        asyncio.run(serve_reference(args.reference_server))
        return 0
    folder = Path(tempfile.mkdtemp(prefix="pyzdb-metrics-bench-"))
    base, gateway_port = _procs.free_port_base(5), _procs.free_port_base(2)
    reference_port = gateway_port + 1
    write_uri = f"tcp://127.0.0.1:{base + 1}"
    processes = []
    try:
        server_args = ["-m", "pyzdb", "server", "--db", str(folder / "db.pkl"), "--port-base", str(base)]
        processes.append(start(server_args, folder / "server.log"))
        wait_listening(processes[-1], base + 1)
        gateway_args = ["-m", "pyzdb.metrics", "--port", str(gateway_port), "--db", write_uri]
        processes.append(start(gateway_args, folder / "gateway.log"))
        wait_listening(processes[-1], gateway_port)
        processes.append(start([__file__, "--reference-server", str(reference_port)], folder / "ref.log"))
        wait_listening(processes[-1], reference_port)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; pyzdb server, gateway, reference")
        measure(gateway_port, reference_port, args)
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
