"""Request and reply messages: shapes, version, op table (no I/O).

Both ends use this module: the client to build requests and read replies,
the server to validate requests and build replies.  docs/protocol.md is the
description of the same format for other languages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyzdb import codec, errors
from pyzdb.ops import INPLACE_OPERATORS, WRITE_METHODS
from pyzdb.timeseries.calls import WRITE_CALLS as TIMESERIES_WRITE_CALLS

VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Default largest request a server accepts (``--max-message-size``)."""

# op -> (number of args, whether the path must be non-empty)
READ_OPS: dict[str, tuple[int, bool]] = {
    "get": (0, False),
    "len": (0, False),
    "iter": (0, False),
    "contains": (1, False),
    "bool": (0, False),
    "ping": (0, False),
    "stats": (0, False),
}
WRITE_OPS: dict[str, tuple[int, bool]] = {
    "set": (1, True),
    "delete": (0, True),
    "iop": (1, True),
}
CONTROL_OPS: dict[str, tuple[int, bool]] = {
    "save": (0, False),
    "undo": (0, False),
    "redo": (0, False),
    "lock": (0, False),
    "unlock": (0, False),
    "exec": (1, False),
}
"""Ops about the server rather than the data; all but ``ping`` need the read-write server."""


@dataclass(slots=True)
class Request:
    """A decoded, validated request."""

    op: str
    path: tuple = ()
    method: str | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    id: Any = None
    client: str | None = None
    seq: int | None = None
    token: str | None = None
    raw: bytes = field(default=b"", repr=False, compare=False)
    """The message as received: what the journal stores."""
    uploads: tuple = field(default=(), repr=False, compare=False)
    """Frames after the JSON one: contents of uploaded files (``$file`` with ``frame``)."""
    tags: frozenset = field(default=frozenset(), repr=False, compare=False)
    """The tags the message held, decoded (``"\\u0024file"`` counts as ``"$file"``)."""
    want_position: bool = False
    """A write whose reply should carry the writer's position after it (``"pos": true``)."""
    after: tuple | None = None
    """A read that must see the writes up to this position, ``(history, count)`` (``"after"``)."""

    @property
    def is_write(self) -> bool:
        """True if the request must go to the read-write server."""
        return is_write(self.op, self.method)


def is_write(op: str, method: str | None = None) -> bool:
    """True if ``op`` (with ``method`` for ``call``) needs the read-write server."""
    if op == "call":
        return method in WRITE_METHODS
    if op == "ts":  # a call on a time-series collection (pyzdb/timeseries/calls.py)
        return method in TIMESERIES_WRITE_CALLS
    return op not in READ_OPS


# --- client side -----------------------------------------------------------------


def encode_path(path: tuple) -> list:
    """Encode a path for the wire; slices become ``{"$slice": [start, stop, step]}``."""
    encoded = []
    for step in path:
        if type(step) is str:
            encoded.append(step)
        elif type(step) is slice:
            bounds = [step.start, step.stop, step.step]
            if not all(b is None or type(b) is int for b in bounds):
                raise TypeError("slice indices must be integers or None")
            encoded.append({"$slice": bounds})
        elif codec.is_valid_key(step):
            encoded.append(codec.encode(step, "path"))
        else:
            raise TypeError(f"cannot use a value of type {type(step).__name__} as a key or index")
    return encoded


def build_request(
    op: str,
    path: tuple = (),
    method: str | None = None,
    args: tuple = (),
    kwargs: dict | None = None,
    frames: list[bytes] | None = None,
    *,
    id: Any = None,  # noqa: A002 - the protocol's field name
    client: str | None = None,
    seq: int | None = None,
    token: str | None = None,
) -> dict:
    """Return the JSON-ready request; raises ``TypeError`` for values pyzdb cannot store.

    The contents of uploaded :class:`pyzdb.File` values are appended to ``frames``:
    send them as the request's frames after the JSON one.  ``id``, ``client``,
    ``seq`` and ``token`` go into the message when they are not ``None``.
    """
    message: dict[str, Any] = {"v": VERSION, "op": op}
    if path:
        message["path"] = encode_path(path)
    if method is not None:
        message["method"] = method
    if args:
        message["args"] = [codec.encode(arg, f"argument {i}", frames) for i, arg in enumerate(args)]
    if kwargs:
        message["kwargs"] = _encode_kwargs(kwargs, frames)
    if id is not None:
        message["id"] = id
    if client is not None:
        message["client"] = client
    if seq is not None:
        message["seq"] = seq
    if token is not None:
        message["token"] = token
    return message


def _encode_kwargs(kwargs: dict, frames: list[bytes] | None) -> Any:
    encoded = {k: codec.encode(v, f"argument {k}", frames) for k, v in kwargs.items()}
    if all(type(k) is str and not k.startswith("$") for k in encoded):
        return encoded
    # update(**{"$int": ...}) is legal Python: such names must not read as a tag
    return {"$dict": [[codec.encode(k, "keyword"), v] for k, v in encoded.items()]}


def encode_request(message: dict) -> bytes:
    """Serialise a request built by :func:`build_request`."""
    return codec.dumps(message)


def decode_reply(raw: bytes) -> tuple[Any, Any]:
    """Return ``(id, result)`` of a reply, or raise the error it carries."""
    request_id, result, _ = decode_reply_position(raw)
    return request_id, result


def decode_reply_position(raw: bytes) -> tuple[Any, Any, Any]:
    """Return ``(id, result, position)`` of a reply (position: ``None`` unless asked), or raise its error."""
    reply = codec.loads(raw)
    if type(reply) is not dict or reply.get("v") != VERSION or "ok" not in reply:
        raise errors.ProtocolError(f"not a pyzdb reply: {raw[:80]!r}")
    if reply["ok"] is True:
        return reply.get("id"), reply.get("result"), reply.get("pos")
    error = reply.get("error")
    if type(error) is not dict:
        raise errors.ProtocolError(f"error reply without an error: {raw[:80]!r}")
    raise errors.from_wire(str(error.get("type")), str(error.get("message")))


# --- server side -----------------------------------------------------------------


def decode_request(raw: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Request:
    """Parse and validate a request; raise :class:`ProtocolError` or ``NotAllowedError``."""
    if len(raw) > max_bytes:
        raise errors.ProtocolError(f"message of {len(raw)} bytes exceeds the limit of {max_bytes}")
    tags: dict[str, Any] = {}
    message = codec.loads(raw, tags)
    if type(message) is not dict or message is tags.get("$dict"):
        raise errors.ProtocolError("a request must be a JSON object (not a tag)")
    tagged = _tagged_members(raw) if "$int" in tags else ()
    if "id" in tagged:
        raise errors.ProtocolError("'id' must be a plain JSON string, integer or null, not a tag")
    request_id = _scalar(message.get("id"), "id")
    try:
        if tagged:
            raise errors.ProtocolError(f"{tagged[0]!r} must be a plain JSON value, not a tag")
        return _validate(message, raw, request_id, frozenset(tags))
    except errors.PyzdbError as exc:
        exc.request_id = request_id  # so the error reply can still be matched to its request
        raise


def _tagged_members(raw: bytes) -> tuple[str, ...]:
    """The envelope members (``v``, ``id``, ``seq``) that ``raw`` sends as tags (section 2: plain JSON)."""
    envelope = codec.loads_untagged(raw)
    return tuple(name for name in ("id", "v", "seq") if type(envelope.get(name)) is dict)


def _validate(message: dict, raw: bytes, request_id: Any, tags: frozenset) -> Request:
    version = message.get("v")
    if type(version) is not int or version != VERSION:  # true == 1 and 1.0 == 1 in Python
        raise errors.ProtocolError(
            f"unsupported protocol version {codec.brief(version)}; this server speaks {VERSION}"
        )
    op = message.get("op")
    if type(op) is not str:
        raise errors.ProtocolError("a request needs an 'op' string")
    path = _decode_path(message.get("path", []))
    args = message.get("args", [])
    kwargs = message.get("kwargs", {})
    if type(args) is not list or type(kwargs) is not dict:
        raise errors.ProtocolError("'args' must be an array and 'kwargs' an object")
    method = _typed(message.get("method"), str, "method")
    _check_shape(op, path, method, args, kwargs)
    if "$slice" in tags and _holds_slice_tag([args, kwargs]):
        raise errors.ProtocolError("$slice only has a meaning as a path step")
    # a method call puts its arguments inside the node at ``path``: one level deeper
    levels = len(path) + (op == "call")
    if _may_nest_deeper(raw, levels):
        _check_depth(path, levels, args, kwargs)
    client, seq, token = message.get("client"), message.get("seq"), message.get("token")
    if client is not None or seq is not None or token is not None:  # reads usually carry none
        _typed(client, str, "client")
        _typed(seq, int, "seq")
        _typed(token, str, "token")
    request = Request(op, path, method, tuple(args), kwargs, request_id, client, seq, token, raw, tags=tags)
    if "pos" in message or "after" in message:  # read-your-writes clients only
        _read_your_writes(request, message)
    return request


def _read_your_writes(request: Request, message: dict) -> None:
    want = message.get("pos", False)
    if type(want) is not bool:
        raise errors.ProtocolError("'pos' must be true or false")
    request.want_position = want
    after = message.get("after")
    if after is not None:
        if not (type(after) is list and len(after) == 2 and type(after[0]) is str and type(after[1]) is int):
            raise errors.ProtocolError("'after' must be [history, count]: a string and an integer")
        request.after = (after[0], after[1])


def _check_shape(op: Any, path: tuple, method: Any, args: list, kwargs: dict) -> None:
    if op in ("call", "ts"):
        if type(method) is not str:
            raise errors.ProtocolError(f"{op!r} needs a 'method' string")
        return
    if kwargs:
        raise errors.ProtocolError(f"{op!r} takes no keyword arguments")
    shape = READ_OPS.get(op) or WRITE_OPS.get(op) or CONTROL_OPS.get(op)
    if shape is None:
        raise errors.NotAllowedError(f"unknown operation {op!r}")
    nargs, needs_key = shape
    if len(args) != nargs:
        raise errors.ProtocolError(f"{op!r} takes {nargs} argument(s), got {len(args)}")
    if needs_key and not path:
        raise errors.ProtocolError(f"{op!r} needs a non-empty path")
    if op == "iop" and method not in INPLACE_OPERATORS:
        raise errors.NotAllowedError(f"in-place operator {method!r} is not allowed")


def _holds_slice_tag(value: Any) -> bool:
    """True if a decoded value holds a ``$slice`` tag (keys included)."""
    if type(value) is codec.SliceTag:
        return True
    if type(value) in (list, tuple):
        return any(_holds_slice_tag(item) for item in value)
    if type(value) is dict:
        return any(_holds_slice_tag(key) or _holds_slice_tag(item) for key, item in value.items())
    return False


def _decode_path(raw_path: Any) -> tuple:
    if type(raw_path) is not list:
        raise errors.ProtocolError("'path' must be an array")
    return tuple([step if type(step) is str else _decode_step(step) for step in raw_path])


def _decode_step(step: Any) -> Any:
    if type(step) is codec.SliceTag:
        bounds = step.payload
        if type(bounds) is not list or len(bounds) != 3:
            raise errors.ProtocolError("a $slice needs [start, stop, step]")
        if not all(b is None or type(b) is int for b in bounds):
            raise errors.ProtocolError("$slice bounds must be integers or null")
        return slice(*bounds)
    if not codec.is_valid_key(step):
        raise errors.ProtocolError(f"a path step cannot be a {type(step).__name__}")
    return step


def _may_nest_deeper(raw: bytes, levels: int) -> bool:
    """Cheap test: nesting depth is at most the number of brackets in the message."""
    return raw.count(b"[") + raw.count(b"{") > codec.MAX_DEPTH - levels


def _check_depth(path: tuple, levels: int, args: list, kwargs: dict) -> None:
    """Refuse a request that would make the store deeper than ``codec.MAX_DEPTH``.

    The arguments go ``levels`` down; a tuple key at step ``i`` of the path
    nests inside the dict that holds it, ``i + 1`` down (as ``codec.depth_of``
    counts the keys of a dict).
    """
    try:
        depth = levels + codec.depth_of([args, list(kwargs.values())]) - 2
        keys = (i + 1 + codec.depth_of(step) for i, step in enumerate(path) if type(step) is tuple)
        depth = max(depth, *keys, 0)
    except RecursionError:
        depth = codec.MAX_DEPTH + 1
    if depth > codec.MAX_DEPTH:
        raise errors.ProtocolError(f"data nested deeper than {codec.MAX_DEPTH} levels")


def _scalar(value: Any, name: str) -> Any:
    # the id is echoed as a bare JSON number: a huge one could not be serialised back
    if type(value) is int and -codec.MAX_SAFE_INT <= value <= codec.MAX_SAFE_INT:
        return value
    if value is not None and type(value) is not str:
        raise errors.ProtocolError(f"{name!r} must be a string or an integer of at most 2**53")
    return value


def _typed(value: Any, kind: type, name: str) -> Any:
    if value is not None and type(value) is not kind:
        raise errors.ProtocolError(f"{name!r} must be of type {kind.__name__}")
    return value


def ok_reply(request_id: Any, result: Any, position: tuple | None = None) -> bytes:
    """Serialise a success reply; ``result`` is encoded here; ``position``: the writer's, for ``"pos"``."""
    reply = {"v": VERSION, "id": request_id, "ok": True, "result": codec.encode(result, "result")}
    if position is not None:
        reply["pos"] = list(position)
    return codec.dumps(reply)


def error_reply(request_id: Any, exc: BaseException) -> bytes:
    """Serialise an error reply for ``exc``."""
    name, message = errors.to_wire(exc)
    return codec.dumps(
        {"v": VERSION, "id": request_id, "ok": False, "error": {"type": name, "message": message}}
    )
