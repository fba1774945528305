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
from pyzdb.keys import ClientKeys, client_keys
from pyzdb.proxy import Batch, Root

DEFAULT_WRITE_URI = "tcp://localhost:5559"
DEFAULT_TIMEOUT = 60.0
RETRY_INTERVAL = 2.0

_send = zmq.backend.Socket.send


class Channel:
    """One REQ socket to one address, replaced whenever a reply is overdue."""

    def __init__(self, context: zmq.Context, uri: str, keys: ClientKeys | None = None) -> None:
        self.uri = uri
        self.keys = keys
        self._context = context
        self._socket: zmq.Socket | None = None
        self._wait_ms = -1

    def _open(self, wait_ms: int) -> zmq.Socket:
        if self._socket is None:
            self._socket = self._context.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            if self.keys is not None:
                self.keys.apply(self._socket)
            self._socket.connect(self.uri)
            self._wait_ms = -1
        if wait_ms != self._wait_ms:  # setting an option costs more than a round trip's Python work
            self._socket.setsockopt(zmq.RCVTIMEO, wait_ms)
            self._wait_ms = wait_ms
        return self._socket

    def _timeout_message(self, timeout: float) -> str:
        message = f"no reply from {self.uri} within {timeout:g} s"
        if self.keys is not None:  # a refused CURVE key looks exactly like a silent server
            message += (
                "; check the keys: server_key must be the server's server.key, and your public key "
                "must be in its clients/rw or clients/ro folder (the server reads them on SIGHUP)"
            )
        return message

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
                raise errors.TimeoutError(self._timeout_message(timeout))
            wait = min(wait * 2, remaining)


class Connection:
    """A client's sockets to a pyzdb server; ``conn.db`` is the root reference."""

    def __init__(
        self,
        write_uri: str = DEFAULT_WRITE_URI,
        read_uri: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_interval: float = RETRY_INTERVAL,
        memory_limit: int | None = None,
        read_your_writes: bool = False,
        *,
        server_key: str | os.PathLike | None = None,
        client_key: str | os.PathLike | None = None,
    ) -> None:
        """Prepare the sockets (they connect on first use); with both keys, every socket uses CURVE.

        ``server_key`` is the server's public key file (``server.key``), ``client_key``
        this client's ``.key_secret`` file; a bad or missing file raises ``KeyFileError``
        (a ``ValueError``) here, before anything is sent.  With ``read_your_writes``,
        reads through ``read_uri`` see this connection's acknowledged writes (SPEC §12):
        a replica that is behind sends them to the writer.
        """
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._state = protocol.ClientState(memory_limit, read_your_writes)
        self.client_id = self._state.client_id
        self.keys = client_keys(server_key, client_key)
        self._context = zmq.Context()
        self._write = Channel(self._context, write_uri, self.keys)
        self._read = Channel(self._context, read_uri, self.keys) if read_uri else self._write
        self._lock: Channel | None = None
        self.db = Root(self)

    @property
    def _token(self) -> str | None:
        return self._state.token

    @property
    def position(self) -> tuple[str, int] | None:
        """With ``read_your_writes``: the writer's position after this connection's newest write."""
        return self._state.position

    def call(
        self,
        op: str,
        path: tuple = (),
        method: str | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Any:
        """Send one request and return its result, or raise the error it carried."""
        return self._send(self._state.prepare(op, path, method, args, kwargs))

    def batch(self) -> Batch:
        """``with conn.batch() as b:`` records operations and sends them as one all-or-nothing request."""
        return Batch(self)

    def run_batch(self, operations: list[dict], write: bool) -> list:
        """Send operations recorded by a :class:`~pyzdb.proxy.Batch`; return their results."""
        return self._send(self._state.prepare_batch(operations, write))

    def _send(self, outgoing: protocol.Outgoing) -> Any:
        write = outgoing.write
        channel = self._lock or (self._write if write else self._read)
        try:
            raw = channel.request(
                self._state.stamp(outgoing, channel is not self._write and channel is not self._lock),
                self.timeout,
                self.retry_interval,
            )
            try:
                return self._state.result(raw)
            except errors.ReplicaBehindError:  # a replica behind this connection's writes: the writer
                raw = self._write.request(self._state.stamp(outgoing), self.timeout, self.retry_interval)
        except errors.TimeoutError as exc:  # the channel's message, with the keys hint under CURVE
            if write:
                exc.message += "; the write may or may not have been applied"
            raise
        return self._state.result(raw)

    def lock(self) -> None:
        """Take the server's lock; other clients' requests wait until :meth:`unlock`."""
        if self._token is not None:
            raise errors.LockError("this connection already holds the lock")
        grant = self.call("lock")
        self._lock = Channel(self._context, lock_address(self._write.uri, grant["lock_uri"]), self.keys)
        self._state.token = grant["token"]

    def unlock(self) -> None:
        """Give the lock back (raises ``LockError`` if it had expired)."""
        if self._token is None:
            raise errors.LockError("this connection does not hold the lock")
        try:
            self.call("unlock")
        finally:
            self._lock.reset()
            self._lock = self._state.token = None

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


def lock_address(write_uri: str, lock_uri: str) -> str:
    """The lock socket on the host we reach the write queue at."""
    write, lock = urlsplit(write_uri), urlsplit(lock_uri)
    if write.scheme == lock.scheme == "tcp":
        return f"tcp://{write.hostname}:{lock.port}"
    return lock_uri


def connect(
    write_uri: str = DEFAULT_WRITE_URI,
    read_uri: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int | None = None,
    read_your_writes: bool = False,
    *,
    server_key: str | os.PathLike | None = None,
    client_key: str | os.PathLike | None = None,
) -> Connection:
    """Open a connection; use it as a context manager to close it on exit.

    With ``memory_limit``, a reply longer than that many bytes is not sent:
    the call raises ``TooLargeError`` and the connection goes on.  Against a
    server started with ``--curve``, pass ``server_key`` (the server's
    ``server.key``) and ``client_key`` (your ``.key_secret``, SPEC §11).
    """
    return Connection(
        write_uri,
        read_uri,
        timeout,
        memory_limit=memory_limit,
        read_your_writes=read_your_writes,
        server_key=server_key,
        client_key=client_key,
    )


def client(
    write_uri: str = DEFAULT_WRITE_URI,
    read_uri: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int | None = None,
    read_your_writes: bool = False,
    *,
    server_key: str | os.PathLike | None = None,
    client_key: str | os.PathLike | None = None,
) -> tuple[Root, Connection]:
    """Return ``(db, conn)``: the root reference and its connection (SPEC §3); see :func:`connect`."""
    conn = connect(
        write_uri,
        read_uri,
        timeout,
        memory_limit,
        read_your_writes,
        server_key=server_key,
        client_key=client_key,
    )
    return conn.db, conn
