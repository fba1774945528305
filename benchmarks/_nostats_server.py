"""A pyzdb server without its request statistics: the baseline of the stats-cost figure.

Usage: the arguments of ``python -m pyzdb server``.  Benchmark-only: it
replaces ``Handler.answer`` with the same method minus the two clock reads,
``stats.observe`` and the slowlog check, then runs the normal server's
``main``.  Nothing in pyzdb offers this as an option.
"""

from __future__ import annotations

import sys

from pyzdb.cli import main_server
from pyzdb.protocol import Request
from pyzdb.server.handler import Handler


def answer_without_stats(self: Handler, request: Request) -> bytes:
    """``Handler.answer`` without the timing, the counters and the slowlog."""
    return self._answer(request, request.is_write)


if __name__ == "__main__":
    Handler.answer = answer_without_stats
    sys.exit(main_server(sys.argv[1:]))
