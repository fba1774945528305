"""``--metrics-port N``: the figures of ``db.stats()`` in Prometheus' text format.

Needs the optional ``prometheus_client`` package (``pip install pyzdb[prometheus]``).
Its HTTP server runs in a thread of its own; the request loop never calls it.
Instead the loop *publishes* a fresh copy of its statistics once a second
(:meth:`MetricsEndpoint.tick`), and a scrape reads the newest copy: the loop's
counters are never read while it changes them, and a scrape costs the loop
nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

PUBLISH_S = 1.0
"""How often the request loop publishes its statistics for scrapes."""


def _require_client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ValueError(  # a start-up error: one clear line, see cli.startup_errors
            "--metrics-port needs the prometheus_client package: pip install 'pyzdb[prometheus]'"
        ) from None
    return prometheus_client


class MetricsEndpoint:
    """A Prometheus scrape endpoint fed by a server's ``stats`` sections."""

    def __init__(self, host: str, port: int, sections: Callable[[], dict]) -> None:
        client = _require_client()
        from prometheus_client.registry import CollectorRegistry

        self._sections = sections
        self._latest: dict = sections()
        self._published = time.monotonic()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        self._server, self._thread = client.start_http_server(port, addr=host, registry=registry)

    def tick(self) -> None:
        """Publish fresh statistics if the last ones are a second old (called by the request loop)."""
        now = time.monotonic()
        if now - self._published >= PUBLISH_S:
            self._published = now
            self._latest = self._sections()

    def close(self) -> None:
        """Stop the HTTP server."""
        self._server.shutdown()
        self._server.server_close()

    def collect(self) -> Iterator[Any]:
        """The metric families (called by prometheus_client in its own thread)."""
        return iter(families(self._latest))


def families(stats: dict) -> list[Any]:
    """Prometheus metric families for one ``db.stats()`` result."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    out: list[Any] = []

    def gauge(name: str, doc: str, value: Any, labels: dict | None = None) -> None:
        if value is None:
            return
        family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
        family.add_metric(list((labels or {}).values()), float(value))
        out.append(family)

    server = stats["server"]
    info = GaugeMetricFamily("pyzdb_info", "pyzdb server version and role", labels=["version", "role"])
    info.add_metric([server["version"], server["role"]], 1.0)
    out.append(info)
    gauge("pyzdb_uptime_seconds", "seconds since the server started", server["uptime_s"])
    requests = CounterMetricFamily("pyzdb_requests", "requests answered, by op", labels=["op"])
    for op, count in sorted(stats["requests"]["by_op"].items()):
        requests.add_metric([op], count)
    out.append(requests)
    latency = GaugeMetricFamily(
        "pyzdb_request_latency_seconds",
        "time to answer a request in the server, by kind and quantile",
        labels=["kind", "quantile"],
    )
    for kind, figures in stats["latency"].items():
        for quantile, key in (("0.5", "p50_us"), ("0.99", "p99_us")):
            if figures[key] is not None:
                latency.add_metric([kind, quantile], figures[key] / 1e6)
    out.append(latency)
    gauge("pyzdb_memory_rss_bytes", "resident memory", stats["memory"]["rss_bytes"])
    out += _persistence(stats.get("persistence"))
    out += _replication(stats.get("replication"))
    return out


def _persistence(section: dict | None) -> list[Any]:
    from prometheus_client.core import GaugeMetricFamily

    if not section:
        return []
    journal, snapshots = section["journal"], section["snapshots"]
    figures = [
        ("pyzdb_journal_bytes", "bytes in the current journal", journal["bytes"]),
        ("pyzdb_journal_generation", "generation of the current journal", journal["generation"]),
        (
            "pyzdb_journal_records_since_snapshot",
            "writes not yet in a snapshot",
            journal["records_since_snapshot"],
        ),
        ("pyzdb_snapshot_running", "1 while a snapshot is being written", int(snapshots["running"])),
        ("pyzdb_snapshot_age_seconds", "age of the snapshot file", snapshots["age_s"]),
    ]
    return [_one(GaugeMetricFamily, *figure) for figure in figures if figure[2] is not None]


def _replication(section: dict | None) -> list[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    if not section:
        return []
    out = [_one(GaugeMetricFamily, "pyzdb_replication_position_records", "records in this store's history",
                section["position"]["count"])]  # fmt: skip
    if section["role"] == "replica":
        out.append(_one(GaugeMetricFamily, "pyzdb_replication_link_up", "1 while the link is up",
                        int(section["link"] == "up")))  # fmt: skip
        if section["lag_records"] is not None:
            out.append(_one(GaugeMetricFamily, "pyzdb_replication_lag_records", "records behind the writer",
                            section["lag_records"]))  # fmt: skip
        out.append(_one(CounterMetricFamily, "pyzdb_replication_records_applied", "records applied",
                        section["records_applied"]))  # fmt: skip
        out.append(_one(CounterMetricFamily, "pyzdb_replication_copies_received", "full copies loaded",
                        section["copies_received"]))  # fmt: skip
        return out
    out.append(_one(GaugeMetricFamily, "pyzdb_replication_backlog_bytes", "record bytes kept for replicas",
                    section["backlog"]["bytes"]))  # fmt: skip
    out.append(_one(CounterMetricFamily, "pyzdb_replication_copies_sent", "full copies sent",
                    section["copies_sent"]))  # fmt: skip
    lag = GaugeMetricFamily("pyzdb_replication_replica_lag_records", "records each replica is behind",
                            labels=["replica"])  # fmt: skip
    for replica in section["replicas"]:
        lag.add_metric([replica["name"]], replica["lag_records"])
    out.append(lag)
    return out


def _one(kind: Any, name: str, doc: str, value: float) -> Any:
    family = kind(name, doc)
    family.add_metric([], float(value))
    return family
