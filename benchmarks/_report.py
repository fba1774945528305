"""The benchmark's outputs: the printed table, the targets, the chart.

Everything here reads the results dictionary that ``run.py`` builds (and
writes to ``benchmarks/results/latest.json``); nothing here measures.
"""

from __future__ import annotations

from pathlib import Path

FLOOR = "floor_router"
"""The echo floor pyzdb is held to: the same socket pattern as its request loop."""
REDIS_PEER = {"read": "redis_get", "ping": "redis_get", "write": "redis_set"}
"""Which Redis row each pyzdb row is compared with."""


# --- looking things up ---------------------------------------------------------------


def figure(results: dict, section: str, row: str, clients: int, field: str) -> float | None:
    """One median figure, or None if it was not measured."""
    entry = results.get(section, {}).get(row)
    if not entry:
        return None
    return entry["by_clients"].get(str(clients), {}).get(field)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None if either is missing."""
    return a / b if a is not None and b else None


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    """A number for the table (``-`` if missing)."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


# --- the table -----------------------------------------------------------------------


def request_rows(results: dict) -> list[list[str]]:
    """One row per request workload."""
    rows = []
    for name, entry in results.get("requests", {}).items():
        p50 = figure(results, "requests", name, 1, "p50_us")
        top = figure(results, "requests", name, 16, "rate")
        pyzdb = not (name.startswith("floor") or name.startswith("redis"))
        floor_p50 = figure(results, "requests", FLOOR, 1, "p50_us") if pyzdb else None
        floor_top = figure(results, "requests", FLOOR, 16, "rate") if pyzdb else None
        peer = REDIS_PEER.get(name)
        peer_p50 = figure(results, "requests", peer, 1, "p50_us") if peer else None
        peer_top = figure(results, "requests", peer, 16, "rate") if peer else None
        rows.append(
            [
                entry["label"],
                fmt(p50),
                fmt(figure(results, "requests", name, 1, "p99_us")),
                fmt(figure(results, "requests", name, 1, "server_cpu_us")),
                fmt(figure(results, "requests", name, 1, "client_cpu_us")),
                *(fmt(figure(results, "requests", name, n, "rate")) for n in (1, 4, 16)),
                fmt(ratio(p50, floor_p50), 2),
                fmt(ratio(top, floor_top), 2),
                fmt(ratio(p50, peer_p50), 2),
                fmt(ratio(top, peer_top), 2),
            ]
        )
    return rows


def durable_rows(results: dict) -> list[list[str]]:
    """One row per fsync policy (and Redis with ``appendfsync always``)."""
    rows = []
    for name, entry in results.get("durable", {}).items():
        rows.append(
            [
                entry["label"],
                fmt(figure(results, "durable", name, 1, "p50_us")),
                fmt(figure(results, "durable", name, 1, "p99_us")),
                fmt(figure(results, "durable", name, 1, "server_cpu_us")),
                fmt(figure(results, "durable", name, 1, "rate")),
                fmt(figure(results, "durable", name, 16, "rate")),
            ]
        )
    return rows


def store_rows(results: dict) -> list[list[str]]:
    """One row per store size."""
    rows = []
    for entries, s in results.get("stores", {}).items():
        rows.append(
            [
                f"{int(entries):,}",
                fmt(s["startup_s"], 3),
                fmt(s["load_s"], 3),
                fmt(s["dict_startup_s"], 3),
                fmt(s["rss_net_mb"], 1),
                fmt(s["dict_rss_net_mb"], 1),
                fmt(ratio(s["rss_net_mb"], s["dict_rss_net_mb"]), 2),
                fmt(s["rss_mb"], 1),
                fmt(s["dict_rss_mb"], 1),
                fmt(s["save_s"], 3),
                fmt(s["dict_save_s"], 3),
                fmt(s["save_block_ms"], 1),
                fmt(s["quiet_gap_ms"], 1),
            ]
        )
    return rows


def grid(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, ["-" * w for w in widths], *rows]:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def table(results: dict) -> str:
    """Everything the run measured, as text."""
    meta, config = results["meta"], results["config"]
    parts = [
        f"pyzdb benchmark, {meta['date']} ({results['config']['mode']} run, {meta['wall_s']:.0f} s wall)",
        f"machine: {meta['cpus']} x {meta['cpu']}, {meta['memory_gb']:.0f} GB, {meta['system']}; "
        f"load average {meta['load_before']:.2f} before, {meta['load_after']:.2f} after",
        f"software: pyzdb {meta.get('commit', '?')}, Python {meta['python']}, pyzmq {meta['pyzmq']} "
        f"(libzmq {meta['libzmq']}), redis-server {meta.get('redis', '-')}",
        "",
        f"Requests, one at a time per client (store: {config['store_entries']:,} users, "
        f"--fsync everysec). Latency and CPU us per request at 1 client: medians of "
        f"{config['latency_rounds']} runs; with 4 and 16 clients: of {config['rounds']}.",
        grid(
            [
                "workload",
                "p50 us",
                "p99 us",
                "srv CPU",
                "cli CPU",
                "1 cl/s",
                "4 cl/s",
                "16 cl/s",
                "p50/floor",
                "16cl/floor",
                "p50/Redis",
                "16cl/Redis",
            ],
            request_rows(results),
        ),
        "",
        "Durable writes (pyzdb write db['users'][k] = {...}; Redis SET): by fsync policy",
        grid(["server", "p50 us", "p99 us", "srv CPU", "1 cl/s", "16 cl/s"], durable_rows(results)),
        "",
        "Stores of N entries vs the same data in a plain dict (MB = MiB; net = minus an empty process)",
        grid(
            [
                "entries",
                "start s",
                "load s",
                "dict s",
                "net MB",
                "dict MB",
                "ratio",
                "raw MB",
                "dict raw",
                "save s",
                "dict save",
                "blocks ms",
                "quiet ms",
            ],
            store_rows(results),
        ),
        "",
        "Targets",
        *(f"  [{t['verdict']}] {t['name']}: {t['figure']}" for t in results["targets"]),
    ]
    if results.get("skipped"):
        parts += ["", "Skipped: " + "; ".join(results["skipped"])]
    return "\n".join(parts)


# --- targets -------------------------------------------------------------------------


def target(name: str, value: float | None, limit: float, higher_is_better: bool, detail: str) -> dict:
    """One target: met, not met, or not measured."""
    if value is None:
        return {"name": name, "verdict": "not measured", "value": None, "limit": limit, "figure": detail}
    met = value >= limit if higher_is_better else value <= limit
    return {
        "name": name,
        "verdict": "met" if met else "NOT met",
        "value": value,
        "limit": limit,
        "figure": detail,
    }


def targets(results: dict) -> list[dict]:
    """The targets of the write-path issue (and those met before), each with its figure from this run."""
    req = "requests"
    read_p50 = figure(results, req, "read", 1, "p50_us")
    curve_p50 = figure(results, req, "read_curve", 1, "p50_us")
    get_p50 = figure(results, req, "redis_get", 1, "p50_us")
    write_p50 = figure(results, req, "write", 1, "p50_us")
    set_p50 = figure(results, req, "redis_set", 1, "p50_us")
    read_top = figure(results, req, "read", 16, "rate")
    get_top = figure(results, req, "redis_get", 16, "rate")
    always = figure(results, "durable", "pyzdb_always", 16, "rate")
    redis_always = figure(results, "durable", "redis_always", 16, "rate")
    big = results.get("stores", {}).get("1000000")
    found = [
        ratio_target("small read p50 at 1 client <= 1.5 x Redis GET", read_p50, get_p50, 1.5, False, "us"),
        ratio_target("small write p50 at 1 client <= 1.5 x Redis SET", write_p50, set_p50, 1.5, False, "us"),
        ratio_target(
            "small read p50 at 1 client under CURVE <= 1.3 x without",
            curve_p50,
            read_p50,
            1.3,
            False,
            "us",
            1,
        ),
        ratio_target(
            "small read throughput at 16 clients >= 1.0 x Redis GET", read_top, get_top, 1.0, True, "req/s"
        ),
        ratio_target(
            "durable writes, --fsync always, 16 clients >= Redis appendfsync always",
            always,
            redis_always,
            1.0,
            True,
            "writes/s",
        ),
    ]
    return found + store_targets(big)


def ratio_target(
    name: str, value: float | None, peer: float | None, limit: float, higher: bool, unit: str, digits: int = 0
) -> dict:
    """A target on ``value / peer``, its figure showing both."""
    quotient = ratio(value, peer)
    both = f"{fmt(value, digits)} vs {fmt(peer, digits)} {unit}"
    return target(name, quotient, limit, higher, f"{fmt(quotient, 2)} x ({both})")


def store_targets(big: dict | None) -> list[dict]:
    """The targets about the 1M-entry store."""
    if big is None:
        big = {}
    mem = ratio(big.get("rss_net_mb"), big.get("dict_rss_net_mb"))
    block = big.get("save_block_ms")
    return [
        ratio_target(
            "start-up of a 1M-entry store <= 1.1 x loading the same file as a plain dict",
            big.get("startup_s"),
            big.get("dict_startup_s"),
            1.1,
            False,
            "s",
            3,
        ),
        target(
            "memory of a 1M-entry store <= 1.2 x the same data as a plain dict (net RSS)",
            mem,
            1.2,
            False,
            f"{fmt(mem, 2)} x ({fmt(big.get('rss_net_mb'), 1)} MB"
            f" vs {fmt(big.get('dict_rss_net_mb'), 1)} MB)",
        ),
        target(
            "save() of a 1M-entry store blocks other requests <= 50 ms",
            block,
            50.0,
            False,
            f"{fmt(block, 1)} ms (longest gap between replies, median over saves)",
        ),
    ]


# --- the chart -----------------------------------------------------------------------


def chart(results: dict, path: Path) -> None:
    """Draw the six panels of docs/performance.png with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(18, 9.5))
    _latency_panel(axes[0][0], results)
    _throughput_panel(axes[0][1], results)
    _durable_panel(axes[0][2], results)
    _stores_panel(axes[1][0], results, "rss_net_mb", "dict_rss_net_mb", "resident memory, net (MiB)")
    _stores_panel(axes[1][1], results, "startup_s", "dict_startup_s", "start-up (s)")
    _stores_panel(
        axes[1][2], results, "save_block_ms", "quiet_gap_ms", "save(): longest reply gap (ms)", 50.0
    )
    meta = results["meta"]
    fig.suptitle(
        f"pyzdb benchmark {meta['date']} — {meta['cpus']} x {meta['cpu']}, Python {meta['python']}, "
        f"{results['config']['mode']} run"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _not_measured(ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _latency_panel(ax, results: dict) -> None:
    names = list(results.get("requests", {}))
    if not names:
        return _not_measured(ax, "latency at 1 client")
    labels = [results["requests"][n]["short"] for n in names]
    p50 = [figure(results, "requests", n, 1, "p50_us") or 0 for n in names]
    p99 = [figure(results, "requests", n, 1, "p99_us") or 0 for n in names]
    ax.barh(labels, p99, color="#d9d9d9", label="p99")
    ax.barh(labels, p50, color="#3b75af", label="median")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency at 1 client (µs, log scale)")
    ax.legend(loc="lower right")


def _throughput_panel(ax, results: dict) -> None:
    names = [n for n in results.get("requests", {}) if n not in ("len", "iter")]
    if not names:
        return _not_measured(ax, "throughput")
    width = 0.27
    for i, clients in enumerate((1, 4, 16)):
        rates = [figure(results, "requests", n, clients, "rate") or 0 for n in names]
        ax.bar([x + (i - 1) * width for x in range(len(names))], rates, width, label=f"{clients} clients")
    ax.set_xticks(
        range(len(names)), [results["requests"][n]["short"] for n in names], rotation=30, ha="right"
    )
    ax.set_ylabel("requests per second (all clients)")
    ax.legend()


def _durable_panel(ax, results: dict) -> None:
    names = list(results.get("durable", {}))
    if not names:
        return _not_measured(ax, "durable writes")
    width = 0.4
    for i, clients in enumerate((1, 16)):
        rates = [figure(results, "durable", n, clients, "rate") or 0 for n in names]
        ax.bar([x + (i - 0.5) * width for x in range(len(names))], rates, width, label=f"{clients} clients")
    ax.set_xticks(range(len(names)), [results["durable"][n]["short"] for n in names])
    ax.set_ylabel("durable writes per second")
    ax.legend()


def _stores_panel(ax, results: dict, ours: str, theirs: str, title: str, limit: float | None = None) -> None:
    stores = results.get("stores", {})
    sizes = list(stores)
    if not sizes:
        return _not_measured(ax, title)
    width = 0.4
    second = "plain dict" if theirs.startswith("dict") else "no save running"
    for i, (key, label) in enumerate(((ours, "pyzdb"), (theirs, second))):
        values = [stores[s].get(key) or 0 for s in sizes]
        ax.bar([x + (i - 0.5) * width for x in range(len(sizes))], values, width, label=label)
    if limit is not None:
        ax.axhline(limit, color="#c0392b", linestyle="--", label="target at 1M entries")
    ax.set_xticks(range(len(sizes)), [f"{int(s):,} entries" for s in sizes])
    ax.set_title(title)
    ax.legend()
