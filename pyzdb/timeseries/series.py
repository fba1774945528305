"""``pyzdb.TimeSeries``: an immutable series of (time, value) samples kept in numpy arrays.

Times are strictly increasing and values are floats, both stored as float64
arrays (16 bytes a sample).  On the wire a series is the tag
``{"$ts": [times, values]}``, each the base64 of the little-endian float64
array: exact (nan and the infinities included) and about 11 characters a
number instead of JSON's 18.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from pyzdb import codec

_WIRE_DTYPE = np.dtype("<f8")
_SHOWN = 3
"""A repr shows this many samples at each end of a long series (numpy's summarisation)."""


class TimeSeries:
    """Samples ``(t, v)`` with strictly increasing times and float values (``ValueError`` otherwise)."""

    __slots__ = ("_times", "_values")

    def __init__(self, times: Any, values: Any) -> None:
        self._times = _read_only(_float_array(times, "times"))
        self._values = _read_only(_float_array(values, "values"))
        if len(self._times) != len(self._values):
            raise ValueError(
                f"TimeSeries needs as many times as values"
                f" ({len(self._times)} times, {len(self._values)} values)"
            )
        check_increasing(self._times)

    @classmethod
    def _trusted(cls, times: np.ndarray, values: np.ndarray) -> TimeSeries:
        """A series of arrays already checked (no copy): they must not change afterwards."""
        series = cls.__new__(cls)
        series._times = _read_only(times)
        series._values = _read_only(values)
        return series

    @property
    def times(self) -> np.ndarray:
        """The times, a read-only float64 array."""
        return self._times

    @property
    def values(self) -> np.ndarray:
        """The values, a read-only float64 array."""
        return self._values

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """Two writable float64 arrays ``(times, values)`` (copies)."""
        return self._times.copy(), self._values.copy()

    def __len__(self) -> int:
        return len(self._times)

    def __iter__(self) -> Iterator[tuple[float, float]]:
        return zip(self._times.tolist(), self._values.tolist(), strict=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TimeSeries):
            return NotImplemented
        return np.array_equal(self._times, other._times) and np.array_equal(
            self._values, other._values, equal_nan=True
        )

    __hash__ = None  # equal series must hash alike; arrays are not hashed

    def __repr__(self) -> str:
        if len(self) <= 2 * _SHOWN:
            return f"TimeSeries({self._times.tolist()!r}, {self._values.tolist()!r})"
        head = _pairs(self._times[:_SHOWN], self._values[:_SHOWN])
        tail = _pairs(self._times[-_SHOWN:], self._values[-_SHOWN:])
        return f"TimeSeries([{head}, ..., {tail}], len={len(self)})"

    def __reduce__(self) -> tuple:
        return (TimeSeries._trusted, (self._times, self._values))


def _pairs(times: np.ndarray, values: np.ndarray) -> str:
    return ", ".join(f"({t!r}, {v!r})" for t, v in zip(times.tolist(), values.tolist(), strict=True))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _float_array(data: Any, name: str) -> np.ndarray:
    """A fresh 1-d float64 array of numbers; ``ValueError`` for anything else (bools and strings too)."""
    if isinstance(data, np.ndarray):
        if data.ndim != 1 or data.dtype.kind not in "iuf":
            raise ValueError(
                f"TimeSeries {name} must be a 1-d array of numbers, not {data.dtype} {data.shape}"
            )
        return data.astype(np.float64)  # always a copy: the caller may change its array later
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
        raise ValueError(f"TimeSeries {name} must be a sequence of numbers, not {type(data).__name__}")
    items = list(data)
    for index, item in enumerate(items):
        if type(item) not in (int, float) and not isinstance(item, (np.integer, np.floating)):
            raise ValueError(f"TimeSeries {name}[{index}] is {item!r}, not a number")
    try:
        return np.array(items, dtype=np.float64)
    except OverflowError:
        raise ValueError(f"TimeSeries {name} holds an integer too large for a float") from None


def check_increasing(times: np.ndarray, what: str = "TimeSeries") -> None:
    """Raise ``ValueError`` unless ``times`` are finite and strictly increasing, naming the first fault."""
    bad = np.flatnonzero(~np.isfinite(times))
    if len(bad):
        raise ValueError(f"{what} times must be finite numbers: times[{bad[0]}] is {times[bad[0]]!r}")
    steps = np.flatnonzero(np.diff(times) <= 0)
    if len(steps):
        i = int(steps[0])
        raise ValueError(
            f"{what} times must be strictly increasing: times[{i + 1}] = {times[i + 1]!r}"
            f" follows times[{i}] = {times[i]!r}"
        )


def as_series(value: Any, what: str) -> TimeSeries:
    """A :class:`TimeSeries`, or a ``(times, values)`` pair turned into one; ``what`` names it in errors."""
    if type(value) is TimeSeries:
        return value
    if type(value) in (tuple, list) and len(value) == 2:
        try:
            return TimeSeries(value[0], value[1])
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
    raise TypeError(f"{what} must be a TimeSeries or a (times, values) pair, not {type(value).__name__}")


# --- the wire form (pyzdb.codec calls these) ------------------------------------------


def to_wire(series: TimeSeries) -> dict:
    """The ``$ts`` tag of a series."""
    return {"$ts": [_b64(series._times), _b64(series._values)]}


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(array.astype(_WIRE_DTYPE, copy=False).tobytes()).decode("ascii")


def from_wire(payload: Any) -> TimeSeries:
    """Decode a ``$ts`` payload (``ValueError``/``TypeError`` when malformed, like any tag)."""
    if type(payload) is not list or len(payload) != 2 or not all(type(p) is str for p in payload):
        raise ValueError("a $ts is [times, values], two base64 strings")
    times, values = (_unb64(part) for part in payload)
    if len(times) != len(values):
        raise ValueError(f"a $ts needs as many times as values ({len(times)} and {len(values)})")
    check_increasing(times)
    return TimeSeries._trusted(times, values)


def _strict_b64decode(text: str) -> bytes:
    # the C strict mode (3.11+) is several times faster than b64decode(validate=True)'s regex check
    if sys.version_info >= (3, 11):
        return binascii.a2b_base64(text, strict_mode=True)
    return base64.b64decode(text, validate=True)


def _unb64(text: str) -> np.ndarray:
    raw = _strict_b64decode(text)
    if len(raw) % 8:
        raise ValueError("a $ts array must hold whole float64 numbers (8 bytes each)")
    return np.frombuffer(raw, dtype=_WIRE_DTYPE).astype(np.float64)


codec.register_value(TimeSeries, to_wire)
