"""Type fidelity of the codec (the wire) and of the snapshot (the file), and hostile decode input."""

from __future__ import annotations

import collections
import enum
import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyzdb import codec, errors
from pyzdb.storage import snapshot

HUGE = 10**6000 + 7  # more digits than int(str) accepts by default (4300)
TAGS = ["$int", "$float", "$bytes", "$tuple", "$dict", "$slice", "$", "$$"]


def same(a: Any, b: Any) -> bool:
    """Equal values of exactly the same types, recursively; nan equals nan, 0.0 differs from -0.0."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is dict:
        pairs = zip(a.items(), b.items(), strict=False)
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in pairs)
    return a == b


WRAP = {"list": lambda v: [v], "tuple": lambda v: (v,), "dict": lambda v: {"k": v}}


def nest(depth: int, kind: str = "list") -> Any:
    """A value ``depth`` containers deep (as :func:`codec.depth_of` counts), built from ``kind``."""
    if kind == "key":
        return {nest(depth - 1, "tuple"): 1}
    value: Any = 0
    for _ in range(depth):
        value = WRAP[kind](value)
    return value


ints = st.one_of(
    st.integers(),
    st.integers(min_value=2**53 - 2, max_value=2**53 + 2),
    st.integers(min_value=-(2**53) - 2, max_value=-(2**53) + 2),
    st.integers(min_value=2**64, max_value=2**300),
    st.integers(min_value=-(2**300), max_value=-(2**64)),
)
# every code point, lone surrogates included, and strings that look like tags
texts = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=12),
    st.sampled_from(TAGS),
    st.text(max_size=6).map(lambda s: "$" + s),
)
key_scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), texts)
keys = st.recursive(key_scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)
scalars = st.one_of(key_scalars, st.binary(max_size=16))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
        st.dictionaries(st.sampled_from(TAGS), inner, min_size=1, max_size=1),
    ),
    max_leaves=25,
)


def test_same_is_strict():
    """The helper the round trips rely on tells apart what Python's == merges."""
    assert same([1, (2.0, float("nan"))], [1, (2.0, float("nan"))])
    assert not same(1, True) and not same(1, 1.0) and not same(0.0, -0.0)
    assert not same((1,), [1]) and not same({1: 2}, {1.0: 2}) and not same({1: 2, 3: 4}, {3: 4, 1: 2})
    assert not same({"a": 1}, {"a": 1, "b": 2})


@pytest.fixture(scope="module")
def snapshot_path(tmp_path_factory):
    """One snapshot file, rewritten by every example (hypothesis forbids function-scoped fixtures)."""
    return tmp_path_factory.mktemp("codec") / "db.pkl"


@settings(max_examples=300, deadline=None)
@given(value=values)
@example(value=HUGE)
@example(value=[-HUGE, {HUGE: (HUGE,)}])
@example(value=[math.nan, math.inf, -math.inf, -0.0, 0.0, 2**53, 2**53 + 1, -(2**64) - 1])
@example(value={"$tuple": [1]})
@example(value=[[1e308, 1e308], [2**53, -(2**53) - 1], [True, 2**60], {"a": 1.5, "b": math.nan}])
@example(value={1: "a", "1": "b", 1.5: "c", None: "d", False: "e", ("l", 4): "f", (): "g", ((1,), None): "h"})
@example(value=["$bytes", "$int", {"$dict": {"$slice": [1, 2, 3]}}])
@example(value=b"\x00\xff" * 10)
def test_round_trip(value, snapshot_path):
    """What is stored is what is read back: the same types, keys and values, on the wire and on disk."""
    assert same(codec.from_wire(codec.to_wire(value)), value)
    snapshot.save(snapshot_path, {"root": value})
    assert same(snapshot.load(snapshot_path)["root"], value)


@settings(max_examples=100, deadline=None)
@given(value=values)
def test_wire_is_compact_ascii_json(value):
    """The wire form is strict ASCII JSON: no NaN/Infinity constants, readable by any JSON parser."""
    raw = codec.to_wire(value)
    assert raw.isascii()
    json.loads(raw, parse_constant=lambda name: pytest.fail(f"{name} in {raw!r}"))


@settings(max_examples=100, deadline=None)
@given(value=values)
@example(value="\ud800 lone surrogate")
@example(value="caf\u00e9 \U0001f600")
def test_fast_serialiser_writes_what_the_standard_library_would(value):
    """orjson's output, or the fallback's, parses to exactly what the stdlib encoder's text parses to."""
    encoded = codec.encode(value)
    assert json.loads(codec.dumps(encoded)) == json.loads(codec._stdlib_dumps(encoded))


records = st.lists(st.dictionaries(texts, scalars, max_size=3), min_size=16, max_size=40)


@settings(max_examples=200, deadline=None)
@given(items=records, as_dict=st.booleans())
@example(items=[{"a": 1, "b": "x"}] * 15 + [{"$int": "0x1"}], as_dict=False)
@example(items=[{"a": 1}] * 15 + [{"a": 2**60}], as_dict=True)
@example(items=[{"a": 1.5}] * 15 + [{"a": math.inf}], as_dict=False)
@example(items=[{"a": 1}] * 15 + [{"a": (1,)}], as_dict=True)
def test_many_records_round_trip(items, as_dict):
    """Many records are checked together (the fast path); any one that needs a tag takes the slow one."""
    value = {f"r{i}": item for i, item in enumerate(items)} if as_dict else items
    assert same(codec.from_wire(codec.to_wire(value)), value)


def test_many_records_at_the_depth_limit():
    rows = [{"a": 1}] * 20
    for depth in (codec.MAX_DEPTH - 1, codec.MAX_DEPTH):
        value = nest(depth, "list")
        inner = value
        for _ in range(depth - 1):
            inner = inner[0]
        inner[:] = rows  # records one level below: depth + 1 in all
        if depth + 1 <= codec.MAX_DEPTH:
            assert same(codec.from_wire(codec.to_wire(value)), value)
        else:
            with pytest.raises(codec.UnsupportedTypeError, match="nested deeper than"):
                codec.to_wire(value)


def test_range_is_stored_as_a_list():
    assert same(codec.from_wire(codec.to_wire(range(3, 12, 4))), [3, 7, 11])
    assert same(codec.from_wire(codec.to_wire({"l": range(3)})), {"l": [0, 1, 2]})


class Color(enum.IntEnum):
    """An int subclass: not an exact int, so refused."""

    RED = 1


class Text(str):
    """A str subclass: refused like any type that is not exactly a storable one."""


@pytest.mark.parametrize(
    "bad, name",
    [
        ({1, 2}, "set"),
        (frozenset(), "frozenset"),
        (object(), "object"),
        (lambda: 0, "function"),
        (collections.OrderedDict(), "OrderedDict"),
        (collections.defaultdict(list), "defaultdict"),
        (Color.RED, "Color"),
        (Text("x"), "Text"),
        (bytearray(b"x"), "bytearray"),
        (1j, "complex"),
        (slice(1, 2), "slice"),
    ],
)
def test_unsupported_value_names_type_and_location(bad, name):
    with pytest.raises(codec.UnsupportedTypeError) as caught:
        codec.to_wire({"a": [0, bad]})
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, errors.PyzdbError)
    assert str(caught.value) == f"cannot store a value of type {name} at value['a'][1]"


@pytest.mark.parametrize("bad_key", [frozenset(), b"k", (1, frozenset()), Color.RED, (1, (b"x",))])
def test_unsupported_key_is_refused(bad_key):
    with pytest.raises(codec.UnsupportedTypeError, match=r"as a dict key at where\['a'\]$"):
        codec.encode({"a": {bad_key: 1}}, "where")


@pytest.mark.parametrize("kind", ["list", "tuple", "dict", "key"])
def test_depth_limit_matches_depth_of(kind):
    """``encode`` accepts exactly the values at most MAX_DEPTH deep, as the server counts them."""
    for depth in (codec.MAX_DEPTH - 1, codec.MAX_DEPTH, codec.MAX_DEPTH + 1):
        value = nest(depth, kind)
        assert codec.depth_of(value) == depth
        if depth <= codec.MAX_DEPTH:
            assert same(codec.from_wire(codec.to_wire(value)), value)
        else:
            with pytest.raises(codec.UnsupportedTypeError, match="nested deeper than"):
                codec.to_wire(value)


def test_cycles_and_deep_keys_are_refused_not_recursed():
    cycle: list = []
    cycle.append(cycle)
    deep_key: tuple = ()
    for _ in range(5000):
        deep_key = (deep_key,)
    for value in (cycle, {deep_key: 1}):
        with pytest.raises(codec.UnsupportedTypeError, match="nested deeper than"):
            codec.to_wire(value)
    assert not codec.is_valid_key(deep_key)


HOSTILE = {
    "bare NaN": b"NaN",
    "nested Infinity": b'[1, {"a": -Infinity}]',
    "unknown tag": b'{"$nope": 1}',
    "unknown tag in a list": b'[{"$set": [1, 2]}]',
    "unknown tag, escaped": b'{"\\u0024nope": 1}',
    "bad base64": b'{"$bytes": "!!!"}',
    "base64 not a string": b'{"$bytes": 5}',
    "base64 not ascii": '{"$bytes": "é"}'.encode(),
    "bad $int": b'{"$int": "xyz"}',
    "$int not a string": b'{"$int": 12}',
    "bad $float": b'{"$float": "NaN"}',
    "unhashable $float": b'{"$float": []}',
    "$tuple not an array": b'{"$tuple": {"a": 1}}',
    "$dict not an array": b'{"$dict": 5}',
    "$dict list key": b'{"$dict": [[[1], 2]]}',
    "$dict dict key": b'{"$dict": [[{"a": 1}, 2]]}',
    "$dict tuple-of-list key": b'{"$dict": [[{"$tuple": [[1]]}, 2]]}',
    "$dict bytes key": b'{"$dict": [[{"$bytes": "YQ=="}, 2]]}',
    "$dict string entry": b'{"$dict": ["ab"]}',
    "$dict triple": b'{"$dict": [[1, 2, 3]]}',
    "deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "deep objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "deep tuples": b'{"$tuple":[' * 50_000 + b"]}" * 50_000,
    "huge int literal": b"9" * 10_000,
    "huge int in a list": b'{"a": [' + b"1" * 10_000 + b"]}",
    "invalid utf-8": b'"\xc3\x28"',
    "invalid utf-8 key": b'{"\xff\xfe": 1}',
    "empty": b"",
    "truncated": b'{"a": [1, 2',
    "trailing garbage": b"[1] [2]",
    "not json": b"db['x']",
}


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"\\u0024tuple": [1]}', (1,)),  # an escaped "$" still makes a tag
        (b'\n {"$int": "0x1"} \t', 1),  # spaces around the text are JSON
        (b'  ["a", {"b": null}]  ', ["a", {"b": None}]),
    ],
)
def test_decoding_accepts_any_spelling_json_allows(raw, value):
    decoded = codec.from_wire(raw)
    assert decoded == value and type(decoded) is type(value)


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_raises_protocol_error_only(raw):
    with pytest.raises(errors.ProtocolError):
        codec.from_wire(raw)


@settings(max_examples=200, deadline=None)
@given(
    value=values, cut=st.integers(min_value=0), flips=st.lists(st.tuples(st.integers(0), st.integers(0, 255)))
)
def test_damaged_messages_decode_or_raise_protocol_error(value, cut, flips):
    """Truncated or corrupted encodings never raise anything but ProtocolError."""
    raw = bytearray(codec.to_wire(value))
    for position, byte in flips:
        raw[position % len(raw)] = byte
    raw = bytes(raw[: len(raw) - cut % len(raw)])
    try:
        codec.from_wire(raw)
    except errors.ProtocolError:
        pass
