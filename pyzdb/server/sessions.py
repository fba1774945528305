"""Remembering each client's recent writes so a resent write is never applied twice.

A client may have up to :data:`WINDOW` writes in flight (a DEALER socket, the
asyncio client), so the table keeps, per client id, the replies of its last
``WINDOW`` writes, keyed by their sequence numbers.  The rules, also in
docs/protocol.md section 8:

- a write whose ``seq`` is above the client's newest one is new: run it;
- a write whose ``seq`` is remembered is a resend: send the stored reply;
- any other ``seq`` (older than the window, or one that never arrived while a
  later one did) is refused with ``ProtocolError`` and not run, so writes are
  only ever applied in sequence order.

The table is bounded: a reply larger than :data:`KEEP_REPLY_BYTES` is kept as
its size only (a resend then gets ``AlreadyAppliedError``, which says the
write was applied), the replies held in all add up to at most ``max_bytes``
(the least recently active clients go first), and a client silent for
``idle_seconds`` is forgotten.  The table is saved with every snapshot and
rebuilt from the journal, so a resend that crosses a restart is answered too.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from pyzdb import errors, protocol
from pyzdb.protocol import Request

WINDOW = 64
"""Replies remembered per client: the most writes one client may have in flight."""
KEEP_REPLY_BYTES = 4096
"""Larger replies are remembered by their size only."""
MAX_TABLE_BYTES = 64 * 1024 * 1024
"""The most reply bytes the whole table holds."""
IDLE_SECONDS = 24 * 3600.0
"""A client that sent no write for this long is forgotten."""
ENTRY_OVERHEAD = 64
"""Bytes counted per remembered write besides its reply (the seq, the tuple, the deque slot)."""


class _Client:
    """One client's newest seq, its remembered replies (oldest first) and when it last wrote."""

    __slots__ = ("newest", "replies", "bytes", "active")

    def __init__(self, newest: int, active: float) -> None:
        self.newest = newest
        self.replies: deque[tuple[int, bytes | int]] = deque()
        self.bytes = 0
        self.active = active


class Sessions:
    """Per client id: the replies of its last :data:`WINDOW` writes, bounded in bytes and in time."""

    def __init__(
        self,
        limit: int = 100_000,
        window: int = WINDOW,
        max_bytes: int = MAX_TABLE_BYTES,
        idle_seconds: float = IDLE_SECONDS,
        clock=time.time,
    ) -> None:
        self.limit = limit
        """The most clients remembered."""
        self.window = window
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self.bytes = 0
        """Bytes the table holds now (replies plus :data:`ENTRY_OVERHEAD` per write)."""

    def __len__(self) -> int:
        return len(self._clients)

    def replay(self, request: Request) -> bytes | None:
        """The reply to send instead of running ``request``, or None if it is a new write."""
        if request.client is None or request.seq is None:
            return None
        known = self._clients.get(request.client)
        if known is None or request.seq > known.newest:
            return None
        for seq, reply in reversed(known.replies):
            if seq == request.seq:
                return reply if type(reply) is bytes else _too_large_to_keep(request, reply)
            if seq < request.seq:
                break
        stale = errors.ProtocolError(
            f"request {request.seq} is older than this client's newest write ({known.newest}) "
            f"and is not among its last {self.window} remembered: not run"
        )
        return protocol.error_reply(request.id, stale)

    def remember(self, request: Request, reply: bytes) -> None:
        """Store the reply of a write that has just been handled."""
        client, seq = request.client, request.seq
        if client is None or seq is None:
            return
        known = self._clients.get(client)
        if known is None:
            known = self._clients[client] = _Client(seq, self._clock())
        else:
            self._clients.move_to_end(client)
            if seq > known.newest:
                known.newest = seq
            known.active = self._clock()
        kept: bytes | int = reply if len(reply) <= KEEP_REPLY_BYTES else len(reply)
        known.replies.append((seq, kept))
        self._count(known, kept, 1)
        if len(known.replies) > self.window:
            self._count(known, known.replies.popleft()[1], -1)
        if self.bytes > self.max_bytes or len(self._clients) > self.limit:
            self._trim()

    def _count(self, known: _Client, kept: bytes | int, sign: int) -> None:
        """Add (``sign`` 1) or take off (-1) the bytes of one remembered reply."""
        size = sign * (ENTRY_OVERHEAD + (len(kept) if type(kept) is bytes else 0))
        known.bytes += size
        self.bytes += size

    def _trim(self) -> None:
        while len(self._clients) > self.limit or (self.bytes > self.max_bytes and len(self._clients) > 1):
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        _, known = self._clients.popitem(last=False)
        self.bytes -= known.bytes

    def expire(self) -> int:
        """Forget the clients silent for longer than ``idle_seconds``; return how many."""
        horizon = self._clock() - self.idle_seconds
        expired = 0
        while self._clients and next(iter(self._clients.values())).active < horizon:
            self._forget_oldest()
            expired += 1
        return expired

    def __getstate__(self) -> dict:
        clients = {cid: (c.newest, list(c.replies), c.active) for cid, c in self._clients.items()}
        return {"limit": self.limit, "clients": clients}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limit"])
        if "clients" not in state:  # a snapshot of pyzdb before the window: each client's newest write
            now = self._clock()
            state = {**state, "clients": {c: (s, [(s, r)], now) for c, (s, r) in state["last"].items()}}
        for client, (newest, replies, active) in state["clients"].items():
            known = self._clients[client] = _Client(newest, active)
            for seq, kept in replies:
                known.replies.append((seq, kept))
                self._count(known, kept, 1)


def _too_large_to_keep(request: Request, size: int) -> bytes:
    applied = errors.AlreadyAppliedError(
        f"write {request.seq} of this client was already applied; its reply ({size} bytes) "
        f"was too large to keep for a resend"
    )
    return protocol.error_reply(request.id, applied)
