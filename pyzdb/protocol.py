"""Request and reply messages: shapes, version, op table (no I/O).

Both ends use this module: the client to build requests and read replies,
the server to validate requests and build replies.  docs/protocol.md is the
description of the same format for other languages.
"""

from __future__ import annotations

import os
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
    "page": (4, False),
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
MAX_BATCH_OPS = 10_000
"""Default most operations in one ``batch`` request (``--max-batch-ops``)."""
REFUSED_IN_BATCH = frozenset({"save", "undo", "redo", "lock", "unlock", "exec", "batch", "ping"})


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
    ops: tuple = field(default=(), repr=False, compare=False)
    """For ``batch``: the operations, each a :class:`Request` without envelope."""
    max_reply: int | None = None
    """The client's ``memory_limit``: a longer reply is replaced by a ``TooLargeError`` one."""
    want_position: bool = False
    """A write whose reply should carry the writer's position after it (``"pos": true``)."""
    after: tuple | None = None
    """A read that must see the writes up to this position, ``(history, count)`` (``"after"``)."""

    @property
    def is_write(self) -> bool:
        """True if the request must go to the read-write server (a batch: if it holds a write)."""
        if self.op == "batch":
            return any(operation.is_write for operation in self.ops)
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


def parse_reply(raw: bytes) -> dict:
    """Parse a reply into its JSON object (``id``, ``ok``, ...) without raising the error it may carry.

    A transport that has many requests in flight reads the ``id`` here to find
    the request, then :func:`reply_result` gives the result or raises.
    """
    reply = codec.loads(raw)
    if type(reply) is not dict or reply.get("v") != VERSION or "ok" not in reply:
        raise errors.ProtocolError(f"not a pyzdb reply: {raw[:80]!r}")
    return reply


def reply_result(reply: dict) -> Any:
    """The result of a reply parsed by :func:`parse_reply`, or raise the error it carries."""
    if reply["ok"] is True:
        return reply.get("result")
    error = reply.get("error")
    if type(error) is not dict:
        raise errors.ProtocolError(f"error reply without an error: {codec.brief(reply)}")
    exc = errors.from_wire(str(error.get("type")), str(error.get("message")))
    if type(error.get("batch_index")) is int:
        exc.batch_index = error["batch_index"]
    raise exc


def decode_reply(raw: bytes) -> tuple[Any, Any]:
    """Return ``(id, result)`` of a reply, or raise the error it carries."""
    reply = parse_reply(raw)
    return reply.get("id"), reply_result(reply)


class ClientState:
    """What a client connection keeps between requests, whatever its transport (no I/O).

    The sync and asyncio clients share it (the sans-I/O model of h11):
    :meth:`prepare` validates and encodes a call's values at once (``TypeError``
    for a value pyzdb cannot store), :meth:`stamp` gives it its ``id``, and for
    a write its ``client`` and ``seq``, when it is sent, and returns the frames
    to send (and to resend, byte for byte, on a retry).
    """

    __slots__ = ("client_id", "counter", "token", "max_reply", "read_your_writes", "position")

    def __init__(self, max_reply: int | None = None, read_your_writes: bool = False) -> None:
        if max_reply is not None and (type(max_reply) is not int or max_reply < 1):
            raise ValueError(f"memory_limit must be a positive number of bytes, not {max_reply!r}")
        self.max_reply = max_reply
        """The connection's ``memory_limit``: sent with every request, checked on every reply."""
        self.client_id = os.urandom(8).hex()
        self.counter = 0
        """The last ``id`` used; a write's ``seq`` is its ``id``, so writes are numbered in send order."""
        self.token: str | None = None
        """The lock token while this connection holds the lock."""
        self.read_your_writes = read_your_writes
        """Writes ask for the writer's position; reads sent to replicas must have reached it (SPEC §12)."""
        self.position: tuple[str, int] | None = None
        """The writer's position after this connection's newest acknowledged write."""

    def prepare(
        self,
        op: str,
        path: tuple = (),
        method: str | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Outgoing:
        """Build a request (not yet numbered); raises ``TypeError`` for values pyzdb cannot store."""
        uploads: list[bytes] = []
        message = build_request(op, path, method, args, kwargs, uploads)
        return Outgoing(message, uploads, is_write(op, method))

    def prepare_batch(self, operations: list[dict], write: bool) -> Outgoing:
        """A ``batch`` request of operations recorded by :class:`pyzdb.proxy.Batch` (already encoded)."""
        return Outgoing({"v": VERSION, "op": "batch", "ops": operations}, [], write)

    def stamp(self, outgoing: Outgoing, to_replica: bool = False) -> list[bytes]:
        """Number ``outgoing`` (and add the lock token if held); return its frames.

        With read-your-writes, a write asks for the writer's position (``pos``) and
        a read for a replica (``to_replica``) names the position it must have
        reached (``after``).
        """
        self.counter += 1
        message = outgoing.message
        if self.read_your_writes:
            message.pop("after", None)
            if outgoing.write:
                message["pos"] = True
            elif to_replica and self.position is not None:
                message["after"] = list(self.position)
        message["id"] = outgoing.id = self.counter
        if outgoing.write:
            message["client"] = self.client_id
            message["seq"] = self.counter
        if self.token is not None:
            message["token"] = self.token
        if self.max_reply is not None:
            message["max_reply"] = self.max_reply
        return [encode_request(message), *outgoing.uploads]

    def check_size(self, raw: bytes) -> None:
        """Refuse a reply over ``memory_limit`` (a server that ignored ``max_reply``)."""
        if self.max_reply is not None and len(raw) > self.max_reply:
            raise errors.TooLargeError(too_large_message(len(raw), self.max_reply))

    def result(self, raw: bytes) -> Any:
        """The result of a reply (or raise its error), noting the writer's position it carries."""
        self.check_size(raw)
        return self.result_of(parse_reply(raw))

    def result_of(self, reply: dict) -> Any:
        """The result of a reply parsed by :func:`parse_reply` (or raise its error), noting its position."""
        result = reply_result(reply)
        position = reply.get("pos")
        if type(position) is list and len(position) == 2 and type(position[1]) is int:
            known = self.position
            if known is None or position[0] != known[0] or position[1] > known[1]:
                self.position = (position[0], position[1])
        return result


@dataclass(slots=True)
class Outgoing:
    """A request prepared by :meth:`ClientState.prepare`."""

    message: dict
    uploads: list[bytes]
    write: bool
    id: int | None = None


class Cursor:
    """Where a stream is: the arguments of its next ``page`` request, and what a page says (no I/O).

    Streams are stateless on the server: each page request names its start
    (an index into the list, or into the dict's keys) and, when
    ``consistent``, the version of the first page, so pages may come from
    different servers and nothing is left open when a client goes away.
    """

    __slots__ = ("start", "page_items", "page_bytes", "consistent", "since", "done")

    def __init__(self, page_bytes: int, page_items: int, consistent: bool) -> None:
        if type(page_bytes) is not int or page_bytes < 256:
            raise ValueError(f"page_bytes must be an integer of at least 256, not {page_bytes!r}")
        if type(page_items) is not int or not 1 <= page_items <= 1_000_000:
            raise ValueError(f"page_items must be an integer from 1 to 1,000,000, not {page_items!r}")
        self.page_bytes, self.page_items, self.consistent = page_bytes, page_items, bool(consistent)
        self.start = 0
        self.since: int | None = None
        self.done = False

    def args(self) -> tuple:
        """The arguments of the next ``page`` request."""
        return (self.start, self.page_items, self.page_bytes, self.since)

    def take(self, page: Any) -> list:
        """The items of a page's result; moves the cursor on."""
        if type(page) is not dict or type(page.get("items")) is not list:
            raise errors.ProtocolError(f"not a page: {codec.brief(page)}")
        following = page.get("next")
        if following is None:
            self.done = True
        elif type(following) is not int or following <= self.start:
            raise errors.ProtocolError(f"a page's 'next' must move on, got {codec.brief(following)}")
        else:
            self.start = following
        if self.consistent and self.since is None:
            self.since = page.get("version")
        return page["items"]


def too_large_message(size: int, limit: int) -> str:
    """The text of the ``TooLargeError`` for a reply of ``size`` bytes over ``limit``."""
    return f"the reply of {size} bytes exceeds this connection's memory_limit of {limit} bytes"


def timeout_message(uri: str, timeout: float, write: bool) -> str:
    """The text of the ``TimeoutError`` both clients raise when a request gets no reply."""
    text = f"no reply from {uri} within {timeout:g} s"
    return text + "; the write may or may not have been applied" if write else text


# --- server side -----------------------------------------------------------------


def decode_request(
    raw: bytes, max_bytes: int = MAX_MESSAGE_BYTES, max_batch_ops: int = MAX_BATCH_OPS
) -> Request:
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
        if message.get("op") == "batch":
            return _validate_batch(message, raw, request_id, frozenset(tags), max_batch_ops)
        return _validate(message, raw, request_id, frozenset(tags))
    except errors.PyzdbError as exc:
        exc.request_id = request_id  # so the error reply can still be matched to its request
        raise


def _tagged_members(raw: bytes) -> tuple[str, ...]:
    """The envelope members (``v``, ``id``, ``seq``) that ``raw`` sends as tags (section 2: plain JSON)."""
    envelope = codec.loads_untagged(raw)
    return tuple(name for name in ("id", "v", "seq") if type(envelope.get(name)) is dict)


def _validate(
    message: dict, raw: bytes, request_id: Any, tags: frozenset, brackets: int | None = None
) -> Request:
    """Check one request (or one operation of a batch, with the batch's ``brackets`` counted once)."""
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
    if _may_nest_deeper(raw, levels, brackets):
        _check_depth(path, levels, args, kwargs)
    client, seq, token = message.get("client"), message.get("seq"), message.get("token")
    if client is not None or seq is not None or token is not None:  # reads usually carry none
        _typed(client, str, "client")
        _typed(seq, int, "seq")
        _typed(token, str, "token")
    max_reply = message.get("max_reply")
    if max_reply is not None and (type(max_reply) is not int or max_reply < 1):
        raise errors.ProtocolError("'max_reply' must be a positive integer")
    request = Request(
        op,
        path,
        method,
        tuple(args),
        kwargs,
        request_id,
        client,
        seq,
        token,
        raw,
        tags=tags,
        max_reply=max_reply,
    )
    if "pos" in message or "after" in message:  # read-your-writes clients only
        _read_your_writes(request, message)
    return request


def _validate_batch(message: dict, raw: bytes, request_id: Any, tags: frozenset, limit: int) -> Request:
    """A ``batch``: the envelope as any request's, then each operation as a request of its own."""
    envelope = _validate({**message, "op": "ping"}, raw, request_id, tags)
    operations = message.get("ops")
    if type(operations) is not list or not operations:
        raise errors.ProtocolError("a 'batch' needs an 'ops' array of at least one operation")
    if "$file" in tags:
        raise errors.ProtocolError("a batch cannot store files; send each file in a write of its own")
    if len(operations) > limit:
        raise errors.ProtocolError(
            f"a batch of {len(operations)} operations exceeds the limit of {limit} (--max-batch-ops)"
        )
    decoded = []
    brackets = _brackets(raw)  # counted once: per operation it made a batch quadratic
    for index, operation in enumerate(operations):
        try:
            decoded.append(_batch_operation(operation, raw, tags, brackets))
        except errors.PyzdbError as exc:
            exc.batch_index = index
            raise
    return Request(
        "batch", (), None, (), {}, request_id, envelope.client, envelope.seq, envelope.token, raw,
        tags=tags, ops=tuple(decoded), max_reply=envelope.max_reply,
    )  # fmt: skip


def _batch_operation(operation: Any, raw: bytes, tags: frozenset, brackets: int) -> Request:
    if type(operation) is not dict:
        raise errors.ProtocolError("each operation of a batch must be a JSON object")
    op = operation.get("op")
    if op in REFUSED_IN_BATCH:
        raise errors.NotAllowedError(f"{op!r} is refused in a batch")
    extra = {"id", "client", "seq", "token", "v", "max_reply"} & operation.keys()
    if extra:
        raise errors.ProtocolError(f"an operation of a batch has no {sorted(extra)[0]!r} of its own")
    return _validate({**operation, "v": VERSION}, raw, None, tags, brackets)


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


def _brackets(raw: bytes) -> int:
    return raw.count(b"[") + raw.count(b"{")


def _may_nest_deeper(raw: bytes, levels: int, brackets: int | None = None) -> bool:
    """Cheap test: nesting depth is at most the number of brackets in the message."""
    return (_brackets(raw) if brackets is None else brackets) > codec.MAX_DEPTH - levels


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
    """Serialise an error reply for ``exc`` (with its ``batch_index`` when it failed a batch)."""
    name, message = errors.to_wire(exc)
    error: dict[str, Any] = {"type": name, "message": message}
    batch_index = getattr(exc, "batch_index", None)
    if type(batch_index) is int:
        error["batch_index"] = batch_index
    return codec.dumps({"v": VERSION, "id": request_id, "ok": False, "error": error})
