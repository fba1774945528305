"""Turning one request message into one reply message (no sockets).

The REP loops of the read-write and read-only servers receive frames and
hand them to :meth:`Handler.handle`; everything between the bytes in and the
bytes out happens here, so it is tested without a network.  The handler never
raises: every failure becomes an error reply, and a failed write changes
nothing.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from pyzdb import errors, protocol
from pyzdb.protocol import Request
from pyzdb.server.sessions import Sessions
from pyzdb.server.stats import RequestStats
from pyzdb.storage.blobs import BlobStore
from pyzdb.store import Store

log = logging.getLogger("pyzdb.server")
_clock_ns = time.perf_counter_ns

_OPERATION_ERRORS = (
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    ZeroDivisionError,
    OverflowError,
    AttributeError,
    RecursionError,
)


class Handler:
    """Decode, dispatch and answer requests against one :class:`Store`."""

    def __init__(
        self,
        store: Store,
        *,
        save: Callable[[], None] | None = None,
        read_only: bool = False,
        allow_exec: bool = False,
        max_message_bytes: int = protocol.MAX_MESSAGE_BYTES,
        max_batch_ops: int = protocol.MAX_BATCH_OPS,
        sessions: Sessions | None = None,
        journal: Callable[[bytes], None] | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.blobs = blobs
        self.store = store
        self.journal = journal
        """Called with each valid write request before it is applied (``None``: no journal)."""
        self.sessions = sessions or Sessions()
        self.read_only = read_only
        self.allow_exec = allow_exec
        self.max_message_bytes = max_message_bytes
        self.max_batch_ops = max_batch_ops
        self._save = save
        self.stats = RequestStats()
        """Counts and latencies of the requests answered (``db.stats()``)."""
        self.slow_ns = 100_000_000
        """Requests that take longer are logged (the slowlog; op and path depth, never arguments)."""
        self.position: Callable[[], tuple[str | None, int]] | None = None
        """``(history, count)`` of the writes this store holds, if it knows (read-your-writes)."""
        self.unjournaled: Callable[[], None] | None = None
        """Called when ``exec`` may have changed the store outside the journal, before the snapshot."""
        self.stats_sections: Callable[[], dict] | None = None
        """The server's further ``stats`` sections (persistence, replication), if it has any."""

    def handle(self, frames: list[bytes]) -> bytes:
        """Answer one message (a list of ZeroMQ frames)."""
        request = self.parse(frames)
        if isinstance(request, bytes):
            return request
        return self.answer(request)

    def parse(self, frames: list[bytes]) -> Request | bytes:
        """Decode a message into a request, or return the error reply for it."""
        size = sum(map(len, frames))
        try:
            if not frames or size > self.max_message_bytes:
                raise errors.ProtocolError(
                    f"message of {size} bytes exceeds the limit of {self.max_message_bytes}"
                )
            request = protocol.decode_request(frames[0], self.max_message_bytes, self.max_batch_ops)
        except errors.PyzdbError as exc:
            return protocol.error_reply(getattr(exc, "request_id", None), exc)
        except Exception:  # a bug in decoding: the message gets an answer, the server goes on
            log.exception("internal error while decoding a request")
            return protocol.error_reply(
                None, errors.InternalError("the server could not decode this message")
            )
        if len(frames) > 1:
            request = dataclasses.replace(request, uploads=tuple(frames[1:]))
        return request

    def replay(self, raw: bytes) -> None:
        """Re-run a journaled write at start-up (not journaled again)."""
        journal, self.journal = self.journal, None
        read_only, self.read_only = self.read_only, False  # a replica replays the writer's journal
        # an acknowledged batch stays applied after a restart with a lower --max-batch-ops
        batch_limit, self.max_batch_ops = self.max_batch_ops, sys.maxsize
        try:
            request = self.parse([raw])
            if isinstance(request, bytes):  # journaled by a pyzdb whose limits were looser
                log.warning("journaled write refused on replay and skipped: %s", request[:200].decode())
            else:
                self._answer(request)
        finally:
            self.journal, self.read_only, self.max_batch_ops = journal, read_only, batch_limit

    def answer(self, request: Request) -> bytes:
        """Run a decoded request and return its reply (counted in :attr:`stats`)."""
        started = _clock_ns()
        write = request.is_write
        reply = self._answer(request, write)
        took = _clock_ns() - started
        self.stats.observe(request.op, write, took)
        if took > self.slow_ns:
            self._log_slow(request, took)
        return reply

    def _log_slow(self, request: Request, took: int) -> None:
        self.stats.slow += 1
        # no arguments and no path keys: they may hold data the log should not
        log.warning(
            "slow request: %s%s at path depth %d took %.1f ms",
            request.op,
            f" {request.method}()" if request.method else "",
            len(request.path),
            took / 1e6,
        )

    def _answer(self, request: Request, write: bool | None = None) -> bytes:
        if write is None:
            write = request.is_write
        replayed = self.sessions.replay(request) if write else None
        if replayed is not None:
            return replayed
        try:
            if request.after is not None and self.read_only:
                self._check_after(request.after)
            result = self.dispatch(request)
            position = self.position() if request.want_position and self.position is not None else None
            reply = protocol.ok_reply(request.id, result, position)
        except (errors.PyzdbError, *_OPERATION_ERRORS) as exc:
            reply = protocol.error_reply(request.id, exc)
        except Exception as exc:  # a bug: keep serving, say where
            log.exception("internal error on %r", request.op)
            reply = protocol.error_reply(request.id, errors.InternalError(f"{type(exc).__name__}: {exc}"))
        if request.max_reply is not None and len(reply) > request.max_reply:
            reply = self._too_large(request, len(reply))
        if write:
            self.sessions.remember(request, reply)
        return reply

    def _too_large(self, request: Request, size: int) -> bytes:
        message = protocol.too_large_message(size, request.max_reply)
        if request.is_write:
            message += "; the write was applied"
        return protocol.error_reply(request.id, errors.TooLargeError(message))

    def dispatch(self, request: Request) -> Any:
        """Run a request and return its result; raises on failure."""
        op, write = request.op, request.is_write
        if op == "ping":
            return {
                "version": protocol.VERSION,
                "read_only": self.read_only,
                "pid": os.getpid(),
                "write_window": self.sessions.window,
            }
        if op == "stats":
            return self.all_stats()
        if op == "batch" and not write:  # only reads: a consistent multi-get, on any server
            return self._batch(request, None)
        if request.uploads and not (write and self.blobs is not None):
            raise errors.ProtocolError("extra frames are only accepted with files to store")
        if write and self.read_only:
            raise errors.ReadOnlyError(f"{_describe(request)} is a write; this server is read-only")
        if not write:
            return self.store.read(op, request.path, request.method, request.args, request.kwargs)
        if self.blobs is not None and (request.uploads or "$file" in request.tags):
            request = self._take_files(request)
        journaled = self._journal_hook(request)
        if op == "batch":
            return self._batch(request, journaled)
        if op in protocol.WRITE_OPS or op in ("call", "ts"):
            return self.store.write(op, request.path, request.method, request.args, request.kwargs, journaled)
        if op == "undo":
            return self.store.undo(journaled)
        if op == "redo":
            return self.store.redo(journaled)
        if op == "save":
            return self.save()
        if op == "exec":
            return self.execute(request.args[0])
        raise errors.LockError(f"{op!r} is answered by the read-write server's lock manager")

    def _batch(self, request: Request, journaled: Callable[[], None] | None) -> list:
        """All of a batch's operations in order, as one write: one journal record, one undo step."""
        operations = [(r.is_write, r.op, r.path, r.method, r.args, r.kwargs) for r in request.ops]
        return self.store.batch(operations, journaled)

    def _check_after(self, after: tuple) -> None:
        """Refuse a read that needs writes this replica has not applied yet."""
        if self.position is None:
            raise errors.ReplicaBehindError("this read-only server cannot tell which writes it holds")
        history, count = self.position()
        if history != after[0] or count < after[1]:
            raise errors.ReplicaBehindError(
                f"this replica holds record {count} of history {history}; the read needs record "
                f"{after[1]} of history {after[0]}"
            )

    def all_stats(self) -> dict:
        """What ``db.stats()`` answers: this handler's counters and the server's sections."""
        role = "replica" if self.read_only else "writer"
        sections = self.stats.sections(role)
        if self.stats_sections is not None:
            sections.update(self.stats_sections())
        return sections

    def _take_files(self, request: Request) -> Request:
        """Move or store the request's files; the request to journal refers to stored blobs.

        Every file is checked, and the write planned, before anything is moved: a
        refused file or a write that fails (``db['nope']['x'] = File(p)``) leaves
        ``p`` where it was.
        """
        self.blobs.check(request)
        if request.op in protocol.WRITE_OPS or request.op == "call":
            self.store.plan(request.op, request.path, request.method, request.args, request.kwargs)
        return self.blobs.ingest(request)

    def _journal_hook(self, request: Request) -> Callable[[], None] | None:
        if self.journal is None:
            return None

        def append() -> None:
            try:
                self.journal(request.raw)
            except OSError as exc:
                log.error("journal write failed, %s refused: %s", _describe(request), exc)
                raise errors.StorageError(f"the write was not applied: journal write failed: {exc}") from None

        return append

    def save(self) -> None:
        """Write the snapshot now; disk failures become :class:`StorageError`."""
        if self._save is None:
            raise errors.StorageError("this server has no store file")
        try:
            self._save()
        except OSError as exc:
            log.error("save failed: %s", exc)
            raise errors.StorageError(f"save failed: {exc}") from None

    def execute(self, source: Any) -> str:
        """Run debugging code with ``db`` bound to the store; return what it printed."""
        if not self.allow_exec:
            raise errors.ExecNotAllowedError("exec is disabled; start the server with --allow-exec")
        if type(source) is not str:
            raise TypeError("exec needs a string of Python code")
        try:
            output = run_source(source, {"db": self.store.root})
        except (Exception, SystemExit) as exc:
            raise errors.ExecError(f"{type(exc).__name__}: {exc}") from None
        finally:
            self.store.changes.everything()
            if self.unjournaled is not None:
                self.unjournaled()
            if self._save is not None:
                self.save()  # exec bypasses the journal: persist whatever it changed now
        return output


def run_source(source: str, namespace: dict) -> str:
    """Execute ``source``; return what it printed, then the repr of a final expression (as Python's REPL)."""
    tree = ast.parse(source, "<exec>", "exec")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(tree, "<exec>", "exec"), namespace)  # noqa: S102
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<exec>", "eval"), namespace)  # noqa: S307
            if value is not None:
                print(repr(value))
    return output.getvalue()


def _describe(request: Request) -> str:
    return f"{request.method}()" if request.op == "call" else repr(request.op)
