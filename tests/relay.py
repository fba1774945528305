"""A TCP relay on 127.0.0.1 that a test or benchmark can stall and cut, to act out a bad link.

Put it between a replica and its writer's replication port (``--primary
tcp://127.0.0.1:<relay.port>``): while :attr:`Relay.stalled` is set no byte
is moved (they wait in the kernel's buffers, as on a stalled link), and
:meth:`Relay.cut` breaks every connection through it.  Used by
tests/test_replication.py and by the ``replication`` section of the
benchmark (benchmarks/_replication.py).
"""

from __future__ import annotations

import socket
import threading
import time


class Relay:
    """A TCP relay between a replica and its writer that the test can stall and cut."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stalled = threading.Event()
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._links: list = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                inbound, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                outbound = socket.create_connection(self.target, timeout=2)
            except OSError:
                inbound.close()
                continue
            with self._lock:
                self._links += [inbound, outbound]
            for source, sink in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source, sink) -> None:
        source.settimeout(0.1)
        while not self.closing.is_set():
            if self.stalled.is_set():
                time.sleep(0.05)  # bytes wait in the kernel's buffers, as on a stalled link
                continue
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock in (source, sink):
            sock.close()

    def cut(self) -> None:
        """Break every connection through the relay (new ones are accepted again)."""
        with self._lock:
            links, self._links = self._links, []
        for sock in links:
            try:
                sock.shutdown(2)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        """Stop relaying."""
        self.closing.set()
        self.cut()
        self._accepter.join(5)
        self.listener.close()
