"""Values <-> JSON-ready data, keeping every type pyzdb stores (no I/O).

JSON has no int keys, tuples, bytes, nan or big integers, so those travel as
*tagged objects*: a JSON object with exactly one key that starts with ``$``.

==============================  =========================================
Python value                    JSON form
==============================  =========================================
None, bool, str                 null, true/false, string
int with abs(n) <= 2**53        number
int beyond that                 ``{"$int": "-0x1f..."}`` (hex, exact)
finite float                    number (always with a ``.`` or exponent)
nan, inf, -inf                  ``{"$float": "nan" | "inf" | "-inf"}``
bytes                           ``{"$bytes": "<base64>"}``
list (and range)                array
tuple                           ``{"$tuple": [...]}``
dict, all keys str, none ``$``  object
any other dict                  ``{"$dict": [[key, value], ...]}``
pyzdb.File (stored)             ``{"$file": {"name", "size", "location", "blob"}}``
pyzdb.File (to store)           ``{"$file": {"path": "/on/server"}}`` or
                                ``{"$file": {"name": ..., "frame": n}}``
pyzdb.TimeSeries                ``{"$ts": ["<base64>", "<base64>"]}``
                                (times, values: little-endian float64)
==============================  =========================================

A File whose content is uploaded travels as frame ``n`` of the request; the
encoder appends the bytes to the ``frames`` list given to :func:`encode`.

Anything else is refused with :class:`UnsupportedTypeError` (a ``TypeError``)
naming the type and where in the value it was, and so is data nested deeper
than :data:`MAX_DEPTH` containers, counted as :func:`depth_of` does (the
tuples of a dict key count as containers under that dict).  On decoding,
``$dict`` keys must be valid store keys (:func:`is_valid_key`).
``{"$slice": [start, stop, step]}`` decodes to a :class:`SliceTag`: only
request paths give it a meaning, and the protocol refuses it anywhere else.
"""

from __future__ import annotations

import base64
import itertools
import json
import json.encoder as json_encoder
import math
from collections.abc import Callable, Collection
from contextvars import ContextVar
from typing import Any

import orjson

from pyzdb import files
from pyzdb.errors import ProtocolError, PyzdbError
from pyzdb.files import File

MAX_SAFE_INT = 2**53
MAX_DEPTH = 100
"""Deepest nesting pyzdb stores: deeper data could not be pickled or sent back."""
MAX_INT_BITS = 65_536
"""Largest integer (in bits) a ``$int`` may carry: arithmetic on it stays within milliseconds."""
MAX_KEYS_PER_HASH = 16
"""Most distinct keys of one dict that may share a hash: more would make building it quadratic."""

_SPECIAL_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_SCALARS = (str, bool, type(None))
_PLAIN_TYPES = frozenset({*_SCALARS, int, float})
_FEW = 16
"""Below this many items, checking them one by one beats the C-speed checks (measured)."""
_KEY_TYPES = (str, int, float, bool, type(None))


class UnsupportedTypeError(PyzdbError, TypeError):
    """A value pyzdb cannot store; the message names its type and location."""

    wire_name = "TypeError"


class _Unsupported(Exception):
    """Internal: carries the location outward while the encoder unwinds."""

    def __init__(self, reason: str, where: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where


_VALUE_ENCODERS: dict[type, Callable[[Any], Any]] = {}
"""Value types defined outside this module (``TimeSeries``), registered when their module loads:
no instance can exist before, and the codec does not import numpy for programs that never use one."""


def register_value(kind: type, encoder: Callable[[Any], Any]) -> None:
    """Make ``encoder(value)`` the JSON-ready form of values of type ``kind``."""
    _VALUE_ENCODERS[kind] = encoder


_upload_frames: ContextVar[list | None] = ContextVar("upload_frames", default=None)
_seen_tags: ContextVar[dict | None] = ContextVar("seen_tags", default=None)


def encode(value: Any, where: str = "value", frames: list[bytes] | None = None) -> Any:
    """Return the JSON-ready form of ``value``; ``where`` names it in errors.

    Uploaded :class:`File` contents are appended to ``frames`` (without a list,
    they are refused: they can only travel inside a request).
    """
    token = _upload_frames.set(frames)
    try:
        return _encode(value, 0)
    except _Unsupported as exc:
        raise UnsupportedTypeError(f"{exc.reason} at {where}{exc.where}") from None
    finally:
        _upload_frames.reset(token)


def _encode_file(value: File) -> dict:
    if value.stored:
        return {
            "$file": {"name": value.name, "size": value.size, "location": value.location, "blob": value.blob}
        }
    if value.source is not None:
        return {"$file": {"path": value.source, "name": value.name}}
    frames = _upload_frames.get()
    if frames is None:
        raise _Unsupported("File content can only be sent as part of a request")
    frames.append(value.content)
    return {"$file": {"name": value.name, "frame": len(frames)}}


def _encode(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is int:
        return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else {"$int": hex(value)}
    if kind is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if depth >= MAX_DEPTH:
        raise _Unsupported(f"data nested deeper than {MAX_DEPTH} levels")
    if kind is range:
        value, kind = list(value), list
    if kind is list and (_all_plain(value) or _all_plain_records(value, depth + 1)):
        return value  # JSON as it is: no copy (the caller serialises it at once)
    if kind is list:
        return [_at(item, depth + 1, index) for index, item in enumerate(value)]
    if kind is dict:
        return _encode_dict(value, depth + 1)
    if kind is tuple:
        return {"$tuple": [_at(item, depth + 1, index) for index, item in enumerate(value)]}
    if kind is File:
        return _encode_file(value)
    if kind is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    encoder = _VALUE_ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value)
    raise _Unsupported(f"cannot store a value of type {kind.__name__}")


def _all_plain(items: Collection) -> bool:
    """True if every item is a scalar that JSON carries as it is (the common case, checked fast).

    Many items are checked at C speed (``set(map(type, ...))``, ``min``/``max``,
    ``sum``): 240 -> 25 ns per int of a long list.  A few items, such as the
    values of a small record, are checked faster one by one (2 items: 300 ns
    against 1,455 ns for the C-speed checks).
    """
    if len(items) < _FEW:
        return _few_plain(items)
    kinds = set(map(type, items))
    if not kinds <= _PLAIN_TYPES:
        return False
    if int in kinds:
        ints = items if len(kinds) == 1 else [item for item in items if type(item) is int]
        if min(ints) < -MAX_SAFE_INT or max(ints) > MAX_SAFE_INT:
            return False
    if float in kinds:
        floats = items if len(kinds) == 1 else [item for item in items if type(item) is float]
        # nan or an infinity makes the sum non-finite; so may an overflow, which only
        # sends the value down the slow path, still correct
        if not math.isfinite(sum(floats)):
            return False
    return True


def _all_plain_records(items: Collection, depth: int) -> bool:
    """True if there are many items, all dicts that JSON carries as they are (records, ``{"age": 3}``).

    A store is often a dict or list of many small records; checked together at
    C speed they cost 0.23 s a million against 1.2 s one by one.  ``depth`` is
    the records' own depth.
    """
    if len(items) < _FEW or depth >= MAX_DEPTH or set(map(type, items)) != {dict}:
        return False
    keys = set(itertools.chain.from_iterable(items))  # records share few distinct keys
    if not all(type(key) is str and not key.startswith("$") for key in keys):
        return False
    return _all_plain(list(itertools.chain.from_iterable(map(dict.values, items))))


def _few_plain(items: Collection) -> bool:
    for item in items:
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int and -MAX_SAFE_INT <= item <= MAX_SAFE_INT:
            continue
        if kind is float and item - item == 0.0:  # finite: inf - inf and nan - nan are nan
            continue
        return False
    return True


def _encode_dict(value: dict, depth: int) -> Any:
    if all(type(key) is str and not key.startswith("$") for key in value):
        if _all_plain(value.values()) or _all_plain_records(value.values(), depth):
            return value
        return {key: _at(item, depth, key) for key, item in value.items()}
    return {"$dict": [[_encode_key(key, depth), _at(item, depth, key)] for key, item in value.items()]}


def _encode_key(key: Any, depth: int) -> Any:
    kind = type(key)
    if kind is tuple:
        if depth >= MAX_DEPTH:
            raise _Unsupported(f"data nested deeper than {MAX_DEPTH} levels")
        return {"$tuple": [_encode_key(part, depth + 1) for part in key]}
    if kind in _KEY_TYPES:
        return _encode(key, 0)
    raise _Unsupported(f"cannot use a value of type {kind.__name__} as a dict key")


def _at(value: Any, depth: int, step: Any) -> Any:
    """Encode ``value``, adding ``[step]`` to the location of any failure."""
    try:
        return _encode(value, depth)
    except _Unsupported as exc:
        exc.where = f"[{brief(step)}]{exc.where}"
        raise


def brief(value: Any, limit: int = 80) -> str:
    """A ``repr`` of ``value`` cut to ``limit`` characters, for error messages."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        return f"<{type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_valid_key(key: Any, _depth: int = 0) -> bool:
    """True if ``key`` may be a dict key in the store (SPEC §4)."""
    if type(key) is tuple:
        return _depth < MAX_DEPTH and all(is_valid_key(part, _depth + 1) for part in key)
    return type(key) in _KEY_TYPES


def _decode_tag(obj: dict) -> Any:
    """``json`` object hook: turn tagged objects back into Python values."""
    if len(obj) != 1:
        return obj
    ((tag, payload),) = obj.items()
    if not tag.startswith("$"):
        return obj
    decoder = _TAGS.get(tag)
    if decoder is None:
        raise ProtocolError(f"unknown tag {tag!r}")
    try:
        value = decoder(payload)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ProtocolError(f"bad {tag} payload: {exc!r}") from None
    seen = _seen_tags.get()
    if seen is not None:
        seen[tag] = value
    return value


def _list_payload(payload: Any) -> list:
    if type(payload) is not list:
        raise TypeError(f"expected an array, got {type(payload).__name__}")
    return payload


def _dict_payload(payload: Any) -> dict:
    pairs = _list_payload(payload)
    for pair in pairs:
        if type(pair) is not list or len(pair) != 2:
            raise ValueError("each entry must be a [key, value] array")
        if not is_valid_key(pair[0]):
            raise TypeError(f"a dict key cannot be a {type(pair[0]).__name__}")
    check_key_hashes([pair[0] for pair in pairs])
    return dict(pairs)


def check_key_hashes(keys: list) -> None:
    """Raise ``ValueError`` if more than :data:`MAX_KEYS_PER_HASH` distinct ``keys`` share a hash.

    Int, float and tuple hashes are not randomised: ``k * (2**61 - 1)`` all
    hash to 0, and a dict of 30,000 such keys takes seconds to build.  Equal
    keys (``1``, ``1.0``, ``True``) are one key and do not count.
    """
    if len(keys) <= MAX_KEYS_PER_HASH or len(set(map(hash, keys))) == len(keys):
        return  # the common case, at C speed
    # Hashes of hashes collide at most 8 ways (a hash has 64 bits, an int's hash 61), so this is linear.
    groups: dict[int, list] = {}
    for key in keys:
        group = groups.setdefault(hash(key), [])
        if not any(key is other or key == other for other in group):
            group.append(key)
            if len(group) > MAX_KEYS_PER_HASH:
                raise ValueError(
                    f"more than {MAX_KEYS_PER_HASH} distinct keys share the hash {hash(key)}"
                    " (a dict of them would be quadratic to build)"
                )


def _int_payload(text: Any) -> int:
    value = int(text, 16)
    if value.bit_length() > MAX_INT_BITS:
        raise ValueError(f"an integer of {value.bit_length()} bits exceeds the limit of {MAX_INT_BITS}")
    return value


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"bare {name} is not JSON; send {{'$float': ...}}")


_TAGS = {
    "$int": _int_payload,
    "$float": lambda name: _SPECIAL_FLOATS[name],
    "$bytes": lambda text: base64.b64decode(text, validate=True),
    "$tuple": lambda payload: tuple(_list_payload(payload)),
    "$dict": _dict_payload,
    "$slice": lambda payload: SliceTag(payload),
    "$file": files.from_wire,
    "$ts": lambda payload: _timeseries().from_wire(payload),
}


def _timeseries() -> Any:
    from pyzdb.timeseries import series  # numpy is loaded the first time a series arrives

    return series


class SliceTag:
    """A decoded ``{"$slice": payload}``: only a request path may contain one."""

    __slots__ = ("payload",)

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"SliceTag({self.payload!r})"


_DECODER = json.JSONDecoder(object_hook=_decode_tag, parse_constant=_reject_constant)
_PLAIN_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""For text that cannot hold a tag: no Python hook runs per object."""


def _unserialisable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _chunk_encoder() -> Callable[[Any, int], Any]:
    # One C encoder for the process, called directly: JSONEncoder.encode builds a
    # new one per call (3.4 -> 1.8 us for a small request).  No cycle markers:
    # encode() has already bounded the depth of everything that reaches here.
    if json_encoder.c_make_encoder is None:  # not CPython: the pure-Python encoder
        return json.JSONEncoder(separators=(",", ":"), allow_nan=False).iterencode
    return json_encoder.c_make_encoder(
        None, _unserialisable, json_encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )


_encode_chunks = _chunk_encoder()


def dumps(data: Any) -> bytes:
    """Serialise already-encoded data to compact ASCII JSON bytes.

    orjson does it in a tenth of the time (0.2 against 2.1 us for a small reply);
    text beyond ASCII, which it would write as UTF-8, and strings it refuses
    (lone surrogates) go through the standard library's encoder, which escapes
    them as ``\\uXXXX``: the bytes on the wire stay what docs/protocol.md says.
    """
    try:
        raw = orjson.dumps(data)
    except orjson.JSONEncodeError:
        return _stdlib_dumps(data)
    return raw if raw.isascii() else _stdlib_dumps(data)


def _stdlib_dumps(data: Any) -> bytes:
    return "".join(_encode_chunks(data, 0)).encode()


def loads(raw: bytes, tags: dict[str, Any] | None = None) -> Any:
    """Parse UTF-8 JSON bytes and decode tags; raise :class:`ProtocolError` on bad input.

    With a ``tags`` dict, every tag decoded is recorded in it, mapped to the
    value it last decoded to: what a message holds is judged on the decoded
    tags, never on its bytes (``"\\u0024slice"`` is ``"$slice"``).
    """
    if tags is None:
        return _loads(raw)
    token = _seen_tags.set(tags)
    try:
        return _loads(raw)
    finally:
        _seen_tags.reset(token)


def loads_untagged(raw: bytes) -> Any:
    """Parse UTF-8 JSON bytes without decoding tags (``{"$int": "0x1"}`` stays a dict)."""
    try:
        return _PLAIN_DECODER.decode(raw.decode())
    except RecursionError:
        raise ProtocolError("message nested too deeply") from None
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None


def _loads(raw: bytes) -> Any:
    try:
        text = raw.decode()
        # The C scanner is called directly (2.5 -> 1.3 us for a small reply); text
        # that it does not consume whole (surrounding spaces, errors) takes the full
        # decoder, which accepts the spaces or raises with a message.  A tag needs a
        # "$", written as is or escaped.
        decoder = _DECODER if "$" in text or "\\u0024" in text else _PLAIN_DECODER
        try:
            value, end = decoder.scan_once(text, 0)
        except StopIteration:
            end = -1
        return value if end == len(text) else decoder.decode(text)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("message nested too deeply") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None


def depth_of(value: Any) -> int:
    """Nesting depth of a decoded value (a scalar is 0, ``[1]`` is 1)."""
    if type(value) in (list, tuple):
        return 1 + max((depth_of(item) for item in value), default=0)
    if type(value) is dict:
        keys = max((depth_of(key) for key in value), default=0)
        return 1 + max(keys, max((depth_of(item) for item in value.values()), default=0))
    return 0


def to_wire(value: Any) -> bytes:
    """Encode and serialise ``value`` in one step."""
    return dumps(encode(value))


def from_wire(raw: bytes) -> Any:
    """Inverse of :func:`to_wire`."""
    return loads(raw)
