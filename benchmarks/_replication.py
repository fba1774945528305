"""The ``replication`` section of ``make bench``: replicas fed over ZeroMQ and the cost of statistics.

Every process runs on 127.0.0.1 on free ports, each replica in a store
folder of its own, and is stopped by its PID; every wait is bounded.

1. **Lag at 1,000 writes/s**: a client process (``_pacer.py``) sets
   ``db["t"] = i`` on the writer on a fixed schedule of 1,000 writes/s for
   ``lag_s`` seconds and notes when each write is acknowledged; this process
   polls the replica's ``--read-bind`` address for ``t`` (every
   ``POLL_INTERVAL_S``) and notes when each value appears.  Write ``i`` is
   visible once a poll reads ``t >= i`` (records apply in order); its lag is
   that reply's time minus the acknowledgement.  p50 and p99 in ms.
2. **Catch-up after a partition**: a second replica reaches the writer
   through ``tests/relay.py``'s ``Relay``; while the pacer writes at
   1,000/s the relay is stalled for ``stall_s`` seconds, then healed, and the
   replica's ``stats()`` are polled until its position reaches the writer's:
   records behind at the heal, seconds from the heal until caught up, and
   records applied per second over that time.
3. **Full copy**: a writer on a store of ``copy_entries`` users (each run a
   fresh writer, so that no cached copy is reused) and a fresh replica; the
   time from launching the replica until its log says ``loaded a full copy``,
   against ``shutil.copyfile`` of the writer's snapshot plus ``pickle.load``
   of it in a fresh process (``_holder.py``, as the stores section measures
   plain loads).  The phases come from both logs' timestamps.
4. **Cost of statistics**: the small read ``db["users"]["u123"]["name"]``
   on two normal writers and on two started through ``_nostats_server.py``
   (``Handler.answer`` without its clock reads, ``stats.observe`` and slowlog
   check), in alternating blocks of ``PER_BLOCK`` requests as in
   ``side_by_side.py`` (the two of a kind against each other show the
   method's noise); and ``RequestStats.observe`` plus two
   ``time.perf_counter_ns()`` calls under ``timeit``.
"""

from __future__ import annotations

import bisect
import json
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
import timeit
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import _procs
import _report
import _stores
from _setup import say

from pyzdb.client import Connection
from pyzdb.server.stats import RequestStats

sys.path.insert(0, str(_procs.ROOT / "tests"))
from relay import Relay  # noqa: E402

RATE = 1000.0
"""Writes per second of the lag and catch-up runs."""
POLL_INTERVAL_S = 0.0005
"""Pause between two polls of the replica in the lag run (a busy poll would take a core from it)."""
STATS_POLL_S = 0.02
"""Pause between two ``stats()`` polls of the replica while it catches up."""
CATCH_UP_LIMIT_S = 120.0
PER_BLOCK = 300
WARMUP = 200
LAG_TARGET_MS = 50.0
COPY_TARGET = 2.0
STATS_TARGET = 1.03
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


@dataclass
class Sizes:
    """How much the section measures (full or ``--quick``)."""

    lag_s: float
    stall_s: float
    copy_entries: int
    copy_runs: int
    blocks: int
    """Alternating blocks of small reads per server in the stats-cost figure."""


FULL = Sizes(10.0, 10.0, 1_000_000, 2, 40)
QUICK = Sizes(3.0, 3.0, 100_000, 1, 10)


# --- processes -----------------------------------------------------------------------


@dataclass
class Replica:
    """A running replica process and where it answers reads directly."""

    process: subprocess.Popen
    uri: str
    log: Path
    launched: float
    """``time.time()`` at the launch, to compare with the log's timestamps."""


def port_base(server: _procs.Server) -> int:
    """The ``--port-base`` of a server started by ``_procs.start_pyzdb``."""
    return int(server.uri.rsplit(":", 1)[1]) - 1


def start_replica(folder: Path, writer: _procs.Server, primary: str | None = None) -> Replica:
    """Launch a replica of ``writer`` keeping its files in ``folder`` (it does not wait for it)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = port_base(writer)
    uri = f"tcp://127.0.0.1:{_procs.free_port_base(1)}"
    command = [
        *_procs.pyzdb_command(folder / "replica.pkl", base, "-v", "-ro"),
        *("--primary", primary or f"tcp://127.0.0.1:{base + 5}", "--read-bind", uri),
    ]
    log = folder / "replica.log"
    launched = time.time()
    return Replica(_procs.spawn(command, log), uri, log, launched)


def replication_stats(uri: str, timeout: float = 60.0) -> dict:
    """The ``replication`` section of the ``stats()`` of the server at ``uri``."""
    with Connection(uri, timeout=timeout) as conn:
        return conn.db.stats()["replication"]


def wait_caught_up(replica: Replica, writer_uri: str, timeout: float = 120.0) -> None:
    """Wait until the replica holds a copy and every record the writer has now."""
    wanted = replication_stats(writer_uri)["position"]["count"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise RuntimeError(f"replica exited with {replica.process.returncode}: {tail(replica.log)}")
        seen = replication_stats(replica.uri)
        if seen["copies_received"] >= 1 and seen["position"]["count"] >= wanted:
            return
        time.sleep(0.05)
    raise RuntimeError(f"replica not caught up within {timeout:g} s: {tail(replica.log)}")


def tail(log: Path) -> str:
    """The end of a log, for an error message."""
    return log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"


def start_pacer(writer_uri: str, max_seconds: float) -> subprocess.Popen:
    """A ``_pacer.py`` client, connected and ready for ``go``."""
    command = [sys.executable, str(_procs.BENCH / "_pacer.py"), writer_uri, str(RATE), str(max_seconds)]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_procs.env()
    )
    _procs.STARTED.append(process)
    if _procs.read_line(process, _procs.START_TIMEOUT) != "ready":
        raise RuntimeError("pacer did not start")
    return process


def tell(process: subprocess.Popen, line: str) -> None:
    """Send one line to a child's stdin."""
    process.stdin.write(line + "\n")
    process.stdin.flush()


def pacer_result(process: subprocess.Popen) -> dict:
    """The pacer's JSON line (after ``stop``), the process reaped."""
    result = json.loads(_procs.read_line(process, 30.0))
    _procs.stop(process)
    return result


# --- 1. lag --------------------------------------------------------------------------


def poll_until(uri: str, pacer: subprocess.Popen, seconds: float) -> tuple[list[tuple[float, int]], dict]:
    """Poll ``t`` on the replica while the pacer writes for ``seconds``, then until its last write shows.

    Returns the ``(reply time, value)`` of every poll that saw a new value,
    and the pacer's result.
    """
    changes: list[tuple[float, int]] = []
    result: dict | None = None
    last = None
    stop_at = time.monotonic() + seconds
    deadline = stop_at + 30.0
    tell(pacer, "go")
    with Connection(uri, timeout=10.0) as conn:
        ref = conn.db["t"]
        while time.monotonic() < deadline:
            value = ref._run()
            if value != last:
                changes.append((time.monotonic(), value))
                last = value
            if result is None and stop_at is not None and time.monotonic() >= stop_at:
                tell(pacer, "stop")
                stop_at = None
            if result is None and stop_at is None and select.select([pacer.stdout], [], [], 0)[0]:
                result = pacer_result(pacer)
            if result is not None and last >= len(result["acks"]) - 1:
                return changes, result
            time.sleep(POLL_INTERVAL_S)
    raise RuntimeError("the replica did not show the last write within 30 s")


def lags_ms(acks: list[float], changes: list[tuple[float, int]]) -> list[float]:
    """For each write, ms from its acknowledgement to the first poll that saw it (or a later one)."""
    values = [value for _, value in changes]
    lags = []
    for i, acked in enumerate(acks):
        seen = changes[bisect.bisect_left(values, i)][0]
        lags.append((seen - acked) * 1000)
    return lags


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def measure_lag(writer: _procs.Server, folder: Path, seconds: float) -> dict:
    """Figure 1: the lag of one replica at 1,000 writes/s."""
    replica = start_replica(folder, writer)
    try:
        wait_caught_up(replica, writer.uri)
        pacer = start_pacer(writer.uri, seconds + 30.0)
        changes, result = poll_until(replica.uri, pacer, seconds)
    finally:
        _procs.stop(replica.process, signal.SIGKILL)
    lags = lags_ms(result["acks"], changes)
    elapsed = result["acks"][-1] - result["acks"][0]
    return {
        "writes": len(lags),
        "rate": (len(lags) - 1) / elapsed if elapsed else None,
        "late_writes": result["late"],
        "p50_ms": percentile(lags, 0.5),
        "p99_ms": percentile(lags, 0.99),
        "max_ms": max(lags),
        "seen_before_ack": sum(1 for lag in lags if lag < 0),
        "polls_with_new_value": len(changes),
    }


# --- 2. catch-up after a partition ---------------------------------------------------


def sample(uri: str) -> tuple[float, float, dict]:
    """``(sent, answered, replication stats)`` of one ``stats()`` poll."""
    sent = time.monotonic()
    stats = replication_stats(uri, 10.0)
    return sent, time.monotonic(), stats


def samples_until(uri: str, count: int, limit_s: float) -> list[tuple[float, float, dict]]:
    """Poll a replica's stats until its position reaches ``count`` (and half a second more)."""
    found = []
    deadline = time.monotonic() + limit_s
    reached = None
    while time.monotonic() < deadline and (reached is None or time.monotonic() < reached + 0.5):
        found.append(sample(uri))
        if reached is None and found[-1][2]["position"]["count"] >= count:
            reached = time.monotonic()
        time.sleep(STATS_POLL_S)
    if reached is None:
        raise RuntimeError(f"replica did not reach record {count} within {limit_s:g} s")
    return found


def writer_count_at(result: dict, moment: float) -> int:
    """The writer's record count after the last write acknowledged before ``moment``."""
    index = bisect.bisect_right(result["acks"], moment) - 1
    return result["counts"][index] if index >= 0 else result["counts"][0] - 1


def partition(replica: Replica, relay: Relay, writer_uri: str, stall_s: float) -> tuple[dict, list, float]:
    """Stall the link for ``stall_s`` while writing, heal it; the stats at the heal, the polls after."""
    time.sleep(1.0)  # writes flowing before the stall
    relay.stalled.set()
    time.sleep(stall_s)
    before = sample(replica.uri)[2]
    heal = time.monotonic()
    relay.stalled.clear()
    target = replication_stats(writer_uri)["position"]["count"]
    return before, samples_until(replica.uri, target, CATCH_UP_LIMIT_S), heal


def measure_catch_up(writer: _procs.Server, folder: Path, stall_s: float) -> dict:
    """Figure 2: records behind after a stall at 1,000 writes/s, and how fast they are applied."""
    relay = Relay(port_base(writer) + 5)
    replica = start_replica(folder, writer, primary=f"tcp://127.0.0.1:{relay.port}")
    try:
        wait_caught_up(replica, writer.uri)
        pacer = start_pacer(writer.uri, stall_s + CATCH_UP_LIMIT_S + 10.0)
        tell(pacer, "go")
        before, polls, heal = partition(replica, relay, writer.uri, stall_s)
        tell(pacer, "stop")
        result = pacer_result(pacer)
    finally:
        _procs.stop(replica.process, signal.SIGKILL)
        relay.close()
    return {"stall_s": stall_s, **catch_up_figures(before, polls, heal, result)}


def catch_up_figures(before: dict, polls: list, heal: float, result: dict) -> dict:
    """Records behind at the heal, when the replica moved and caught up, and its apply rate."""
    at_heal = before["position"]["count"]
    behind = writer_count_at(result, heal) - at_heal
    moved = next((p for p in polls if p[2]["position"]["count"] > at_heal), None)
    caught = next(p for p in polls if p[2]["position"]["count"] >= writer_count_at(result, p[0]))
    applied = caught[2]["records_applied"] - before["records_applied"]
    return {
        "behind_records": behind,
        "resume_s": moved[1] - heal if moved else None,
        "catch_up_s": caught[1] - heal,
        "applied_records": applied,
        # over the whole time from the heal (the link resuming included): the polls are too
        # coarse to time the applying alone, which often ends before the first poll's reply
        "apply_rate": applied / (caught[1] - heal),
        "copies_during": caught[2]["copies_received"] - before["copies_received"],
        "link_at_heal": before["link"],
    }


# --- 3. full copy --------------------------------------------------------------------


def log_time(line: str) -> float:
    """``time.time()`` of a log line written with pyzdb's format."""
    return datetime.strptime(line[:23], LOG_TIME).timestamp()


def first_line(log: Path, text: str) -> str | None:
    """The first line of ``log`` that contains ``text``."""
    if not log.exists():
        return None
    return next((ln for ln in log.read_text(errors="replace").splitlines() if text in ln), None)


def wait_line(replica: Replica, text: str, timeout: float) -> float:
    """Poll the replica's log until a line has ``text``; ``time.time()`` when it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if first_line(replica.log, text) is not None:
            return time.time()
        if replica.process.poll() is not None:
            raise RuntimeError(f"replica exited with {replica.process.returncode}: {tail(replica.log)}")
        time.sleep(0.01)
    raise RuntimeError(f"no {text!r} from the replica within {timeout:g} s")


def copy_phases(replica: Replica, writer_log: Path) -> dict:
    """Seconds of each phase of a full copy, from the timestamps of both logs."""

    def at(log: Path, text: str) -> float:
        line = first_line(log, text)
        return log_time(line) if line else float("nan")

    loaded = first_line(replica.log, "loaded a full copy")
    adopt_s = float(loaded.rsplit(" in ", 1)[1].split()[0])
    encoded = first_line(writer_log, "encoded a full copy")
    encode_s = float(encoded.rsplit(" in ", 1)[1].split()[0]) if encoded else float("nan")
    asked = at(writer_log, "needs a full copy")
    receiving = at(replica.log, "receiving a full copy")
    return {
        "start_to_hello_s": asked - replica.launched,
        "encode_s": encode_s,
        "hello_to_first_chunk_s": receiving - asked,
        "transfer_and_decode_s": log_time(loaded) - adopt_s - receiving,
        "adopt_and_save_s": adopt_s,
        "copy_bytes": int(first_line(replica.log, "receiving a full copy").split(" of ")[1].split()[0]),
    }


def replica_copy_s(writer: _procs.Server, writer_log: Path, folder: Path) -> dict:
    """Launch a fresh replica; seconds until it has loaded its full copy, and the phases."""
    replica = start_replica(folder, writer)
    try:
        seen = wait_line(replica, "loaded a full copy", 600.0)
    finally:
        _procs.stop(replica.process, signal.SIGKILL)
    return {"copy_s": seen - replica.launched, **copy_phases(replica, writer_log)}


def plain_copy_and_load_s(snapshot: Path, scratch: Path) -> dict:
    """``shutil.copyfile`` of the snapshot, and ``pickle.load`` of it in a fresh process (``_holder.py``)."""
    target = scratch / "copied.pkl"
    started = time.monotonic()
    shutil.copyfile(snapshot, target)
    copied = time.monotonic() - started
    command = [sys.executable, str(_procs.BENCH / "_holder.py"), str(target)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=_procs.env())
    _procs.STARTED.append(process)
    try:
        json.loads(_procs.read_line(process, 300.0))
        loaded = time.monotonic() - started
    finally:
        _procs.stop(process, signal.SIGKILL, 10)
        target.unlink()
    return {"file_copy_s": copied, "load_s": loaded}


def measure_full_copy(scratch: Path, entries: int, runs: int) -> dict:
    """Figure 3: a fresh replica's full copy against copying and loading the snapshot, ``runs`` times."""
    snapshot = _stores.write_store(scratch / f"copy-{entries}.pkl", entries)
    rounds = []
    for run in range(runs):
        writer = _procs.start_pyzdb(snapshot)
        writer_log = snapshot.with_name(f"{snapshot.name}.{port_base(writer)}.log")
        try:
            replica = replica_copy_s(writer, writer_log, scratch / f"copy-replica-{run}")
        finally:
            _procs.stop(writer.process, signal.SIGKILL)
        plain = plain_copy_and_load_s(snapshot, scratch)
        rounds.append({**replica, **plain, "baseline_s": plain["file_copy_s"] + plain["load_s"]})
        last = rounds[-1]
        say(f"  full copy of {entries:,}: {last['copy_s']:.2f} s, plain {last['baseline_s']:.2f} s")
    figures = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    return {**figures, "entries": entries, "snapshot_bytes": snapshot.stat().st_size, "rounds": rounds}


# --- 4. the cost of statistics -------------------------------------------------------


def start_nostats(db: Path) -> _procs.Server:
    """A writer started through ``_nostats_server.py``, answering pings."""
    base = _procs.free_port_base(6)
    command = [sys.executable, str(_procs.BENCH / "_nostats_server.py"), "--db", str(db), "-v"]
    started = time.monotonic()
    process = _procs.spawn([*command, "--port-base", str(base)], db.with_name(f"{db.name}.log"))
    uri = _procs.write_uri(base)
    answered = _procs.wait_reply(uri, _procs.ping_request())
    return _procs.Server(process, uri, answered - started, None)


def alternate_reads(conns: dict[str, Connection], blocks: int) -> dict[str, float]:
    """The median small-read latency (us) on each connection, over alternating blocks of requests."""
    latencies: dict[str, list[float]] = {name: [] for name in conns}
    names = list(conns)
    for conn in conns.values():
        for _ in range(WARMUP):
            conn.db["users"]["u123"]["name"]._run()
    for block in range(blocks):
        for name in names if block % 2 == 0 else reversed(names):
            ref = conns[name].db["users"]["u123"]["name"]
            times = latencies[name]
            for _ in range(PER_BLOCK):
                started = time.perf_counter()
                ref._run()
                times.append(time.perf_counter() - started)
    return {name: statistics.median(times) * 1e6 for name, times in latencies.items()}


def observe_cost_ns() -> float:
    """Nanoseconds of ``RequestStats.observe`` plus two ``perf_counter_ns()`` calls (best of 5)."""
    stats = RequestStats()
    names = {"clock": time.perf_counter_ns, "observe": stats.observe}
    timer = timeit.Timer("s = clock(); observe('get', False, clock() - s)", globals=names)
    number = 200_000
    return min(timer.repeat(5, number)) / number * 1e9


STATS_SERVERS = ("on-a", "off-a", "on-b", "off-b")
"""Two servers of each kind: the two of a kind against each other show the method's own noise."""


def start_stats_server(folder: Path) -> _procs.Server:
    """A normal writer (``on-*``) or one without statistics (``off-*``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if folder.name.startswith("on"):
        return _procs.start_pyzdb(folder / "db.pkl")
    return start_nostats(folder / "db.pkl")


def measure_stats_cost(scratch: Path, blocks: int) -> dict:
    """Figure 4: small-read p50 with statistics against writers without them, and observe's cost."""
    servers = {name: start_stats_server(scratch / f"stats-{name}") for name in STATS_SERVERS}
    conns = {name: Connection(server.uri, timeout=20) for name, server in servers.items()}
    try:
        for conn in conns.values():
            conn.db["users"] = _stores.users(1000)
        medians = alternate_reads(conns, blocks)
    finally:
        for conn in conns.values():
            conn.close()
        for server in servers.values():
            _procs.stop(server.process)
    on = statistics.mean([medians["on-a"], medians["on-b"]])
    off = statistics.mean([medians["off-a"], medians["off-b"]])
    cost = observe_cost_ns()
    return {
        "read_p50_us": on,
        "read_p50_nostats_us": off,
        "ratio": on / off,
        "same_kind_ratios": [medians["on-a"] / medians["on-b"], medians["off-a"] / medians["off-b"]],
        "medians_us": medians,
        "observe_ns": cost,
        "observe_share": cost / 1000 / on,
        "requests_each": blocks * PER_BLOCK,
    }


# --- the section ---------------------------------------------------------------------


def replication_section(bench) -> None:
    """Measure the four figures into ``bench.results["replication"]``."""
    sizes = QUICK if bench.config.mode == "quick" else FULL
    scratch = bench.scratch / "replication"
    figures: dict = {"sizes": asdict(sizes)}
    (scratch / "writer").mkdir(parents=True, exist_ok=True)
    writer = _procs.start_pyzdb(scratch / "writer" / "db.pkl")
    try:
        say(f"replication: lag at {RATE:,.0f} writes/s for {sizes.lag_s:g} s")
        figures["lag"] = measure_lag(writer, scratch / "lag-replica", sizes.lag_s)
        lag = figures["lag"]
        say(f"  lag p50 {lag['p50_ms']:.2f} ms, p99 {lag['p99_ms']:.2f} ms over {lag['writes']:,} writes")
        say(f"replication: catch-up after a {sizes.stall_s:g} s stall at {RATE:,.0f} writes/s")
        figures["catch_up"] = measure_catch_up(writer, scratch / "relay-replica", sizes.stall_s)
        up = figures["catch_up"]
        say(
            f"  {up['behind_records']:,} records behind, caught up in {up['catch_up_s']:.2f} s"
            f" ({_report.fmt(up['apply_rate'])} records/s applied)"
        )
    finally:
        _procs.stop(writer.process)
    say(f"replication: full copy of {sizes.copy_entries:,} entries")
    figures["full_copy"] = measure_full_copy(scratch, sizes.copy_entries, sizes.copy_runs)
    say("replication: small reads with and without statistics")
    figures["stats_cost"] = measure_stats_cost(scratch, sizes.blocks)
    cost = figures["stats_cost"]
    say(
        f"  read p50 {cost['read_p50_us']:.1f} us vs {cost['read_p50_nostats_us']:.1f} us without stats;"
        f" observe {cost['observe_ns']:.0f} ns"
    )
    bench.results["replication"] = figures


def targets(results: dict) -> list[dict]:
    """The replication issue's targets (and the catch-up figure, which has none)."""
    rep = results.get("replication")
    if not rep:
        return []
    lag, up, copy, cost = rep["lag"], rep["catch_up"], rep["full_copy"], rep["stats_cost"]
    copy_ratio = copy["copy_s"] / copy["baseline_s"]
    return [
        _report.target(
            f"replica lag at {RATE:,.0f} writes/s, p99 <= {LAG_TARGET_MS:g} ms",
            lag["p99_ms"],
            LAG_TARGET_MS,
            False,
            f"p99 {lag['p99_ms']:.2f} ms, p50 {lag['p50_ms']:.2f} ms ({lag['writes']:,} writes)",
        ),
        {
            "name": f"catch-up after a {up['stall_s']:g} s partition at {RATE:,.0f} writes/s",
            "verdict": "no target",
            "value": up["apply_rate"],
            "limit": None,
            "figure": f"{_report.fmt(up['apply_rate'])} records/s applied; {up['behind_records']:,} behind,"
            f" caught up {up['catch_up_s']:.2f} s after the heal",
        },
        _report.target(
            f"full copy of a {copy['entries']:,}-entry store <= {COPY_TARGET:g} x (copy + load the snapshot)",
            copy_ratio,
            COPY_TARGET,
            False,
            f"{copy_ratio:.2f} x ({copy['copy_s']:.2f} s vs {copy['file_copy_s']:.2f}"
            f" + {copy['load_s']:.2f} s)",
        ),
        _report.target(
            "small-read p50 with statistics <= 1.03 x without",
            cost["ratio"],
            STATS_TARGET,
            False,
            f"{cost['ratio']:.3f} x ({cost['read_p50_us']:.1f} vs {cost['read_p50_nostats_us']:.1f} us);"
            f" same kind {' / '.join(f'{r:.3f}' for r in cost['same_kind_ratios'])};"
            f" observe + 2 clock reads {cost['observe_ns']:.0f} ns = {cost['observe_share'] * 100:.2f} %",
        ),
    ]
