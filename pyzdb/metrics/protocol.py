"""The metrics text protocol of SPEC §7, byte for byte (no I/O).

Requests are lines ending in ``\\n`` (a ``\\r`` just before it is dropped, so
telnet works); fields are separated by single spaces::

    put <key> <value> <timestamp>\\n
    get <key>\\n
    get *\\n

Replies end with an empty line::

    ok\\n\\n                                      a put was stored; a get found nothing
    ok\\n<key> <value> <timestamp>\\n...\\n\\n      a get: one line per point, by key, then time
    error\\nwrong command\\n\\n                     a malformed or unknown request
    error\\nstorage failed\\n\\n                    pyzdb did not confirm the write (or read)

Fields:

- ``key``: 1 to 255 printable characters, none of them a space or ``*``
  (``serv.cpu``); ``*`` alone, in ``get``, means every key.
- ``value``: a finite decimal number, ``42``, ``-0.5``, ``1e+20`` (no ``nan``,
  ``inf`` or ``_``); it is stored as a float and printed as Python prints a
  float (``42.3``, ``1024.0``).
- ``timestamp``: a decimal integer, seconds, optionally negative.

A request line longer than :data:`MAX_LINE_BYTES` is answered with ``wrong
command`` once its newline arrives, and the connection goes on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_LINE_BYTES = 4096
MAX_KEY_CHARS = 255

OK = b"ok\n\n"
WRONG_COMMAND = b"error\nwrong command\n\n"
STORAGE_FAILED = b"error\nstorage failed\n\n"

_VALUE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TIMESTAMP = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class Put:
    """``put <key> <value> <timestamp>``."""

    key: str
    value: float
    timestamp: int


@dataclass(frozen=True)
class Get:
    """``get <key>``, or ``get *`` when ``key`` is None."""

    key: str | None


@dataclass(frozen=True)
class Wrong:
    """A request that gets ``error\\nwrong command``; ``reason`` is for the log only."""

    reason: str


Request = Put | Get | Wrong


class ProtocolError(ValueError):
    """A field or a reply that does not follow this protocol."""


class ErrorReply(Exception):
    """The gateway answered ``error``; the message is its second line."""


# --- fields ----------------------------------------------------------------------


def check_key(key: str) -> str:
    """Return ``key`` if it can name a metric, else raise :class:`ProtocolError`."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
        raise ProtocolError(f"a key is 1 to {MAX_KEY_CHARS} characters: {key!r}")
    if not key.isprintable() or " " in key or "*" in key:
        raise ProtocolError(f"a key has no space, '*' or control character: {key!r}")
    return key


def parse_value(text: str) -> float:
    """A finite decimal number, as a float."""
    if not _VALUE.fullmatch(text):
        raise ProtocolError(f"not a number: {text!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"not a finite number: {text!r}")
    return value


def parse_timestamp(text: str) -> int:
    """A decimal integer."""
    if not _TIMESTAMP.fullmatch(text):
        raise ProtocolError(f"not an integer: {text!r}")
    return int(text)


def format_value(value: float) -> str:
    """A value as Python prints a float (``42.3``, ``1024.0``)."""
    return repr(float(value))


# --- requests (gateway side) -----------------------------------------------------


def parse_request(line: bytes) -> Request:
    """Parse one request line (without its ``\\n``)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        fields = line.decode("utf-8").split(" ")
        if fields[0] == "put" and len(fields) == 4:
            return Put(check_key(fields[1]), parse_value(fields[2]), parse_timestamp(fields[3]))
        if fields[0] == "get" and len(fields) == 2:
            return Get(None if fields[1] == "*" else check_key(fields[1]))
    except (UnicodeDecodeError, ProtocolError) as exc:
        return Wrong(str(exc))
    return Wrong(f"unknown command or wrong number of fields: {line[:80]!r}")


class RequestDecoder:
    """Cuts a byte stream into requests, whatever the packet boundaries."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overlong = False

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line (never more than :data:`MAX_LINE_BYTES`)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Request]:
        """Add bytes received; return the requests completed by them, in order."""
        self._buffer += data
        requests: list[Request] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._overlong or len(line) > MAX_LINE_BYTES:
                requests.append(Wrong(f"request longer than {MAX_LINE_BYTES} bytes"))
                self._overlong = False
            else:
                requests.append(parse_request(line))
        if len(self._buffer) > MAX_LINE_BYTES:
            self._overlong = True  # drop what we hold, answer when the line ends
            self._buffer.clear()
        return requests


# --- replies (gateway side) ------------------------------------------------------


def format_points(series: Mapping[str, Mapping[int, float]]) -> bytes:
    """The reply to a get: ``ok``, each key's points in timestamp order, an empty line."""
    lines = ["ok\n"]
    for key, points in series.items():
        for timestamp in sorted(points):
            lines.append(f"{key} {format_value(points[timestamp])} {timestamp}\n")
    lines.append("\n")
    return "".join(lines).encode("utf-8")


# --- client side -----------------------------------------------------------------


def format_put(key: str, value: float, timestamp: int) -> bytes:
    """The request line of a put."""
    return f"put {check_key(key)} {format_value(value)} {timestamp}\n".encode()


def format_get(key: str) -> bytes:
    """The request line of a get (``*`` for every key)."""
    return f"get {key if key == '*' else check_key(key)}\n".encode()


def split_reply(buffer: bytearray) -> bytes | None:
    """Remove and return the first complete reply in ``buffer`` (None if there is none yet)."""
    end = buffer.find(b"\n\n")
    if end < 0:
        return None
    reply = bytes(buffer[: end + 2])
    del buffer[: end + 2]
    return reply


def parse_reply(reply: bytes) -> dict[str, list[tuple[int, float]]]:
    """A complete reply as ``{key: [(timestamp, value), ...]}`` sorted by time.

    Raises :class:`ErrorReply` for an ``error`` reply and :class:`ProtocolError`
    for anything that is not a reply.
    """
    try:
        status, *lines = reply.decode("utf-8").split("\n")[:-2]
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"not a reply: {reply[:80]!r}") from None
    if status == "error" and len(lines) == 1:
        raise ErrorReply(lines[0])
    if status != "ok":
        raise ProtocolError(f"not a reply: {reply[:80]!r}")
    return _collect(_parse_point(line) for line in lines)


def _parse_point(line: str) -> tuple[str, int, float]:
    fields = line.split(" ")
    if len(fields) != 3:
        raise ProtocolError(f"not a point: {line[:80]!r}")
    return check_key(fields[0]), parse_timestamp(fields[2]), parse_value(fields[1])


def _collect(points: Iterable[tuple[str, int, float]]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for key, timestamp, value in points:
        series.setdefault(key, []).append((timestamp, value))
    for values in series.values():
        values.sort()
    return series
