"""The asyncio metrics gateway: text protocol in, pyzdb store behind.

::

    clients ──TCP──► Gateway (asyncio, one task per connection)
                        │ puts: Batcher (group commit)     gets
                        ▼                                   ▼
                  one worker thread: MetricsStore ──ZeroMQ──► pyzdb read-write server

- Each connection reads whatever bytes arrived, decodes every complete
  request in them, and writes the replies in request order.  Its puts are
  handed to the :class:`Batcher` together; a ``get`` first waits for the
  connection's earlier puts, so a client always reads its own writes.
- The :class:`Batcher` collects every put that arrives while the previous
  batch is being stored, and stores them as the next batch (one pyzdb ``madd``
  request for all its keys, see ``pyzdb.metrics.store``).  A put's ``ok`` is sent
  only after the request holding its point succeeded; if it failed (pyzdb
  error, timeout) the put is answered ``error\\nstorage failed\\n\\n``.
- The pyzdb client is blocking and one connection serves one thread, so every
  pyzdb call runs in one dedicated worker thread
  (``loop.run_in_executor`` with a single-thread executor).
- SIGTERM / SIGINT: stop accepting, let busy connections finish the requests
  they hold, store the last batch, close, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyzdb.client import DEFAULT_WRITE_URI, Connection
from pyzdb.metrics.protocol import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    OK,
    STORAGE_FAILED,
    WRONG_COMMAND,
    Get,
    Put,
    Request,
    RequestDecoder,
    format_points,
)
from pyzdb.metrics.store import MetricsStore

log = logging.getLogger("pyzdb.metrics")

DEFAULT_TIMEOUT = 10.0
READ_SIZE = 64 * 1024
STOP_TIMEOUT = 10.0


class Batcher:
    """Group commit of puts, and reads, through one worker thread."""

    def __init__(self, store: MetricsStore, executor: ThreadPoolExecutor) -> None:
        self.store = store
        self._executor = executor
        self._pending: dict[str, tuple[dict[int, float], list[asyncio.Future]]] = {}
        self._flusher: asyncio.Task | None = None

    def _run(self, function: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def put(self, put: Put) -> asyncio.Future:
        """Queue a point; the future gives the reply (``ok`` once stored)."""
        future = asyncio.get_running_loop().create_future()
        points, waiting = self._pending.setdefault(put.key, ({}, []))
        points[put.timestamp] = put.value  # a later put of the same timestamp wins
        waiting.append(future)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                await self._store(batch)
        finally:
            self._flusher = None

    async def _store(self, batch: dict[str, tuple[dict[int, float], list[asyncio.Future]]]) -> None:
        points = {key: values for key, (values, _) in batch.items()}
        started, requests = time.perf_counter(), self.store.requests
        try:
            failed = await self._run(self.store.write, points)
        except Exception:
            log.exception("storing a batch failed")
            failed = set(batch)
        log.debug(
            "stored %d put(s) of %d key(s) in %d request(s), %.1f ms",
            sum(len(waiting) for _, waiting in batch.values()),
            len(batch),
            self.store.requests - requests,
            (time.perf_counter() - started) * 1000,
        )
        for key, (_, waiting) in batch.items():
            for future in waiting:
                if not future.done():
                    future.set_result(STORAGE_FAILED if key in failed else OK)

    async def get(self, key: str | None) -> bytes:
        """The reply to ``get key`` (``get *`` when ``key`` is None)."""
        try:
            return format_points(await self._run(self.store.read, key))
        except Exception as exc:
            log.error("reading %s failed: %s: %s", key or "*", type(exc).__name__, exc)
            return STORAGE_FAILED

    async def drain(self) -> None:
        """Wait until every queued put has been stored (or has failed)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)


class Gateway:
    """Serves the text protocol on TCP connections, storing through a :class:`Batcher`."""

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self._clients: set[asyncio.Task] = set()
        self._reading: set[asyncio.Task] = set()
        self._stopping = False

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one connection's requests until it closes or the gateway stops."""
        task = asyncio.current_task()
        self._clients.add(task)
        decoder = RequestDecoder()
        try:
            while not self._stopping:
                self._reading.add(task)
                try:
                    data = await reader.read(READ_SIZE)
                finally:
                    self._reading.discard(task)
                if not data:
                    break
                await self.answer(decoder.feed(data), writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the gateway is stopping while it was idle
        finally:
            self._clients.discard(task)
            writer.close()

    async def answer(self, requests: list[Request], writer: asyncio.StreamWriter) -> None:
        """Handle requests that arrived together; write their replies in order."""
        replies: list[bytes | asyncio.Future] = []
        for request in requests:
            if isinstance(request, Put):
                replies.append(self.batcher.put(request))
            elif isinstance(request, Get):
                await _write_all(writer, replies)  # this client's earlier puts come first
                replies = [await self.batcher.get(request.key)]
            else:
                log.info("wrong command: %s", request.reason)
                replies.append(WRONG_COMMAND)
        await _write_all(writer, replies)
        await writer.drain()

    async def stop(self) -> None:
        """Stop idle connections, let busy ones finish, store the last batch."""
        self._stopping = True
        for task in self._reading:
            task.cancel()
        if self._clients:
            await asyncio.wait(set(self._clients), timeout=STOP_TIMEOUT)
        await self.batcher.drain()


async def _write_all(writer: asyncio.StreamWriter, replies: list[bytes | asyncio.Future]) -> None:
    """Write the replies in order, in one piece (one system call rather than one per reply)."""
    writer.write(b"".join([reply if isinstance(reply, bytes) else await reply for reply in replies]))


async def run_gateway(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    db_uri: str = DEFAULT_WRITE_URI,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    server_key: str | None = None,
    client_key: str | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly (the keys: a CURVE store, SPEC §11)."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyzdb-metrics")
    conn = Connection(db_uri, timeout=timeout, server_key=server_key, client_key=client_key)
    gateway = Gateway(Batcher(MetricsStore(conn), executor))
    server = await asyncio.start_server(gateway.serve_client, host, port)
    log.warning("pyzdb-metrics gateway ready: listening on %s:%d, storing in %s", host, port, db_uri)
    try:
        await stopped.wait()
    finally:
        server.close()
        await gateway.stop()
        await loop.run_in_executor(executor, conn.close)
        executor.shutdown()
        log.warning("pyzdb-metrics gateway stopped")
