"""Similarity queries off the request loop: a worker process with its own copy of the store.

The worker is forked from the read-write server, so it starts with the store
as it is, and is then sent every journaled write, in journal order, which it
replays exactly as start-up does (``Handler.replay``).  A query handed over
after a write is therefore answered from a store that has that write and no
later one: the same answer the loop would have given, while the loop goes on
serving other clients.  The similarity index the worker builds on first use
lives only there.

Of the tree's writes the worker is only told how many there were: it never
answers about the tree, and an empty undo step for each keeps its undo log
step for step with the server's, so that an ``undo`` it replays reverts the
same write (a collection write, or nothing).

Writes and queries travel to the worker through a ``multiprocessing`` queue
(its feeder thread writes the pipe, so the loop never blocks on a busy
worker); replies come back on a pipe whose descriptor the loop polls while
queries are pending.  A worker that dies is started again from the loop's
current store, and the queries it held get an ``InternalError`` saying so.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import logging
import multiprocessing
import os
import signal
from typing import Any

from pyzdb import errors, protocol
from pyzdb.protocol import Request

log = logging.getLogger("pyzdb.server")

OFFLOADED = frozenset({"similar", "augmented_select"})
"""The collection calls answered by the worker (the others are cheap, or writes)."""
_PR_SET_PDEATHSIG = 1


def offloaded(request: Request) -> bool:
    """Is this request one the worker answers?"""
    return request.op == "ts" and request.method in OFFLOADED


class SimilarityWorker:
    """The worker process, the queries it holds, and its restart."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self._ids = itertools.count()
        self.pending: dict[int, tuple[list[bytes], Any]] = {}
        """query id -> (envelope, request id) of each query handed over and not answered yet."""
        self.process: Any = None
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        self._inbox = context.Queue()
        self._skipped = 0
        reader, writer = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_serve, args=(self.handler, self._inbox, writer, os.getpid()), daemon=True
        )
        self.process.start()
        writer.close()
        self._replies = reader
        log.info("similarity worker started (pid %d)", self.process.pid)

    def fileno(self) -> int:
        """The descriptor that is readable when replies are waiting."""
        return self._replies.fileno()

    def feed(self, raw: bytes) -> None:
        """A write just journaled: the worker replays it before any later query."""
        self._flush_skipped()
        self._inbox.put(("write", raw))

    def skip(self) -> None:
        """A write of the tree just journaled: the worker only records an empty undo step for it."""
        self._skipped += 1

    def _flush_skipped(self) -> None:
        if self._skipped:
            self._inbox.put(("skip", self._skipped))
            self._skipped = 0

    def submit(self, envelope: list[bytes], request: Request) -> None:
        """Hand a query over; its reply comes back through :meth:`collect`."""
        query = next(self._ids)
        self.pending[query] = (envelope, request.id)
        self._flush_skipped()
        self._inbox.put(("query", query, request))

    def collect(self) -> list[list[bytes]]:
        """The replies that have arrived, each ``[*envelope, reply]``; a dead worker is restarted."""
        out = []
        try:
            while self.pending and self._replies.poll():
                query, reply = self._replies.recv()
                envelope, _ = self.pending.pop(query)
                out.append([*envelope, reply])
        except (EOFError, OSError):
            pass
        if self.pending and not self.process.is_alive():
            out += self._restart(f"exited with {self.process.exitcode}")
        return out

    def check(self) -> list[list[bytes]]:
        """Restart a worker that died (even idle, so that the next query finds one); error replies."""
        if self.process.is_alive():
            return []
        return self._restart(f"exited with {self.process.exitcode}")

    def _restart(self, why: str) -> list[list[bytes]]:
        log.error("similarity worker (pid %d) %s; starting another", self.process.pid, why)
        message = "the similarity worker stopped while answering this query; it was restarted, try again"
        out = [
            [*envelope, protocol.error_reply(request_id, errors.InternalError(message))]
            for envelope, request_id in self.pending.values()
        ]
        self.pending.clear()
        self._discard()
        self._start()
        return out

    def restart(self, why: str) -> list[list[bytes]]:
        """Start a fresh worker from the loop's store (after ``exec``, which changes it unjournaled)."""
        return self._restart(why)

    def _discard(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self._replies.close()
        self._inbox.cancel_join_thread()
        self._inbox.close()

    def stop(self) -> None:
        """Stop the worker (at shutdown)."""
        self._discard()


def _serve(handler: Any, inbox: Any, replies: Any, parent: int) -> None:
    """The worker's loop: replay writes, answer queries, until the server goes away."""
    _die_with(parent)
    gc.freeze()  # the store came with the fork: a collection walking it would copy every page
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the terminal is the server's to handle
    handler.journal = None
    while True:
        message = inbox.get()
        if message[0] == "write":
            handler.replay(message[1])
        elif message[0] == "skip":  # tree writes: this copy never answers about the tree
            for _ in range(message[1]):
                handler.store.history.record([], [])
        else:
            _, query, request = message
            replies.send((query, handler.answer(request)))


def _die_with(parent: int) -> None:
    """Ask Linux to kill this process when the server dies (SIGKILL included); elsewhere, check once."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(0)
