"""``pyzdb-metrics`` / ``python -m pyzdb.metrics``: run the metrics gateway."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pyzdb import __version__
from pyzdb.cli import add_key_options, setup_logging
from pyzdb.client import DEFAULT_WRITE_URI
from pyzdb.metrics.gateway import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TIMEOUT, run_gateway

EPILOG = """\
protocol (one request per line; every reply ends with an empty line):
  put <key> <value> <timestamp>   ->  ok
  get <key>   or   get *          ->  ok, then one "<key> <value> <timestamp>" line per point
  anything malformed              ->  error / wrong command
  pyzdb did not confirm a write   ->  error / storage failed

Points are stored in the time-series collection 'metrics': one series per key (SPEC 7, 8).

examples:
  pyzdb-server &                   the store (writes on tcp://localhost:5559)
  pyzdb-metrics                    gateway on 127.0.0.1:8765
  pyzdb-metrics --host 0.0.0.0 --port 2003 --db tcp://dbhost:5559
  printf 'put serv.cpu 0.5 1150864247\\nget *\\n' | nc 127.0.0.1 8765

The gateway has no authentication: listening beyond 127.0.0.1 is your choice.
A pyzdb server started with --curve needs --server-key KEYDIR/server.key and
--client-key with a read-write key (pyzdb-keygen KEYDIR --client NAME --role rw).
See docs/metrics.md.
"""


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyzdb-metrics``."""
    result = argparse.ArgumentParser(
        prog="pyzdb-metrics",
        description="Accept metrics over a Graphite-like TCP text protocol and store them in pyzdb.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument("--host", default=DEFAULT_HOST, help="interface to listen on (default: %(default)s)")
    result.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default: %(default)s)")
    result.add_argument(
        "--db",
        default=DEFAULT_WRITE_URI,
        metavar="URI",
        help="write queue of the pyzdb server (default: %(default)s)",
    )
    add_key_options(result, "the gateway's (read-write)")
    result.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for the pyzdb server before answering "
        "'error / storage failed' (default: %(default)s)",
    )
    result.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug: every batch)"
    )
    result.add_argument("--version", action="version", version=f"pyzdb {__version__}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pyzdb-metrics``: serve until SIGTERM or SIGINT, then exit 0."""
    args = parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser().error("--port must be between 0 and 65535")
    if args.timeout <= 0:
        parser().error("--timeout must be positive")
    setup_logging(args.verbose)
    keys = {"server_key": args.server_key, "client_key": args.client_key}
    try:
        asyncio.run(run_gateway(args.host, args.port, args.db, args.timeout, **keys))
    except (OSError, ValueError) as exc:  # e.g. the port is taken: one clear line, not a traceback
        print(f"pyzdb-metrics: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
