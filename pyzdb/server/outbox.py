"""Sending replies on the loop's ROUTERs with a bound on the bytes queued for any one peer.

ZeroMQ queues a peer's outgoing messages by *count* (the socket's high-water
mark, 1,000), not by size: a client that sends requests for a large value and
never reads the replies can make the server hold gigabytes.  Like Redis's
client output buffer limit, the outbox keeps the bytes of the large replies
each peer has not taken yet under a limit:

- a reply of at least ``track_from`` bytes is sent zero-copy with a
  ``MessageTracker``, which says when libzmq has written it out (to the
  kernel) or dropped it (the peer went away);
- the bytes of a peer's replies not done yet are its *queued* bytes;
- a large reply that would take a peer past ``limit`` is not queued: the peer
  gets a short ``ProtocolError`` reply instead, saying so.  The request itself
  was carried out (a write stays applied and in the dedup table), and nothing
  in the store changes.

Small replies are not counted: their number is bounded by the high-water mark.
"""

from __future__ import annotations

import json
import logging

import zmq

from pyzdb import errors, protocol

log = logging.getLogger("pyzdb.server")

QUEUED_LIMIT = 64 * 1024 * 1024
"""Most bytes of large replies queued for one peer."""
TRACK_FROM = 64 * 1024
"""Replies at least this large are counted (and sent zero-copy)."""

_SNDMORE = int(zmq.SNDMORE)
_send = zmq.backend.Socket.send


class Outbox:
    """Sends reply messages (envelope frames + reply), counting each peer's queued large replies."""

    def __init__(self, limit: int = QUEUED_LIMIT, track_from: int = TRACK_FROM) -> None:
        self.limit = limit
        self.track_from = track_from
        self._queued: dict[bytes, list[tuple[zmq.MessageTracker, int]]] = {}
        self.refused = 0
        """Large replies not queued because their peer was over the limit."""

    def send(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        """Send ``frames`` (the routing envelope, then the reply) to the peer they name."""
        for frame in frames[:-1]:
            _send(sock, frame, _SNDMORE)
        reply = frames[-1]
        if len(reply) < self.track_from:
            _send(sock, reply)
            return
        peer = frames[0]
        queued = self.queued(peer)
        if queued + len(reply) > self.limit:
            self.refused += 1
            log.warning(
                "a reply of %d bytes to a peer with %d bytes unread was not queued", len(reply), queued
            )
            _send(sock, _refusal(reply, queued, self.limit))
            return
        tracker = _send(sock, reply, 0, copy=False, track=True)
        self._queued.setdefault(peer, []).append((tracker, len(reply)))

    def queued(self, peer: bytes) -> int:
        """Bytes of ``peer``'s large replies that libzmq has not written out yet."""
        pending = self._queued.get(peer)
        if not pending:
            return 0
        pending[:] = [(tracker, size) for tracker, size in pending if not tracker.done]
        if not pending:
            del self._queued[peer]
            return 0
        return sum(size for _, size in pending)

    def prune(self) -> None:
        """Forget the replies that are written out (called on the loop's periodic tick)."""
        for peer in list(self._queued):
            self.queued(peer)


def _refusal(reply: bytes, queued: int, limit: int) -> bytes:
    """The short error sent instead of ``reply``, with the id of the request it answers."""
    try:
        request_id = json.loads(reply[: reply.find(b',"ok"')] + b"}").get("id")
    except ValueError:
        request_id = None
    refused = errors.ProtocolError(
        f"reply of {len(reply)} bytes not sent: {queued} bytes of earlier replies to this connection "
        f"are not read yet (the limit is {limit}); the request itself was carried out"
    )
    return protocol.error_reply(request_id, refused)
