"""The asyncio client: one DEALER socket, many requests in flight (SPEC §10).

::

    from pyzdb import aio
    async with aio.connect("tcp://localhost:5559") as conn:
        db = conn.db
        await db["x"]._set(3)
        x = await db["x"]
        values = await asyncio.gather(*(db["l"][i] for i in range(100)))

References are the sync client's (:mod:`pyzdb.proxy`) and requests are built
by the same :class:`pyzdb.protocol.ClientState`; only the transport differs.
What Python spells as a statement (``db['x'] = 3``, ``del``, ``len()``,
``in``, ``bool()``, ``+=``, a plain ``for``) cannot be awaited, so it raises
``TypeError`` naming the awaitable spelling.

Each request gets its ``id`` (and, for a write, its ``seq``) when it goes on
the wire, so writes are numbered, sent and applied in the order they got
their turn.  The reply is matched to its request by ``id``.  A request with
no reply within ``retry_interval`` makes the channel start again on a fresh
socket and resend every request still waiting, in order, byte for byte (lazy
pirate; the server answers a resent write from its dedup table).  A
cancelled request is not resent: its reply, if one comes, is dropped, so a
cancelled write is applied at most once.  At most ``max_in_flight``
requests are on the wire (writes: at most the server's write window, 64);
the others wait their turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Generator
from typing import Any

import zmq
import zmq.asyncio

from pyzdb import errors, protocol
from pyzdb.client import DEFAULT_TIMEOUT, DEFAULT_WRITE_URI, RETRY_INTERVAL, lock_address
from pyzdb.proxy import BaseRef, Batch, RootOps, describe
from pyzdb.timeseries import proxy as timeseries_proxy

log = logging.getLogger("pyzdb.aio")

DEFAULT_MAX_IN_FLIGHT = 64
WRITE_WINDOW = 64
"""The server keeps the replies of a client's last 64 writes: no more may be in flight."""

_RETRY = object()  # what a waiter receives when its retry interval has passed


class _Entry:
    """One request on the wire: its frames (resent as they are) and who waits for its reply."""

    __slots__ = ("id", "frames", "waiter", "reply", "release", "expiry")

    def __init__(self, request_id: int, frames: list[bytes], release: Any) -> None:
        self.id = request_id
        self.frames = frames
        self.waiter: asyncio.Future | None = None
        self.reply: dict | None = None
        self.release = release
        """Gives the request's in-flight slots back; called once, when the request leaves the wire."""
        self.expiry: asyncio.TimerHandle | None = None

    @property
    def abandoned(self) -> bool:
        """True once the caller stopped waiting (cancelled)."""
        return self.waiter is not None and self.waiter.cancelled()

    def finish(self) -> None:
        """The request is off the wire: free its slots (once)."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        release, self.release = self.release, None
        if release is not None:
            release()


class _Slots:
    """Places on the wire, given in first-come order, each wait bounded by a deadline.

    A semaphore with ``asyncio.wait_for`` would cost a task per wait, and on
    Python 3.11 a timeout racing a grant can lose the place for good.
    """

    __slots__ = ("free", "_waiters")

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiters: deque[asyncio.Future] = deque()

    async def take(self, deadline: float) -> None:
        """Take a place, waiting in line until ``deadline`` (loop time): ``TimeoutError``."""
        if self.free and not self._waiters:
            self.free -= 1
            return
        loop = asyncio.get_running_loop()
        granted = loop.create_future()
        self._waiters.append(granted)
        timer = loop.call_at(deadline, _expire_wait, granted)
        try:
            await granted
        except BaseException:
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self.give()  # granted just as the wait was cancelled: pass the place on
            raise
        finally:
            timer.cancel()

    def give(self) -> None:
        """Give a place back: to the first in line still waiting, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


def _expire_wait(granted: asyncio.Future) -> None:
    if not granted.done():
        granted.set_exception(TimeoutError())


class _Channel:
    """One DEALER socket to one address, with the requests waiting for a reply on it."""

    def __init__(self, context: zmq.asyncio.Context, uri: str, max_reply: int | None = None) -> None:
        self.uri = uri
        self.max_reply = max_reply
        self._context = context
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self.entries: dict[int, _Entry] = {}
        """Requests sent and not answered, in the order they were sent."""
        self.generation = 0
        """How many times the socket was replaced; a retry replaces it only once per generation."""

    def _open(self) -> zmq.asyncio.Socket:
        if self._socket is None:
            self._socket = self._context.socket(zmq.DEALER)
            self._socket.setsockopt(zmq.LINGER, 0)
            monitor = self._socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            self._socket.connect(self.uri)
            loop = asyncio.get_running_loop()
            self._reader = loop.create_task(self._read(self._socket))
            self._watcher = loop.create_task(self._watch(monitor, self.generation))
        return self._socket

    def submit(self, entry: _Entry) -> None:
        """Send a request and keep it until its reply comes."""
        self.entries[entry.id] = entry
        self._send(entry)

    def _send(self, entry: _Entry) -> None:
        # the asyncio socket queues a send that would block, in call order: no await needed for ordering
        future = self._open().send_multipart([b"", *entry.frames], copy=False)
        future.add_done_callback(_ignore_closed)

    async def _read(self, socket: zmq.asyncio.Socket) -> None:
        while True:
            frames = await socket.recv_multipart()
            try:
                reply = protocol.parse_reply(frames[-1])
            except errors.PyzdbError as exc:
                log.warning("dropped a message from %s: %s", self.uri, exc)
                continue
            entry = self.entries.pop(reply.get("id"), None)
            if entry is None:
                continue  # a late reply to a cancelled request, or a second copy of one
            if self.max_reply is not None and len(frames[-1]) > self.max_reply:  # a server ignoring max_reply
                message = protocol.too_large_message(len(frames[-1]), self.max_reply)
                reply = {"ok": False, "error": {"type": "TooLargeError", "message": message}}
            entry.finish()
            entry.reply = reply
            if entry.waiter is not None and not entry.waiter.done():
                entry.waiter.set_result(reply)

    async def _watch(self, monitor: zmq.asyncio.Socket, generation: int) -> None:
        """On a lost connection (a server restart), start again and resend at once, in order.

        Without this, requests still queued in the old socket would reach the
        restarted server before the resends of earlier ones that died with it,
        and the server refuses a write older than one it has applied.
        """
        try:
            await monitor.recv_multipart()
            self.retry(generation)
        finally:
            monitor.close(linger=0)

    def retry(self, generation: int) -> None:
        """Start again on a fresh socket and resend what waits, unless done since ``generation``."""
        if generation != self.generation:
            return
        self.generation += 1
        self._drop_socket()
        for entry in list(self.entries.values()):
            if entry.abandoned:  # a cancelled request is never resent
                del self.entries[entry.id]
                entry.finish()
            else:
                self._send(entry)

    def expire(self, entry: _Entry) -> None:
        """Forget a cancelled request whose reply did not come in time."""
        if self.entries.pop(entry.id, None) is not None:
            entry.finish()

    def _drop_socket(self) -> None:
        for task in (self._reader, self._watcher):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._reader = self._watcher = None
        if self._socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._socket.disable_monitor()
            self._socket.close(linger=0)
            self._socket = None

    def close(self, reason: BaseException) -> None:
        """Close the socket; every waiting request fails with ``reason``."""
        self._drop_socket()
        entries, self.entries = self.entries, {}
        for entry in entries.values():
            entry.finish()
            if entry.waiter is not None and not entry.waiter.done():
                entry.waiter.set_exception(reason)


def _ignore_closed(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # a send on a socket closed meanwhile: the request is resent or failed


class Connection:
    """An asyncio connection to a pyzdb server; ``conn.db`` is the root reference.

    Use it as ``async with aio.connect(...) as conn:``, or call :meth:`aclose`.
    """

    def __init__(
        self,
        write_uri: str = DEFAULT_WRITE_URI,
        read_uri: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        retry_interval: float = RETRY_INTERVAL,
        memory_limit: int | None = None,
        read_your_writes: bool = False,
    ) -> None:
        if type(max_in_flight) is not int or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be a positive integer, not {max_in_flight!r}")
        if not timeout > 0 or not retry_interval > 0:
            raise ValueError("timeout and retry_interval must be positive numbers of seconds")
        self.timeout = float(timeout)
        self.retry_interval = float(retry_interval)
        self.max_in_flight = max_in_flight
        self._state = protocol.ClientState(memory_limit, read_your_writes)
        self.client_id = self._state.client_id
        self._context = zmq.asyncio.Context()
        self._write = _Channel(self._context, write_uri, memory_limit)
        self._read = _Channel(self._context, read_uri, memory_limit) if read_uri else self._write
        self._lock: _Channel | None = None
        self._locking = False
        self._slots = _Slots(max_in_flight)
        self._write_slots = _Slots(min(max_in_flight, WRITE_WINDOW))
        self._closed = False
        self.db = AsyncRoot(self)

    # --- requests -------------------------------------------------------------

    def call(
        self,
        op: str,
        path: tuple = (),
        method: str | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Awaitable[Any]:
        """Return an awaitable of one request's result; values are checked now (``TypeError``)."""
        outgoing = self._state.prepare(op, path, method, args, kwargs)
        return self._request(outgoing)

    def batch(self) -> Batch:
        """``async with conn.batch() as b:`` records operations and sends them as one request."""
        return Batch(self, asynchronous=True)

    def run_batch(self, operations: list[dict], write: bool) -> Awaitable[list]:
        """Send operations recorded by a :class:`~pyzdb.proxy.Batch`; an awaitable of their results."""
        return self._request(self._state.prepare_batch(operations, write))

    async def _request(self, outgoing: protocol.Outgoing) -> Any:
        channel, entry, deadline = await self._submit(outgoing)
        try:
            return self._state.result_of(await self._reply(channel, entry, deadline, outgoing.write))
        except errors.ReplicaBehindError:
            if channel is self._write:
                raise
        # a replica behind this connection's writes (read_your_writes): the writer answers
        channel, entry, deadline = await self._submit(outgoing, self._write)
        return self._state.result_of(await self._reply(channel, entry, deadline, outgoing.write))

    async def _submit(
        self, outgoing: protocol.Outgoing, channel: _Channel | None = None
    ) -> tuple[_Channel, _Entry, float]:
        """Wait for a place on the wire, then number and send the request."""
        self._check_open()
        deadline = asyncio.get_running_loop().time() + self.timeout
        release = await self._take_slots(outgoing.write, deadline)
        self._check_open(release)
        channel = channel or self._lock or (self._write if outgoing.write else self._read)
        frames = self._state.stamp(outgoing, channel is self._read and channel is not self._write)
        entry = _Entry(outgoing.id, frames, release)
        channel.submit(entry)
        return channel, entry, deadline

    async def _reply(self, channel: _Channel, entry: _Entry, deadline: float, write: bool) -> dict:
        """Wait for the reply of a request sent by :meth:`_submit`."""
        try:
            return await self._wait(channel, entry, deadline, write)
        except asyncio.CancelledError:
            if entry.reply is None and entry.id in channel.entries:
                # stays on the wire until its reply, a retry or the deadline: then its slots are free
                entry.expiry = asyncio.get_running_loop().call_at(deadline, channel.expire, entry)
            raise
        except BaseException:
            channel.entries.pop(entry.id, None)
            entry.finish()
            raise

    async def _take_slots(self, write: bool, deadline: float) -> Any:
        """Wait for a place on the wire; return the function that gives it back."""
        pools = (self._write_slots, self._slots) if write else (self._slots,)
        taken: list[_Slots] = []

        def release() -> None:
            for pool in taken:
                pool.give()

        try:
            for pool in pools:
                await pool.take(deadline)
                taken.append(pool)
        except TimeoutError:
            release()
            raise errors.TimeoutError(
                f"no place on the wire within {self.timeout:g} s ({self.max_in_flight} requests in flight);"
                " the request was not sent"
            ) from None
        except BaseException:
            release()
            raise
        return release

    async def _wait(self, channel: _Channel, entry: _Entry, deadline: float, write: bool) -> dict:
        loop = asyncio.get_running_loop()
        wait = min(self.retry_interval, self.timeout)
        while True:
            generation = channel.generation
            entry.waiter = waiter = loop.create_future()
            timer = loop.call_at(min(loop.time() + wait, deadline), _wake, waiter)
            try:
                reply = await waiter
            finally:
                timer.cancel()
            if reply is not _RETRY:
                return reply
            if entry.reply is not None:
                return entry.reply
            if loop.time() >= deadline - 0.001:
                channel.entries.pop(entry.id, None)
                entry.finish()
                raise errors.TimeoutError(protocol.timeout_message(channel.uri, self.timeout, write))
            channel.retry(generation)
            wait *= 2

    def _check_open(self, release: Any = None) -> None:
        if self._closed:
            if release is not None:
                release()
            raise errors.ConnectionError("this connection is closed")

    # --- the lock -------------------------------------------------------------

    async def lock(self) -> None:
        """Take the server's lock; other clients' requests wait until :meth:`unlock`."""
        if self._state.token is not None or self._locking:
            raise errors.LockError("this connection already holds the lock")
        self._locking = True
        try:
            grant = await self.call("lock")
        finally:
            self._locking = False
        uri = lock_address(self._write.uri, grant["lock_uri"])
        self._lock = _Channel(self._context, uri, self._state.max_reply)
        self._state.token = grant["token"]

    async def unlock(self) -> None:
        """Give the lock back (raises ``LockError`` if it had expired)."""
        if self._state.token is None or self._lock is None:
            raise errors.LockError("this connection does not hold the lock")
        channel = self._lock
        try:
            sent = await self._submit(self._state.prepare("unlock"), channel)
            # requests issued from now on go to the write port without the token: the server
            # holds them until it has seen this unlock
            self._state.token, self._lock = None, None
            protocol.reply_result(await self._reply(*sent, True))
        finally:
            self._state.token, self._lock = None, None
            channel.close(errors.LockError("the lock was given back before the reply came"))

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[Connection]:
        """Hold the lock for an ``async with`` block; unlock on any exit."""
        await self.lock()
        try:
            yield self
        finally:
            await self.unlock()

    # --- closing --------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the sockets; requests still waiting fail with ``ConnectionError``. Idempotent."""
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reason = errors.ConnectionError("the connection was closed before the reply came")
        for channel in {id(c): c for c in (self._write, self._read, self._lock) if c}.values():
            channel.close(reason)
        self._context.destroy(linger=0)

    @property
    def closed(self) -> bool:
        """True after :meth:`aclose`."""
        return self._closed

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        warnings.warn(f"unclosed pyzdb.aio connection to {self._write.uri}", ResourceWarning, stacklevel=1)
        with contextlib.suppress(Exception):
            self._close()


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(_RETRY)


def _statement(spelling: str) -> TypeError:
    return TypeError(f"the asyncio client cannot run this statement: use {spelling}")


class AsyncRef(BaseRef):
    """A lazy reference of the asyncio client: ``await ref`` fetches it; statements raise ``TypeError``."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._run().__await__()

    def __setitem__(self, key: Any, value: Any) -> None:
        raise _statement(f"'await {describe((*self._path, key))}._set(value)'")

    def __delitem__(self, key: Any) -> None:
        raise _statement(f"'await {describe((*self._path, key))}._delete()'")

    def __len__(self) -> int:
        raise _statement(f"'await {describe(self._path)}._len()'")

    def __contains__(self, item: Any) -> bool:
        raise _statement(f"'await {describe(self._path)}._contains(item)'")

    def __bool__(self) -> bool:
        raise _statement(f"'await {describe(self._path)}._bool()' (or 'await {describe(self._path)}')")

    def __iter__(self) -> Any:
        raise _statement(
            f"'async for v in {describe(self._path)}' or 'await {describe(self._path)}._items()'"
        )

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._stream()

    async def _stream(
        self, page_bytes: int = 1 << 20, page_items: int = 1000, consistent: bool = True
    ) -> AsyncIterator[Any]:
        """``async for v in ref._stream(...)``: items page by page (see :meth:`pyzdb.proxy.Ref._stream`)."""
        cursor = protocol.Cursor(page_bytes, page_items, consistent)
        while not cursor.done:
            for item in cursor.take(await self._conn.call("page", self._path, args=cursor.args())):
                yield item

    def _inplace(self, spelling: str) -> TypeError:
        return _statement(f"'await {describe(self._path)}._iop({spelling!r}, value)'")

    def __iadd__(self, other: Any) -> Any:
        raise self._inplace("+=")

    def __isub__(self, other: Any) -> Any:
        raise self._inplace("-=")

    def __imul__(self, other: Any) -> Any:
        raise self._inplace("*=")

    def __itruediv__(self, other: Any) -> Any:
        raise self._inplace("/=")

    def __ifloordiv__(self, other: Any) -> Any:
        raise self._inplace("//=")

    def __imod__(self, other: Any) -> Any:
        raise self._inplace("%=")

    def __ior__(self, other: Any) -> Any:
        raise self._inplace("|=")


AsyncRef._child = AsyncRef


class AsyncRoot(RootOps, AsyncRef):
    """The root of the store for the asyncio client: ``await db.save()``, ``async with db.locked():``."""

    __slots__ = ()

    def _collection(self, name: str, options: dict) -> AsyncCollection:
        return AsyncCollection(self._conn, name, timeseries_proxy.wire_options(name, options))


class AsyncCollection(timeseries_proxy.BaseCollection):
    """A time-series collection for the asyncio client: ``await coll.select(...)``.

    ``db.timeseries(name, ...)`` sends nothing: the collection is opened (and
    created if it does not exist) by its first awaited call, as SPEC §10's
    example writes it (``ts = db.timeseries('stars'); await ts.select(...)``).
    """

    __slots__ = ("_options", "_opened")

    def __init__(self, conn: Any, name: str, options: dict) -> None:
        super().__init__(conn, name)
        self._options = options
        self._opened = False

    async def _call(self, method: str, *args: Any, finish: Any = None, **kwargs: Any) -> Any:
        if not self._opened:
            if await self._conn.call("ts", (self.name,), "open", (), self._options) is None:
                await self._conn.call("ts", (self.name,), "create", (), self._options)
            self._opened = True
        result = await self._conn.call("ts", (self.name,), method, args, kwargs)
        return result if finish is None else finish(result)

    def __len__(self) -> int:
        raise _statement(f"'await db.timeseries({self.name!r})._len()'")

    def __contains__(self, pk: Any) -> bool:
        raise _statement(f"'await db.timeseries({self.name!r})._contains(pk)'")


def connect(
    write_uri: str = DEFAULT_WRITE_URI,
    read_uri: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    retry_interval: float = RETRY_INTERVAL,
    memory_limit: int | None = None,
    read_your_writes: bool = False,
) -> Connection:
    """Open an asyncio connection (no I/O until the first request); ``async with`` closes it.

    With ``memory_limit``, a reply longer than that many bytes is not sent:
    the call raises ``TooLargeError`` and the connection goes on.  With
    ``read_your_writes``, reads through ``read_uri`` always see this
    connection's acknowledged writes, as with the sync client (SPEC §12): a
    replica behind them answers ``ReplicaBehindError`` and the writer is asked.
    """
    return Connection(
        write_uri, read_uri, timeout, max_in_flight, retry_interval, memory_limit, read_your_writes
    )
