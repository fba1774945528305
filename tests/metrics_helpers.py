"""Starting and stopping the metrics gateway as a real process, and talking to it over TCP.

The gateway runs as ``python -m pyzdb.metrics`` on 127.0.0.1 and a free port,
started with ``subprocess.Popen`` and stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

from helpers import START_TIMEOUT, ManagedProcess, free_port_base

REPLY_TIMEOUT = 10.0


class GatewayProcess(ManagedProcess):
    """``python -m pyzdb.metrics`` in front of the pyzdb server at ``db_uri``."""

    def __init__(self, db_uri: str, folder: Path, *extra: str, port: int | None = None) -> None:
        self.db_uri = db_uri
        self.port = port or free_port_base(1)
        self.extra = list(extra)
        self.log_path = Path(folder) / f"gateway-{self.port}.log"

    def command(self) -> list[str]:
        """The command line that starts the gateway."""
        args = ["--host", "127.0.0.1", "--port", str(self.port), "--db", self.db_uri, *self.extra]
        return [sys.executable, "-m", "pyzdb.metrics", *args]

    def start(self) -> GatewayProcess:
        """Start the gateway and wait until it accepts connections."""
        self.spawn(self.command(), self.log_path.parent)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"gateway did not listen within {START_TIMEOUT} s: {self.log()}")

    def connect(self) -> socket.socket:
        """A raw TCP connection to the gateway, with a reply timeout."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=REPLY_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def read_replies(sock: socket.socket, count: int) -> bytes:
    """Read until ``count`` complete replies (each ends with an empty line) have arrived."""
    data = b""
    while data.count(b"\n\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data


def exchange(sock: socket.socket, request: bytes, count: int = 1) -> bytes:
    """Send ``request`` in one piece and return the ``count`` replies to it."""
    sock.sendall(request)
    return read_replies(sock, count)
