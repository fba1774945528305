"""Request and reply messages: building, validating, and hostile input against an I/O-free Handler."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec import keys, nest, same, values

from pyzdb import codec, errors, protocol
from pyzdb.server.handler import Handler
from pyzdb.store import Store

HUGE_HEX = "0x" + "f" * 4000  # an int whose decimal form is too long for repr()


def make_store() -> Store:
    """A small store with one of each container and a few scalars."""
    return Store({"l": [1, 2, 3], "d": {"a": 1, 5: (1, 2)}, "s": "text", "n": 7, "e": []})


def raw(message: Any) -> bytes:
    """A message as raw JSON bytes (no codec: hostile shapes included)."""
    return message if isinstance(message, bytes) else json.dumps(message).encode()


def request(**message: Any) -> bytes:
    """A version-1 request with the given fields, as bytes."""
    return raw({"v": 1, **message})


def reply_error(reply: bytes) -> errors.PyzdbError:
    """The exception an error reply carries, as the client would raise it."""
    with pytest.raises(errors.PyzdbError) as caught:
        protocol.decode_reply(reply)
    return caught.value


def assert_untouched(store: Store, before: dict) -> None:
    """The store holds what it held and recorded no undo step."""
    assert same(store.root, before)
    assert store.history.can_undo == 0


# --- building and decoding requests ------------------------------------------------

opt_ints = st.none() | st.integers(-(2**70), 2**70)
path_steps = keys | st.builds(slice, opt_ints, opt_ints, opt_ints)
paths = st.lists(path_steps, max_size=4).map(tuple)
extras = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(-(2**53), 2**53) | st.text(max_size=8),
        "client": st.text(max_size=8),
        "seq": st.integers(0, 2**70),
        "token": st.text(max_size=8),
    },
)


@settings(max_examples=150, deadline=None)
@given(
    path=paths,
    args=st.lists(values, max_size=3).map(tuple),
    kwargs=st.dictionaries(st.text(max_size=6), values, max_size=3),
    extra=extras,
)
def test_build_then_decode_round_trip(path, args, kwargs, extra):
    """A request built by a client decodes on the server to exactly what was asked, types included."""
    message = protocol.build_request("call", path, "update", args, kwargs, **extra)
    decoded = protocol.decode_request(protocol.encode_request(message))
    assert (decoded.op, decoded.method) == ("call", "update")
    assert len(decoded.path) == len(path)
    for got, sent in zip(decoded.path, path, strict=True):
        assert got == sent if type(sent) is slice else same(got, sent)
    assert same(decoded.args, args) and same(decoded.kwargs, kwargs)
    for name, value in extra.items():
        assert same(getattr(decoded, name), value)


def test_encode_path_forms():
    encoded = protocol.encode_path(("a", 1, ("l", 4), 2**60, slice(None, -1, 2), slice(3)))
    assert encoded == [
        "a",
        1,
        {"$tuple": ["l", 4]},
        {"$int": hex(2**60)},
        {"$slice": [None, -1, 2]},
        {"$slice": [None, 3, None]},
    ]


@pytest.mark.parametrize("step", [[1], {"a": 1}, b"k", slice(1.5, 2), slice("a", None), {1, 2}, object()])
def test_encode_path_refuses_bad_steps(step):
    with pytest.raises(TypeError):
        protocol.encode_path(("ok", step))


def test_build_request_refuses_unstorable_arguments():
    with pytest.raises(codec.UnsupportedTypeError, match=r"type set at argument 1\[0\]"):
        protocol.build_request("call", ("l",), "extend", (1, [{2}]))
    with pytest.raises(codec.UnsupportedTypeError, match="type object at argument reverse"):
        protocol.build_request("call", ("l",), "sort", kwargs={"reverse": object()})


def test_keywords_that_look_like_tags_survive():
    message = protocol.build_request("call", ("d",), "update", kwargs={"$int": "0x10", "$tuple": [1]})
    decoded = protocol.decode_request(protocol.encode_request(message))
    assert same(decoded.kwargs, {"$int": "0x10", "$tuple": [1]})


@pytest.mark.parametrize(
    "bounds, expected",
    [
        ([1, None, -1], slice(1, None, -1)),
        ([None, None, None], slice(None)),
        ([{"$int": "0x10"}, 0, 1], slice(16, 0, 1)),
    ],
)
def test_slice_steps_decode(bounds, expected):
    decoded = protocol.decode_request(request(op="get", path=["l", {"$slice": bounds}]))
    assert decoded.path == ("l", expected)


def test_dunder_method_passes_decode():
    """Decoding checks the shape only; the allowlist is the store's (see the Handler tests below)."""
    decoded = protocol.decode_request(request(op="call", method="__class__"))
    assert (decoded.op, decoded.method, decoded.is_write) == ("call", "__class__", False)


INVALID = {
    "missing v": (raw({"op": "get"}), errors.ProtocolError, "version"),
    "v 2": (raw({"v": 2, "op": "get"}), errors.ProtocolError, "version"),
    "v string": (raw({"v": "1", "op": "get"}), errors.ProtocolError, "version"),
    "v true": (raw({"v": True, "op": "get"}), errors.ProtocolError, "version"),
    "v 1.0": (raw({"v": 1.0, "op": "get"}), errors.ProtocolError, "version"),
    "v huge": (
        request(op="get").replace(b'"v": 1', b'"v": {"$int": "%s"}' % HUGE_HEX.encode()),
        errors.ProtocolError,
        "not a tag",
    ),
    "array": (raw([1, "get"]), errors.ProtocolError, "JSON object"),
    "string": (raw("get"), errors.ProtocolError, "JSON object"),
    "missing op": (request(), errors.ProtocolError, "'op'"),
    "op array": (request(op=["get"]), errors.ProtocolError, "'op'"),
    "op object": (request(op={"a": 1}), errors.ProtocolError, "'op'"),
    "unknown op": (request(op="drop"), errors.NotAllowedError, "unknown operation 'drop'"),
    "dunder op": (request(op="__import__", args=["os"]), errors.NotAllowedError, "unknown operation"),
    "get with an argument": (request(op="get", args=[1]), errors.ProtocolError, "takes 0"),
    "set without value": (request(op="set", path=["a"]), errors.ProtocolError, "takes 1"),
    "contains without value": (request(op="contains"), errors.ProtocolError, "takes 1"),
    "exec without code": (request(op="exec"), errors.ProtocolError, "takes 1"),
    "set at root": (request(op="set", args=[1]), errors.ProtocolError, "non-empty path"),
    "delete at root": (request(op="delete"), errors.ProtocolError, "non-empty path"),
    "keywords on get": (request(op="get", kwargs={"a": 1}), errors.ProtocolError, "keyword"),
    "args object": (request(op="get", args={"a": 1}), errors.ProtocolError, "'args'"),
    "kwargs array": (request(op="call", method="sort", kwargs=[1]), errors.ProtocolError, "'kwargs'"),
    "path string": (request(op="get", path="l"), errors.ProtocolError, "'path'"),
    "path step array": (request(op="get", path=[[1]]), errors.ProtocolError, "path step"),
    "path step object": (request(op="get", path=[{"a": 1}]), errors.ProtocolError, "path step"),
    "path step bytes": (request(op="get", path=[{"$bytes": "YQ=="}]), errors.ProtocolError, "path step"),
    "slice of two": (request(op="get", path=[{"$slice": [1, 2]}]), errors.ProtocolError, r"\$slice"),
    "slice float": (
        request(op="get", path=[{"$slice": [1.5, None, None]}]),
        errors.ProtocolError,
        "integers",
    ),
    "slice bool": (
        request(op="get", path=[{"$slice": [True, None, None]}]),
        errors.ProtocolError,
        "integers",
    ),
    "slice with extra key": (
        request(op="get", path=[{"$slice": [1, 2, 3], "x": 1}]),
        errors.ProtocolError,
        "step",
    ),
    "call without method": (request(op="call"), errors.ProtocolError, "'method'"),
    "method number": (request(op="call", method=5), errors.ProtocolError, "'method'"),
    "iop pow": (request(op="iop", path=["n"], method="pow", args=[2]), errors.NotAllowedError, "'pow'"),
    "iop method array": (
        request(op="iop", path=["n"], method=["add"], args=[2]),
        errors.ProtocolError,
        "'method'",
    ),
    "id array": (request(op="get", id=[1]), errors.ProtocolError, "'id'"),
    "id huge": (request(op="get", id={"$int": HUGE_HEX}), errors.ProtocolError, "'id'"),
    "id float": (request(op="get", id=1.5), errors.ProtocolError, "'id'"),
    "seq string": (request(op="get", seq="1"), errors.ProtocolError, "'seq'"),
    "seq true": (request(op="get", seq=True), errors.ProtocolError, "'seq'"),
    "client number": (request(op="get", client=5), errors.ProtocolError, "'client'"),
    "token number": (request(op="get", token=5), errors.ProtocolError, "'token'"),
    "deep value": (
        request(op="set", path=["a"], args=[nest(codec.MAX_DEPTH)]),
        errors.ProtocolError,
        "deeper",
    ),
    "long path": (request(op="get", path=["a"] * (codec.MAX_DEPTH + 1)), errors.ProtocolError, "deeper"),
    "bare NaN": (request(op="set", path=["a"], args=[float("nan")]), errors.ProtocolError, "NaN"),
    "unknown tag": (request(op="set", path=["a"], args=[{"$set": [1]}]), errors.ProtocolError, "tag"),
    "bad key in $dict": (
        request(op="set", path=["a"], args=[{"$dict": [[[1], 2]]}]),
        errors.ProtocolError,
        "dict",
    ),
    "deep nesting": (
        b'{"v":1,"op":"set","path":["a"],"args":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
        errors.ProtocolError,
        "deep",
    ),
    "huge int literal": (
        b'{"v":1,"op":"set","path":["a"],"args":[' + b"7" * 10_000 + b"]}",
        errors.ProtocolError,
        "JSON",
    ),
    "invalid utf-8": (b'{"v":1,"op":"set","path":["a"],"args":["\xc3\x28"]}', errors.ProtocolError, "JSON"),
    "truncated": (b'{"v":1,"op":"set","path":["a"],"ar', errors.ProtocolError, "JSON"),
    "empty": (b"", errors.ProtocolError, "JSON"),
}


@pytest.mark.parametrize("message, error, match", INVALID.values(), ids=INVALID.keys())
def test_decode_request_refuses(message, error, match):
    with pytest.raises(error, match=match):
        protocol.decode_request(message)


def test_message_size_limit():
    message = request(op="set", path=["a"], args=["x" * 1000])
    assert protocol.decode_request(message, max_bytes=len(message)).args == ("x" * 1000,)
    with pytest.raises(
        errors.ProtocolError, match=f"{len(message)} bytes exceeds the limit of {len(message) - 1}"
    ):
        protocol.decode_request(message, max_bytes=len(message) - 1)


# --- replies ---------------------------------------------------------------------


def test_ok_reply_round_trip():
    result = {1: (2, b"x"), "k": [float("inf"), 2**80]}
    assert same(protocol.decode_reply(protocol.ok_reply("r1", result)), ("r1", result))
    assert protocol.decode_reply(protocol.ok_reply(7, None)) == (7, None)


@pytest.mark.parametrize(
    "exc, cls",
    [
        (KeyError("nope"), errors.ServerKeyError),
        (IndexError("list index out of range"), errors.ServerIndexError),
        (ValueError("list.remove(x): x not in list"), errors.ServerValueError),
        (codec.UnsupportedTypeError("cannot store a value of type set at value"), errors.ServerTypeError),
        (errors.NotAllowedError("'mro' is not allowed"), errors.NotAllowedError),
        (errors.ReadOnlyError("read-only"), errors.ReadOnlyError),
        (errors.UndoError("nothing to undo"), errors.UndoError),
        (errors.ProtocolError("bad"), errors.ProtocolError),
    ],
)
def test_error_reply_raises_the_same_class(exc, cls):
    raised = reply_error(protocol.error_reply(3, exc))
    assert type(raised) is cls
    assert str(raised) == str(exc)


@pytest.mark.parametrize(
    "reply",
    [
        b"[]",
        b'{"v":2,"ok":true,"result":1}',
        b'{"ok":true,"result":1}',
        b'{"v":1,"result":1}',
        b'{"v":1,"ok":false}',
        b'{"v":1,"ok":false,"error":"KeyError"}',
        b'{"v":1,"ok":true,"result":NaN}',
        b"garbage",
    ],
)
def test_malformed_replies_raise_protocol_error(reply):
    assert type(reply_error(reply)) is errors.ProtocolError


# --- the Handler: every bad message gets an error reply and changes nothing --------


@pytest.mark.parametrize("message, error, match", INVALID.values(), ids=INVALID.keys())
def test_handler_answers_invalid_requests_with_errors(message, error, match):
    handler = Handler(make_store())
    before = copy.deepcopy(handler.store.root)
    raised = reply_error(handler.handle([message]))
    assert isinstance(raised, error)
    assert_untouched(handler.store, before)


STORE_REFUSALS = {
    "missing parent": (dict(op="set", path=["nope", "x"], args=[1]), errors.ServerKeyError),
    "index out of range": (dict(op="set", path=["l", 9], args=[1]), errors.ServerIndexError),
    "huge missing key": (dict(op="get", path=[{"$int": HUGE_HEX}]), errors.ServerKeyError),
    "delete huge missing key": (dict(op="delete", path=[{"$int": HUGE_HEX}]), errors.ServerKeyError),
    "slice not last": (
        dict(op="set", path=["l", {"$slice": [0, 2, None]}, 0], args=[1]),
        errors.NotAllowedError,
    ),
    "append to a dict": (dict(op="call", path=["d"], method="append", args=[1]), errors.NotAllowedError),
    "append no value": (dict(op="call", path=["l"], method="append"), errors.ServerTypeError),
    "sort key=": (dict(op="call", path=["l"], method="sort", kwargs={"key": "len"}), errors.NotAllowedError),
    "pop from empty": (dict(op="call", path=["e"], method="pop"), errors.ServerIndexError),
    "divide by zero": (
        dict(op="iop", path=["n"], method="truediv", args=[0]),
        errors.ServerZeroDivisionError,
    ),
    "repeat too much": (dict(op="iop", path=["l"], method="mul", args=[10**8]), errors.ServerValueError),
    "key not storable": (
        dict(op="call", path=["d"], method="update", args=[[[[1], 2]]]),
        errors.ServerTypeError,
    ),
}


@pytest.mark.parametrize("message, error", STORE_REFUSALS.values(), ids=STORE_REFUSALS.keys())
def test_handler_store_refusals_change_nothing(message, error):
    handler = Handler(make_store())
    before = copy.deepcopy(handler.store.root)
    assert type(reply_error(handler.handle([request(**message)]))) is error
    assert_untouched(handler.store, before)


@pytest.mark.parametrize(
    "method",
    [
        "__class__",
        "__init__",
        "__setitem__",
        "__reduce_ex__",
        "__getattribute__",
        "fromkeys",
        "mro",
        "_private",
        "format",
        "__len__",
        "sort\x00",
    ],
)
@pytest.mark.parametrize("path", [[], ["l"], ["d"], ["s"]])
def test_handler_refuses_methods_outside_the_allowlist(method, path):
    handler = Handler(make_store())
    before = copy.deepcopy(handler.store.root)
    message = request(op="call", path=path, method=method, args=[{"a": 1}] if method == "__init__" else [])
    assert type(reply_error(handler.handle([message]))) is errors.NotAllowedError
    assert_untouched(handler.store, before)


@pytest.mark.parametrize("frames", [[], [b"a", b"b"], [request(op="get"), request(op="get")]])
def test_handler_wants_exactly_one_frame(frames):
    handler = Handler(make_store())
    assert type(reply_error(handler.handle(frames))) is errors.ProtocolError


def test_handler_size_limit():
    handler = Handler(make_store(), max_message_bytes=100)
    before = copy.deepcopy(handler.store.root)
    assert (
        type(reply_error(handler.handle([request(op="set", path=["a"], args=["x" * 100])])))
        is errors.ProtocolError
    )
    assert_untouched(handler.store, before)
    assert protocol.decode_reply(handler.handle([request(op="set", path=["a"], args=["x"], id=4)])) == (
        4,
        None,
    )
    assert handler.store.root["a"] == "x"


@pytest.mark.parametrize(
    "op, path, method, depth_allowed",
    [
        ("set", ["a"], None, codec.MAX_DEPTH - 1),
        ("set", ["d", "a"], None, codec.MAX_DEPTH - 2),
        ("call", ["l"], "append", codec.MAX_DEPTH - 2),
        ("call", ["d"], "setdefault", codec.MAX_DEPTH - 2),
    ],
)
def test_depth_limit_keeps_the_whole_store_readable(op, path, method, depth_allowed):
    """The deepest value a write accepts still lets the client read the root; one level more is refused."""
    handler = Handler(make_store())
    prefix = ["k"] if method == "setdefault" else []
    before = copy.deepcopy(handler.store.root)
    too_deep = request(op=op, path=path, method=method, args=[*prefix, nest(depth_allowed + 1)])
    assert type(reply_error(handler.handle([too_deep]))) is errors.ProtocolError
    assert_untouched(handler.store, before)
    deepest = request(op=op, path=path, method=method, args=[*prefix, nest(depth_allowed)])
    protocol.decode_reply(handler.handle([deepest]))
    _, root = protocol.decode_reply(handler.handle([request(op="get", id=1)]))
    assert codec.depth_of(root) == codec.MAX_DEPTH
    assert same(root, handler.store.root)
