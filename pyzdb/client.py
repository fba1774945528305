"""The synchronous client: sockets, timeouts, retries and the lock.

::

    from pyzdb.client import client
    db, conn = client()                 # tcp://localhost:5559, no read replicas
    db['x'] = 3
    conn.close()

    with connect(timeout=5) as conn:    # closes its sockets on exit
        conn.db['x'] += 1

Reliability follows the ZeroMQ guide's "lazy pirate": a request that gets no
reply within ``retry_interval`` is resent on a fresh socket, with the interval
doubling, until ``timeout`` runs out and :class:`pyzdb.errors.TimeoutError`
is raised; the connection stays usable.  Reads are simply resent.  Writes
carry this client's id and a sequence number, and the server answers a
resent write from its record of the first reply, so a write is never applied
twice, across a server restart included.  One connection serves one thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import zmq

from pyzdb import errors, protocol
from pyzdb.proxy import Root

DEFAULT_WRITE_URI = "tcp://localhost:5559"
DEFAULT_TIMEOUT = 60.0
RETRY_INTERVAL = 2.0

_send = zmq.backend.Socket.send


class Channel:
    """One REQ socket to one address, replaced whenever a reply is overdue."""

    def __init__(self, context: zmq.Context, uri: str) -> None:
        self.uri = uri
        self._context = context
        self._socket: zmq.Socket | None = None
        self._wait_ms = -1

    def _open(self, wait_ms: int) -> zmq.Socket:
        if self._socket is None:
            self._socket = self._context.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(self.uri)
            self._wait_ms = -1
        if wait_ms != self._wait_ms:  # setting an option costs more than a round trip's Python work
            self._socket.setsockopt(zmq.RCVTIMEO, wait_ms)
            self._wait_ms = wait_ms
        return self._socket

    def reset(self) -> None:
        """Drop the socket (and anything queued in it)."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def request(self, frames: list[bytes], timeout: float, retry_interval: float) -> bytes:
        """Send a request's frames and return the reply, resending until ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        wait = min(retry_interval, timeout)
        while True:
            try:
                sock = self._open(max(1, int(wait * 1000)))
                if len(frames) == 1:
                    _send(sock, frames[0])  # the Cython send: pyzmq's Python wrapper costs 1.2 us
                else:
                    sock.send_multipart(frames)
                return sock.recv()  # a timed blocking receive costs less than poll() + recv()
            except zmq.Again:
                pass
            except BaseException:
                self.reset()  # e.g. Ctrl-C while waiting: never leave a REQ socket mid-request
                raise
            self.reset()
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                raise errors.TimeoutError(f"no reply from {self.uri} within {timeout:g} s")
            wait = min(wait * 2, remaining)


class Connection:
    """A client's sockets to a pyzdb server; ``conn.db`` is the root reference."""

    def __init__(
        self,
        write_uri: str = DEFAULT_WRITE_URI,
        read_uri: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_interval: float = RETRY_INTERVAL,
        read_your_writes: bool = False,
    ) -> None:
        self.read_your_writes = read_your_writes
        """Reads through ``read_uri`` see this connection's acknowledged writes (SPEC §12)."""
        self.position: tuple[str, int] | None = None
        """The writer's position after this connection's newest acknowledged write (read-your-writes)."""
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.client_id = os.urandom(8).hex()
        self._context = zmq.Context()
        self._write = Channel(self._context, write_uri)
        self._read = Channel(self._context, read_uri) if read_uri else self._write
        self._lock: Channel | None = None
        self._token: str | None = None
        self._seq = 0
        self.db = Root(self)

    def call(
        self,
        op: str,
        path: tuple = (),
        method: str | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Any:
        """Send one request and return its result, or raise the error it carried."""
        write = protocol.is_write(op, method)
        self._seq += 1
        uploads: list[bytes] = []
        message = protocol.build_request(
            op,
            path,
            method,
            args,
            kwargs,
            uploads,
            id=self._seq,
            client=self.client_id if write else None,
            seq=self._seq if write else None,
            token=self._token,
        )
        channel = self._lock or (self._write if write else self._read)
        if self.read_your_writes:
            return self._call_reading_own_writes(message, uploads, channel, write)
        return protocol.decode_reply(self._send(channel, message, uploads, write))[1]

    def _send(self, channel: Channel, message: dict, uploads: list[bytes], write: bool) -> bytes:
        try:
            frames = [protocol.encode_request(message), *uploads]
            return channel.request(frames, self.timeout, self.retry_interval)
        except errors.TimeoutError as exc:
            if write:
                exc.message += "; the write may or may not have been applied"
            raise

    def _call_reading_own_writes(
        self, message: dict, uploads: list[bytes], channel: Channel, write: bool
    ) -> Any:
        """Writes ask for the writer's position; a read on a replica must be there, or goes to the writer."""
        if write:
            message["pos"] = True
        elif channel is not self._write and self.position is not None:
            message["after"] = list(self.position)
        try:
            _, result, position = protocol.decode_reply_position(self._send(channel, message, uploads, write))
        except errors.ReplicaBehindError:
            del message["after"]
            return protocol.decode_reply(self._send(self._write, message, uploads, write))[1]
        if type(position) is list and len(position) == 2 and isinstance(position[1], int):
            if self.position is None or position[0] != self.position[0] or position[1] > self.position[1]:
                self.position = (position[0], position[1])
        return result

    def lock(self) -> None:
        """Take the server's lock; other clients' requests wait until :meth:`unlock`."""
        if self._token is not None:
            raise errors.LockError("this connection already holds the lock")
        grant = self.call("lock")
        self._lock = Channel(self._context, _lock_address(self._write.uri, grant["lock_uri"]))
        self._token = grant["token"]

    def unlock(self) -> None:
        """Give the lock back (raises ``LockError`` if it had expired)."""
        if self._token is None:
            raise errors.LockError("this connection does not hold the lock")
        try:
            self.call("unlock")
        finally:
            self._lock.reset()
            self._lock = self._token = None

    @contextmanager
    def locked(self) -> Iterator[Connection]:
        """Hold the lock for a ``with`` block; unlock on any exit."""
        self.lock()
        try:
            yield self
        finally:
            self.unlock()

    def close(self) -> None:
        """Close every socket of this connection."""
        for channel in (self._write, self._read, self._lock):
            if channel is not None:
                channel.reset()
        self._context.term()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def _lock_address(write_uri: str, lock_uri: str) -> str:
    """The lock socket on the host we reach the write queue at."""
    write, lock = urlsplit(write_uri), urlsplit(lock_uri)
    if write.scheme == lock.scheme == "tcp":
        return f"tcp://{write.hostname}:{lock.port}"
    return lock_uri


def connect(
    write_uri: str = DEFAULT_WRITE_URI,
    read_uri: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    read_your_writes: bool = False,
) -> Connection:
    """Open a connection; use it as a context manager to close it on exit."""
    return Connection(write_uri, read_uri, timeout, read_your_writes=read_your_writes)


def client(
    write_uri: str = DEFAULT_WRITE_URI,
    read_uri: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    read_your_writes: bool = False,
) -> tuple[Root, Connection]:
    """Return ``(db, conn)``: the root reference and its connection (SPEC §3)."""
    conn = Connection(write_uri, read_uri, timeout, read_your_writes=read_your_writes)
    return conn.db, conn
