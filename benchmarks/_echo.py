"""The raw pyzmq echo floors the benchmark compares pyzdb with.

Usage: ``python _echo.py direct|router PORT``.

- ``direct``: a REP socket bound on ``tcp://127.0.0.1:PORT`` sends every
  message back: the cheapest request/reply pyzmq can do.
- ``router``: the socket pattern of pyzdb's read-write request loop, with
  nothing else: a ROUTER bound on PORT, read with a timed blocking receive,
  every message already waiting taken as one batch (up to the loop's
  ``BATCH``), and each message sent back whole after the batch.  No decoding,
  no dispatch, no journal.

Runs until SIGTERM (default action: the process ends).
"""

from __future__ import annotations

import sys

import zmq

BATCH = 256
POLL_MS = 100


def direct(context: zmq.Context, port: int) -> None:
    """Echo on a REP socket bound to the port."""
    sock = context.socket(zmq.REP)
    sock.bind(f"tcp://127.0.0.1:{port}")
    while True:
        sock.send(sock.recv())


def _frames(sock: zmq.Socket, flags: int = 0) -> list[bytes]:
    frames = [sock.recv(flags)]
    while sock.getsockopt(zmq.RCVMORE):
        frames.append(sock.recv())
    return frames


def router(context: zmq.Context, port: int) -> None:
    """Echo on a ROUTER the way pyzdb's loop reads and answers its write port."""
    sock = context.socket(zmq.ROUTER)
    sock.bind(f"tcp://127.0.0.1:{port}")
    sock.rcvtimeo = POLL_MS
    events, pollin, sndmore, noblock = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.SNDMORE), int(zmq.NOBLOCK)
    while True:
        try:
            batch = [_frames(sock)]
        except zmq.Again:
            continue
        while len(batch) < BATCH and sock.getsockopt(events) & pollin:
            batch.append(_frames(sock, noblock))
        for frames in batch:
            for frame in frames[:-1]:
                sock.send(frame, sndmore)
            sock.send(frames[-1])


def main() -> int:
    """Run the echo named on the command line."""
    mode, port = sys.argv[1], int(sys.argv[2])
    {"direct": direct, "router": router}[mode](zmq.Context(), port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
