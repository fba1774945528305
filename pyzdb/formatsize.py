"""How long ``format % args`` can be, worked out before it is built (no I/O).

A printf-style format is the one in-place operation whose result can be far
larger than its inputs: ``'%*d' % (100_000_000, 1)`` is 100 MB from a few
bytes, and so are ``'%0100000000d'`` and ``'%.100000000f'``.  :func:`bound`
reads the format the way CPython does (``%``, an optional ``(key)``, flags,
width or ``*``, ``.precision`` or ``.*``, an ignored ``h``/``l``/``L``, the
conversion) and adds up an upper bound of every piece, so the server can
refuse the operation without running it.  The bound is never below the real
length; for a format Python would refuse anyway, any value will do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_FLAGS = frozenset("-+ #0")
_LENGTH_MODIFIERS = frozenset("hlL")
_FLOATS = frozenset("eEfFgG")
_INTEGERS = frozenset("diuxXoc")
_FLOAT_DIGITS = 330
"""More characters than any float takes with ``%f`` before the precision (1.8e308 has 309 digits)."""
_TOO_BIG = 1 << 62
"""Stands for a width or precision too large to build (Python refuses it too)."""


def bound(fmt: str | bytes, args: Any) -> int:
    """An upper bound of ``len(fmt % args)`` for a ``str`` or ``bytes`` format."""
    text = fmt.decode("latin-1") if type(fmt) is bytes else fmt
    values = _Args(args, type(fmt) is bytes)
    total = 0
    i = 0
    while i < len(text):
        start = text.find("%", i)
        if start < 0:
            return total + len(text) - i
        total += start - i
        i, size = _conversion(text, start + 1, values)
        total += size
    return total


class _Args:
    """The arguments in the order a format takes them (a tuple, a mapping, or one value)."""

    def __init__(self, args: Any, binary: bool) -> None:
        self.binary = binary
        """A bytes format: ``%s`` of bytes is the bytes themselves, not their repr."""
        self.items = args if type(args) is tuple else (args,)
        self.mapping = args if type(args) is dict else None
        self.next = 0

    def take(self) -> Any:
        if self.next >= len(self.items):
            return None  # Python raises "not enough arguments"
        self.next += 1
        return self.items[self.next - 1]

    def lookup(self, key: str) -> Any:
        return None if self.mapping is None else self.mapping.get(key)


def _conversion(text: str, i: int, args: _Args) -> tuple[int, int]:
    """Read the conversion that starts after the ``%`` at ``i - 1``; return where it ends and its bound."""
    if text.startswith("%", i):
        return i + 1, 1
    value: Any = None
    keyed = text.startswith("(", i)
    if keyed:
        i, key = _mapping_key(text, i + 1)
        value = args.lookup(key)
    while i < len(text) and text[i] in _FLAGS:
        i += 1
    i, width = _number(text, i, args)
    precision = None
    if text.startswith(".", i):
        i, precision = _number(text, i + 1, args)
    if i < len(text) and text[i] in _LENGTH_MODIFIERS:
        i += 1
    if i >= len(text):
        return i, 0  # "incomplete format": Python refuses it
    if not keyed:
        value = args.take()
    return i + 1, max(width, _converted(text[i], value, precision, args.binary))


def _mapping_key(text: str, i: int) -> tuple[int, str]:
    """Read a ``(key)`` whose ``(`` is at ``i - 1``: parentheses nest, as in CPython."""
    depth, start = 1, i
    while i < len(text) and depth:
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        i += 1
    return i, text[start : i - 1]


def _number(text: str, i: int, args: _Args) -> tuple[int, int]:
    """Read a width or precision at ``i``: digits, ``*`` (the next argument) or nothing (0)."""
    if text.startswith("*", i):
        value = args.take()
        return i + 1, abs(value) if isinstance(value, int) else 0  # True is 1, as in Python
    end = i
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    digits = text[i:end]
    if len(digits) > 18:  # more than fits in a Py_ssize_t; int() could even refuse the digits
        return end, _TOO_BIG
    return end, int(digits) if digits else 0


def _converted(kind: str, value: Any, precision: int | None, binary: bool) -> int:
    """A bound of one converted value, before padding to the width."""
    if kind in _FLOATS:
        return _FLOAT_DIGITS + (6 if precision is None else precision)
    if kind in _INTEGERS:  # a precision here is a least number of digits
        digits = _int_chars(value) if type(value) is int else _FLOAT_DIGITS
        return digits + (precision or 0)
    if kind in "sb" and type(value) is (bytes if binary else str):
        size = len(value)  # %s of a str, %s or %b of bytes in a bytes format: the value itself
    else:
        size = repr_bound(value)  # str() of any other value is no longer than its repr()
    return size if precision is None else min(size, precision)


def _int_chars(value: int) -> int:
    # decimal, octal and hex digits are at most bits / 3, plus sign and "0x"
    return value.bit_length() // 3 + 4


def repr_bound(value: Any) -> int:
    """An upper bound of ``len(repr(value))`` (and of ``str`` and ``ascii``) for stored data."""
    measure = _MEASURES.get(type(value))
    return measure(value) if measure is not None else len(repr(value))


def _sequence_bound(items: Any) -> int:
    return 4 + sum(repr_bound(item) + 2 for item in items)


def _dict_bound(value: dict) -> int:
    return 2 + sum(repr_bound(key) + repr_bound(item) + 4 for key, item in value.items())


_MEASURES: dict[type, Callable[[Any], int]] = {
    str: lambda text: 10 * len(text) + 2,  # "\U000e0000" is the longest escape of one character
    bytes: lambda data: 4 * len(data) + 3,  # "\x00"
    int: _int_chars,
    bool: lambda _: 5,
    type(None): lambda _: 4,
    float: lambda _: 32,
    list: _sequence_bound,
    tuple: _sequence_bound,
    dict: _dict_bound,
}
