"""The socket client of the metrics gateway.

::

    from pyzdb.metrics import Client, ClientError

    with Client("127.0.0.1", 8765, timeout=5) as metrics:
        metrics.put("palm.cpu", 42.3, 1150864247)
        metrics.put("palm.cpu", 2.0)               # timestamp: now
        metrics.get("palm.cpu")    # {'palm.cpu': [(1150864247, 42.3), (1700000000, 2.0)]}
        metrics.get("*")           # every key

One TCP connection is opened by the constructor and kept until :meth:`close`.
Every failure raises :class:`ClientError`: an ``error`` reply (its message is
the gateway's second line, ``wrong command`` or ``storage failed``), a
malformed reply, a bad argument, a timeout or a lost connection.  After a
timeout or a lost connection the stream may be out of step, so the client
closes it and every later call raises ``ClientError``.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from pyzdb.errors import PyzdbError
from pyzdb.metrics import protocol
from pyzdb.metrics.protocol import DEFAULT_PORT

RECV_SIZE = 64 * 1024


class ClientError(PyzdbError):
    """A metrics request failed; the message says why."""


class Client:
    """One connection to a metrics gateway."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, timeout: float | None = None
    ) -> None:
        try:
            self._sock: socket.socket | None = socket.create_connection((host, port), timeout)
        except OSError as exc:
            raise ClientError(f"cannot connect to {host}:{port}: {exc}") from exc
        self._buffer = bytearray()
        self.address = f"{host}:{port}"

    def put(self, name: str, value: float, timestamp: int | float | None = None) -> None:
        """Store one point; ``timestamp`` in seconds, now when omitted (a float is cut to seconds)."""
        try:
            stamp = int(time.time()) if timestamp is None else int(timestamp)
            line = protocol.format_put(name, float(value), stamp)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ClientError(f"cannot put {name!r} {value!r} {timestamp!r}: {exc}") from None
        if self._request(line):
            raise ClientError(f"malformed reply from {self.address}: points in the reply to a put")

    def get(self, name: str) -> dict[str, list[tuple[int, float]]]:
        """``{key: [(timestamp, value), ...]}`` sorted by time; ``name`` ``'*'`` for every key."""
        try:
            line = protocol.format_get(name)
        except protocol.ProtocolError as exc:
            raise ClientError(f"cannot get {name!r}: {exc}") from None
        return self._request(line)

    def _request(self, line: bytes) -> dict[str, list[tuple[int, float]]]:
        reply = self._exchange(line)
        try:
            return protocol.parse_reply(reply)
        except protocol.ErrorReply as exc:
            raise ClientError(str(exc)) from None
        except protocol.ProtocolError as exc:
            raise ClientError(f"malformed reply from {self.address}: {exc}") from None

    def _exchange(self, line: bytes) -> bytes:
        if self._sock is None:
            raise ClientError(f"the connection to {self.address} is closed")
        try:
            self._sock.sendall(line)
            while (reply := protocol.split_reply(self._buffer)) is None:
                data = self._sock.recv(RECV_SIZE)
                if not data:
                    raise ConnectionError("the gateway closed the connection")
                self._buffer += data
            return reply
        except OSError as exc:  # socket.timeout and ConnectionError included
            self.close()
            raise ClientError(f"request to {self.address} failed: {exc or type(exc).__name__}") from exc

    def close(self) -> None:
        """Close the connection (calling it again does nothing)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
