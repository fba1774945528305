"""Remembering each client's last write so a retried write is not applied twice."""

from __future__ import annotations

from collections import OrderedDict

from pyzdb import errors, protocol
from pyzdb.protocol import Request


class Sessions:
    """Per client id: the sequence number and reply of its newest write.

    A client sends one request at a time, so its newest write is the only one
    it can still be retrying.  The table keeps the ``limit`` most recently
    active clients and is saved with the snapshot, so a retry that crosses a
    server restart gets the original reply instead of a second application.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._last: OrderedDict[str, tuple[int, bytes]] = OrderedDict()

    def replay(self, request: Request) -> bytes | None:
        """The stored reply if ``request`` is a retry of the client's newest write.

        A copy of an *older* write (one that lingered in a queue while its client
        moved on) gets an error reply instead of being applied a second time.
        """
        if request.client is None or request.seq is None:
            return None
        last = self._last.get(request.client)
        if last is None or request.seq > last[0]:
            return None
        if request.seq == last[0]:
            return last[1]
        stale = errors.ProtocolError(f"request {request.seq} is older than this client's last write")
        return protocol.error_reply(request.id, stale)

    def remember(self, request: Request, reply: bytes) -> None:
        """Store the reply of a write that has just been handled."""
        if request.client is None or request.seq is None:
            return
        self._last[request.client] = (request.seq, reply)
        self._last.move_to_end(request.client)
        while len(self._last) > self.limit:
            self._last.popitem(last=False)

    def __getstate__(self) -> dict:
        return {"limit": self.limit, "last": dict(self._last)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limit"])
        self._last.update(state["last"])
