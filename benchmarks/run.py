"""pyzdb's benchmark suite (issue 5): one command, one table, one JSON file, one chart.

Run from the project folder::

    make bench                                  # = .venv/bin/python benchmarks/run.py
    .venv/bin/python benchmarks/run.py --quick  # a 1-2 minute smoke run (smaller stores, shorter runs)

It sets up what it needs (Debian's ``redis-server`` and redis-py for the
Redis peer, matplotlib for the chart; ``--no-install`` installs nothing and
skips what is missing), then measures, on 127.0.0.1 and free ports:

1. requests: the raw pyzmq echo floors (direct REQ->REP, and a ROUTER
   read and answered the way pyzdb's request loop does it), pyzdb's ping,
   small read, write, writes with 8 in flight from one DEALER client, atomic
   ``+=``, ``len`` and iteration of a 10k list on a 100k-entry store, and
   Redis GET/SET; latency (median, p99) at 1 client, throughput at 1, 4 and
   16 client processes;
2. durable writes under each ``--fsync`` policy, and Redis SET with
   ``appendfsync always``;
3. stores of 10k, 100k and 1M entries: start-up, resident memory and
   ``save()`` time against the same data in a plain dict, and how long
   ``save()`` blocks a client hammering small reads;
4. time-series collections (``_timeseries.py``): indexed ``select``, ``madd``,
   ``range`` with aggregation against numpy, memory per sample;
5. similarity search (``_similarity.py``): ``similar`` against numpy brute
   force, the share of distances computed, ``insert_ts`` with the index, and
   small reads while ``similar`` runs;
6. aio: one asyncio connection with 64 reads in flight against the sync
   client and redis.asyncio, a batch of 1,000 sets against a Redis pipeline,
   and streaming a 10M-int list against a plain ``_run()`` (benchmarks/_aio.py);
7. replication (``_replication.py``): a replica's lag at 1,000 writes/s, its
   catch-up after a 10 s partition (through ``tests/relay.py``), a full copy
   of a 1M-entry store against copying and loading the snapshot file, and
   the small-read median with request statistics against a server without
   them (``_nostats_server.py``).

It prints the table (stdout; progress goes to stderr), writes
``benchmarks/results/latest.json`` and draws ``docs/performance.png``
(``benchmarks/results/performance-quick.png`` with ``--quick`` or a subset of ``--sections``, or
``--chart PATH``).  docs/performance.md explains every figure.
"""

from __future__ import annotations

import argparse
import array
import bisect
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _aio  # noqa: E402
import _procs  # noqa: E402
import _replication  # noqa: E402
import _report  # noqa: E402
import _setup  # noqa: E402
import _similarity  # noqa: E402
import _stores  # noqa: E402
import _timeseries  # noqa: E402
from _setup import say  # noqa: E402

ROOT = _procs.ROOT
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
CHART = ROOT / "docs" / "performance.png"
QUICK_CHART = ROOT / "benchmarks" / "results" / "performance-quick.png"
"""Where ``--quick`` or a run of some sections draws, so that it never replaces the chart the docs show."""
QUIET_S = 1.0
"""How long the save()-blocking hammer runs before the first save (the no-save baseline)."""


@dataclass
class Config:
    """How much to measure."""

    mode: str
    seconds: float
    """Length of each run with several clients (and of the durable-write runs)."""
    rounds: int
    latency_seconds: float
    """Length of each 1-client run: shorter runs, more rounds, so that noise spreads over all rows."""
    latency_rounds: int
    clients: tuple[int, ...]
    store_entries: int
    sizes: tuple[int, ...]
    startup_runs: int
    saves: int


FULL = Config("full", 2.0, 3, 0.8, 5, (1, 4, 16), 100_000, (10_000, 100_000, 1_000_000), 5, 5)
QUICK = Config("quick", 0.6, 1, 0.4, 2, (1, 4, 16), 100_000, (10_000, 100_000), 1, 3)

WORKLOADS = {
    # name: (target, op, table label, chart label)
    "floor_direct": ("echo_direct", "echo", "echo floor: REQ -> REP direct", "floor direct"),
    "floor_router": ("echo_router", "echo", "echo floor: REQ -> ROUTER like pyzdb's loop", "floor router"),
    "ping": ("pyzdb", "ping", "pyzdb ping", "ping"),
    "read": ("pyzdb", "read", "pyzdb read db['users']['u123']['name']", "read"),
    "read_curve": ("pyzdb_curve", "read", "pyzdb read, server with --curve (CURVE keys)", "read CURVE"),
    "write": ("pyzdb", "write", "pyzdb write db['users'][k] = {...}", "write"),
    "write_window": ("pyzdb", "window", "pyzdb write, 8 in flight per DEALER client", "write x8"),
    "incr": ("pyzdb", "incr", "pyzdb db['counter'] += 1", "+= 1"),
    "len": ("pyzdb", "len", "pyzdb len(db['list']) (10k)", "len 10k"),
    "iter": ("pyzdb", "iter", "pyzdb [v for v in db['list']] (10k)", "iter 10k"),
    "redis_get": ("redis", "redis_get", "redis GET (100k keys)", "Redis GET"),
    "redis_set": ("redis", "redis_set", "redis SET", "Redis SET"),
}


class Bench:
    """One run: its settings, its scratch folder and its results."""

    def __init__(self, config: Config, redis_binary: str | None, scratch: Path) -> None:
        self.config = config
        self.redis = redis_binary
        self.scratch = scratch
        self.results: dict = {"config": asdict(config), "skipped": []}

    def skip(self, why: str) -> None:
        """Record and say that something was not measured."""
        say(f"skipped: {why}")
        self.results["skipped"].append(why)

    def measure(self, spec: dict, clients: int, server_pid: int, seconds: float | None = None) -> dict:
        """One client run against the server with that pid; logs its headline figure."""
        figures = _procs.run_clients(spec, clients, seconds or self.config.seconds, server_pid)
        rate, p50 = figures["rate"], figures["p50_us"]
        say(f"  {spec['op']:<10} {clients:>2} clients: {rate:>9,.0f} req/s, p50 {p50:.0f} us")
        return figures


def median_rounds(rounds: list[dict]) -> dict:
    """The median of every figure over rounds, keeping the rounds themselves."""
    keys = ("rate", "p50_us", "p99_us", "client_cpu_us", "server_cpu_us")
    return {**{k: statistics.median(r[k] for r in rounds) for k in keys}, "rounds": rounds}


def summarize(runs: dict[str, dict[int, list[dict]]], labels: dict[str, tuple[str, str]]) -> dict:
    """``{row: {"label", "short", "by_clients": {n: medians}}}`` from the raw runs."""
    return {
        name: {
            "label": labels[name][0],
            "short": labels[name][1],
            "by_clients": {str(n): median_rounds(r) for n, r in by_clients.items()},
        }
        for name, by_clients in runs.items()
    }


# --- 1. requests ---------------------------------------------------------------------


def request_section(bench: Bench) -> None:
    """Echo floors, pyzdb's workloads and Redis GET/SET, interleaved round by round."""
    say("requests: starting the echo floors, a pyzdb server and Redis")
    store = _stores.write_store(bench.scratch / "requests.pkl", bench.config.store_entries, extras=True)
    targets: dict[str, tuple[str | int, int]] = {}  # target: (address, server pid)
    direct, uri = _procs.start_echo("direct")
    targets["echo_direct"] = (uri, direct.pid)
    router, uri = _procs.start_echo("router")
    targets["echo_router"] = (uri, router.pid)
    server = _procs.start_pyzdb(store)
    targets["pyzdb"] = (server.uri, server.process.pid)
    curve, keys = start_curve_pyzdb(bench, store)
    targets["pyzdb_curve"] = (curve.uri, curve.process.pid)
    redis_proc = start_plain_redis(bench, targets)
    names = [n for n in WORKLOADS if WORKLOADS[n][0] in targets]
    runs: dict[str, dict[int, list[dict]]] = {n: {c: [] for c in bench.config.clients} for n in names}
    try:
        for number, (clients, seconds) in enumerate(passes(bench.config)):
            say(f"requests: pass {number + 1}, {clients} client(s)")
            for name in names:
                target, op = WORKLOADS[name][:2]
                where, pid = targets[target]
                spec = {"op": op, **address(where), **(keys if target == "pyzdb_curve" else {})}
                runs[name][clients].append(bench.measure(spec, clients, pid, seconds))
    finally:
        for process in (direct, router, redis_proc):
            if process is not None:
                _procs.stop(process)
        _procs.stop(server.process)
        _procs.stop(curve.process)
    labels = {n: (WORKLOADS[n][2], WORKLOADS[n][3]) for n in names}
    bench.results["requests"] = summarize(runs, labels)


def start_curve_pyzdb(bench: Bench, store: Path) -> tuple[_procs.Server, dict]:
    """A second server on a copy of ``store``, with ``--curve`` and one read-write key; its client keys."""
    from pyzdb.keys import make_client_keys, make_server_keys

    keydir = bench.scratch / "keys"
    make_server_keys(keydir)
    make_client_keys(keydir, "bench", "rw")
    keys = {
        "server_key": str(keydir / "server.key"),
        "client_key": str(keydir / "private" / "bench.key_secret"),
    }
    copy = store.with_name("requests-curve.pkl")
    shutil.copyfile(store, copy)
    return _procs.start_pyzdb(copy, "--curve", str(keydir), keys=keys), keys


def passes(config: Config) -> list[tuple[int, float]]:
    """``(clients, seconds)`` of each pass over all workloads, 1-client passes spread among the others."""
    single = [(1, config.latency_seconds)] if 1 in config.clients else []
    several = [(clients, config.seconds) for clients in config.clients if clients != 1]
    slots = [
        max(1, round((j + 1) * config.latency_rounds / (config.rounds + 1))) for j in range(config.rounds)
    ]
    order = []
    for number in range(1, config.latency_rounds + 1):
        order += single
        order += several * slots.count(number)
    return order


def address(target: str | int) -> dict:
    """The spec fields that point a client at a target (a URI, or a Redis port)."""
    return {"port": target} if isinstance(target, int) else {"uri": target}


def start_plain_redis(bench: Bench, targets: dict) -> subprocess.Popen | None:
    """Start Redis without persistence, holding the keys the GET reads; None if skipped."""
    if bench.redis is None:
        return None
    import redis

    try:
        process, port = _procs.start_redis(bench.redis, bench.scratch / "redis-plain", durable=False)
    except RuntimeError as exc:
        bench.skip(f"Redis GET/SET ({exc})")
        return None
    client = redis.Redis(host="127.0.0.1", port=port)
    pipe = client.pipeline(transaction=False)
    for i in range(bench.config.store_entries):
        pipe.set(f"u{i}:name", f"user{i}")
    pipe.execute()
    client.close()
    targets["redis"] = (port, process.pid)
    return process


# --- 2. durable writes ---------------------------------------------------------------


def durable_section(bench: Bench) -> None:
    """pyzdb writes under each --fsync policy, and Redis SET with appendfsync always."""
    runs: dict[str, dict[int, list[dict]]] = {}
    labels = {}
    counts = (1, max(bench.config.clients))
    for policy in ("always", "everysec", "no"):
        say(f"durable writes: pyzdb --fsync {policy}")
        store = _stores.write_store(bench.scratch / f"fsync-{policy}.pkl", bench.config.store_entries)
        server = _procs.start_pyzdb(store, "--fsync", policy)
        try:
            spec = {"op": "write", "uri": server.uri}
            runs[f"pyzdb_{policy}"] = rounds_of(bench, spec, counts, server.process.pid)
        finally:
            _procs.stop(server.process)
        labels[f"pyzdb_{policy}"] = (f"pyzdb --fsync {policy}", f"pyzdb {policy}")
    if bench.redis is not None:
        say("durable writes: Redis --appendonly yes --appendfsync always")
        try:
            process, port = _procs.start_redis(bench.redis, bench.scratch / "redis-aof", durable=True)
        except RuntimeError as exc:
            bench.skip(f"Redis appendfsync always ({exc})")
            bench.results["durable"] = summarize(runs, labels)
            return
        try:
            runs["redis_always"] = rounds_of(bench, {"op": "redis_set", "port": port}, counts, process.pid)
        finally:
            _procs.stop(process)
        labels["redis_always"] = ("redis appendfsync always", "Redis always")
    bench.results["durable"] = summarize(runs, labels)


def rounds_of(bench: Bench, spec: dict, counts: tuple[int, ...], pid: int) -> dict[int, list[dict]]:
    """``bench.config.rounds`` runs of ``spec`` at each client count, against the server ``pid``."""
    runs: dict[int, list[dict]] = {c: [] for c in counts}
    for _ in range(bench.config.rounds):
        for clients in counts:
            runs[clients].append(bench.measure(spec, clients, pid))
    return runs


# --- 3. stores: start-up, memory, save() ----------------------------------------------


def store_section(bench: Bench) -> None:
    """Start-up, memory and save() for each store size, against a plain dict."""
    empty = _procs.start_pyzdb(bench.scratch / "empty.pkl")
    time.sleep(0.3)
    empty_kb = _procs.rss_kb(empty.process.pid)
    _procs.stop(empty.process)
    python_kb = holder("-")[0]["rss_kb"]
    bench.results["baselines"] = {
        "pyzdb_empty_rss_mb": empty_kb / 1024,
        "python_empty_rss_mb": python_kb / 1024,
    }
    stores = {}
    for entries in bench.config.sizes:
        say(f"stores: {entries:,} entries")
        stores[str(entries)] = measure_store(bench, entries, empty_kb, python_kb)
    bench.results["stores"] = stores


def measure_store(bench: Bench, entries: int, empty_kb: int, python_kb: int) -> dict:
    """Every figure for one store size."""
    path = _stores.write_store(bench.scratch / f"store-{entries}.pkl", entries)
    runs = max(1, bench.config.startup_runs)
    startups, loads = [], []
    for run in range(runs):
        server = _procs.start_pyzdb(path)
        startups.append(server.startup_s)
        loads.append(server.load_s)
        if run < runs - 1:
            _procs.stop(server.process, signal.SIGKILL)
    try:
        time.sleep(0.3)
        rss = _procs.rss_kb(server.process.pid)
        blocking = save_blocking(bench, server.uri, bench.config.saves)
    finally:
        _procs.stop(server.process, signal.SIGKILL)
    plain = [holder(str(path), str(bench.scratch / "dict-save.pkl")) for _ in range(runs)]
    dict_kb = statistics.median(p[0]["rss_kb"] for p in plain)
    return {
        "startup_s": statistics.median(startups),
        "startup_runs": startups,
        "load_s": statistics.median(loads) if None not in loads else None,
        "rss_mb": rss / 1024,
        "rss_net_mb": (rss - empty_kb) / 1024,
        "dict_startup_s": statistics.median(p[0]["startup_s"] for p in plain),
        "dict_rss_mb": dict_kb / 1024,
        "dict_rss_net_mb": (dict_kb - python_kb) / 1024,
        "dict_save_s": statistics.median(p[1]["save_s"] for p in plain),
        **blocking,
    }


def holder(snapshot: str, save_to: str | None = None) -> list[dict]:
    """Run ``_holder.py``: the plain-dict reference; its JSON lines, the first with ``startup_s``."""
    command = [sys.executable, str(_procs.BENCH / "_holder.py"), snapshot, *([save_to] if save_to else [])]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=_procs.env())
    _procs.STARTED.append(process)
    try:
        lines = [json.loads(_procs.read_line(process, 120.0))]
        lines[0]["startup_s"] = time.monotonic() - started
        if save_to:
            lines.append(json.loads(_procs.read_line(process, 120.0)))
    finally:
        _procs.stop(process, signal.SIGKILL, 10)
    return lines


def save_blocking(bench: Bench, uri: str, saves: int) -> dict:
    """Time ``saves`` save() calls while another client hammers small reads; the longest reply gaps."""
    from pyzdb.client import Connection

    stamps_file = bench.scratch / "hammer.bin"
    hammer = _procs.start_clients({"op": "read", "uri": uri, "hammer": str(stamps_file)}, 1)
    _procs.go(hammer, 0)
    started = time.monotonic()
    time.sleep(QUIET_S)
    windows = []
    with Connection(uri, timeout=300.0) as conn:
        for _ in range(saves):
            before = time.monotonic()
            conn.db.save()
            windows.append((before, time.monotonic()))
            time.sleep(0.3)
    os.kill(hammer[0].pid, signal.SIGUSR1)
    _procs.collect(hammer, 60.0)
    stamps = array.array("d")
    stamps.frombytes(stamps_file.read_bytes())
    gaps = [longest_gap(stamps, a, b) for a, b in windows]
    return {
        "save_s": statistics.median(b - a for a, b in windows),
        "save_runs_s": [b - a for a, b in windows],
        "save_block_ms": statistics.median(gaps) * 1000,
        "save_block_runs_ms": [g * 1000 for g in gaps],
        "quiet_gap_ms": longest_gap(stamps, started + 0.2, started + QUIET_S) * 1000,
        "hammer_replies": len(stamps),
    }


def longest_gap(stamps: array.array, start: float, end: float) -> float:
    """The longest interval between consecutive replies that overlaps ``[start, end]``."""
    first = max(0, bisect.bisect_left(stamps, start) - 1)
    last = min(len(stamps) - 1, bisect.bisect_right(stamps, end))
    return max((stamps[i + 1] - stamps[i] for i in range(first, last)), default=0.0)


# --- the run -------------------------------------------------------------------------


def machine() -> dict:
    """What the numbers were measured on."""
    import zmq

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), "?")
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": memory,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "commit": git_commit(),
        "load_before": os.getloadavg()[0],
    }


def git_commit() -> str:
    """The project's commit, with ``+changes`` if the work tree differs from it (``?`` without git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "pyzdb"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if head.returncode != 0:
        return "?"
    return head.stdout.strip() + (" +changes in pyzdb/" if status.stdout.strip() else "")


# --- 4. the asyncio client, batches, streaming (issue 13) -------------------------------


def aio_section(bench: Bench) -> None:
    """One async connection against the sync client and redis.asyncio, batches, streaming."""
    say("aio: starting a pyzdb server and Redis")
    server = _procs.start_pyzdb(bench.scratch / "aio.pkl")
    targets: dict = {}
    redis_proc = start_plain_redis(bench, targets)
    quick = bench.config.mode == "quick"
    try:
        redis_port = targets["redis"][0] if "redis" in targets else None
        bench.results["aio"] = _aio.run(
            server.uri,
            redis_port,
            bench.config.rounds,
            bench.config.seconds,
            1_000_000 if quick else 10_000_000,
        )
    finally:
        if redis_proc is not None:
            _procs.stop(redis_proc)
        _procs.stop(server.process)


SECTIONS = {
    "requests": request_section,
    "durable": durable_section,
    "stores": store_section,
    "timeseries": _timeseries.timeseries_section,
    "aio": aio_section,
    "similarity": _similarity.similarity_section,
    "replication": _replication.replication_section,
}


def run_section(bench: Bench, name: str) -> None:
    """Run one section; a process that fails to start or answer skips the section, not the run."""
    try:
        SECTIONS[name](bench)
    except RuntimeError as exc:
        bench.skip(f"section {name} ({exc})")
    finally:
        _procs.stop_all()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run (smaller, shorter)")
    parser.add_argument("--no-install", action="store_true", help="install nothing; skip what is missing")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis peer")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated subset of: %(default)s"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON (default: %(default)s)")
    parser.add_argument(
        "--chart",
        type=Path,
        help=f"chart PNG (default: {CHART}, or {QUICK_CHART} with --quick or --sections)",
    )
    parser.add_argument("--profile", action="store_true", help="profile pyzdb's small read and write instead")
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")
    return args


def setup(args: argparse.Namespace, bench_skip: list[str]) -> tuple[str | None, bool]:
    """Install or find Redis and matplotlib; return the redis-server path and whether to chart."""
    redis_binary = None
    if args.no_redis:
        bench_skip.append("Redis peer (--no-redis)")
    else:
        redis_binary, why = _setup.redis(not args.no_install)
        if redis_binary is None:
            bench_skip.append(f"Redis peer ({why})")
    can_chart = _setup.python_package("matplotlib", "matplotlib", not args.no_install)
    if not can_chart:
        bench_skip.append("chart (matplotlib not available)")
    return redis_binary, can_chart


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, print, save."""
    args = parse_args(argv)
    if args.profile:
        import _profile

        return _profile.main()
    started = time.monotonic()
    skipped: list[str] = []
    redis_binary, can_chart = setup(args, skipped)
    scratch = Path(tempfile.mkdtemp(prefix="pyzdb-bench-"))
    bench = Bench(QUICK if args.quick else FULL, redis_binary, scratch)
    bench.results["skipped"] = skipped
    bench.results["meta"] = machine()
    if redis_binary:
        bench.results["meta"]["redis"] = _setup.redis_version(redis_binary)
    try:
        for name in args.sections:
            run_section(bench, name)
    finally:
        _procs.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)
    finish(bench.results, args, can_chart, time.monotonic() - started)
    return 0


def finish(results: dict, args: argparse.Namespace, can_chart: bool, wall: float) -> None:
    """Targets, JSON, chart, table."""
    results["meta"]["load_after"] = os.getloadavg()[0]
    results["meta"]["wall_s"] = wall
    results["targets"] = (
        _report.targets(results)
        + _timeseries.targets(results)
        + _similarity.targets(results)
        + _replication.targets(results)
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    say(f"results written to {args.output}")
    if can_chart:
        partial = args.quick or set(args.sections) != set(SECTIONS)
        chart = args.chart or (QUICK_CHART if partial else CHART)
        chart.parent.mkdir(parents=True, exist_ok=True)
        _report.chart(results, chart)
        say(f"chart written to {chart}")
    print(_report.table(results))


if __name__ == "__main__":
    sys.exit(main())
