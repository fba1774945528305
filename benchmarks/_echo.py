"""The raw pyzmq echo floors the benchmark compares pyzdb with.

Usage: ``python _echo.py direct|devices PORT``.

- ``direct``: a REP socket bound on ``tcp://127.0.0.1:PORT`` sends every
  message back: the cheapest request/reply pyzmq can do.
- ``devices``: the same topology as pyzdb's read-write server.  pyzdb's own
  :class:`pyzdb.server.devices.QueueDevice` threads are built exactly as
  ``ReadWriteServer.run`` builds them (write queue: ROUTER on PORT, DEALER on
  PORT+1 and on ``inproc://``; read queue on PORT+2/PORT+3, idle), and the main
  thread echoes on a DEALER socket connected over ``inproc://``, as the
  server's request loop reads the write queue.  The echo does nothing else:
  no decoding, no polling, no batching.

Runs until SIGTERM (default action: the process ends).
"""

from __future__ import annotations

import sys

import zmq


def direct(context: zmq.Context, port: int) -> None:
    """Echo on a REP socket bound to the port."""
    sock = context.socket(zmq.REP)
    sock.bind(f"tcp://127.0.0.1:{port}")
    while True:
        sock.send(sock.recv())


def devices(context: zmq.Context, port: int) -> None:
    """Echo behind pyzdb's queue devices, on an inproc DEALER."""
    from pyzdb.server.devices import QueueDevice

    inproc = "inproc://echo-write"
    write = QueueDevice(context, f"tcp://127.0.0.1:{port}", [f"tcp://127.0.0.1:{port + 1}", inproc], "write")
    read = QueueDevice(context, f"tcp://127.0.0.1:{port + 2}", [f"tcp://127.0.0.1:{port + 3}"], "read")
    sock = context.socket(zmq.DEALER)
    sock.connect(inproc)
    write.start()
    read.start()
    while True:
        sock.send_multipart(sock.recv_multipart())


def main() -> int:
    """Run the echo named on the command line."""
    mode, port = sys.argv[1], int(sys.argv[2])
    {"direct": direct, "devices": devices}[mode](zmq.Context(), port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
