"""The lazy reference: Python syntax in, requests out (no I/O of its own).

``db['a'][0]['b']`` builds a :class:`Ref` whose path is ``('a', 0, 'b')``
and sends nothing.  Each use that needs the server (``_run()``, iteration,
``len``, ``in``, assignment, deletion, a method call, an in-place operator)
calls ``conn.call(op, path, method, args, kwargs)`` exactly once, so the same
references work over any transport that offers ``call``.

Item access never turns into a method: ``db['append']`` is the key
``'append'``, ``db.append`` is the method.  Names starting with ``_`` are the
reference's own (``_run``, ``_path``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from pyzdb import codec, protocol
from pyzdb.errors import NotAllowedError, ProtocolError
from pyzdb.timeseries import proxy as timeseries_proxy


class Transport(Protocol):
    """What a reference needs from a connection."""

    def call(
        self,
        op: str,
        path: tuple = (),
        method: str | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Any:
        """Send one request and return its result."""


def describe(path: tuple, root: str = "db") -> str:
    """``db['l'][4]`` for the path ``('l', 4)``."""
    return root + "".join(f"[{_step(key)}]" for key in path)


def _step(key: Any) -> str:
    if type(key) is not slice:
        return repr(key)
    text = ":".join("" if bound is None else repr(bound) for bound in (key.start, key.stop, key.step))
    return text[:-1] if key.step is None else text


INPLACE_SPELLINGS = {
    "+=": "add",
    "-=": "sub",
    "*=": "mul",
    "/=": "truediv",
    "//=": "floordiv",
    "%=": "mod",
    "|=": "or",
}
"""``ref._iop(spelling, value)``: the operator spelling -> the protocol's operator name."""


class BaseRef:
    """What every reference has, whatever its transport: a path, and one ``call`` per use.

    Each spelled operation (``_run``, ``_set``, ``_len``, ...) returns what the
    connection's ``call`` returns: the result for the sync client, an
    awaitable for the asyncio one.  The subclasses add the Python statements
    (:class:`Ref`) or refuse them (``pyzdb.aio.AsyncRef``).
    """

    __slots__ = ("_conn", "_path")
    _child: type[BaseRef]
    """The class of ``ref[key]`` (set below each subclass)."""

    def __init__(self, conn: Transport, path: tuple = ()) -> None:
        self._conn = conn
        self._path = path

    def __getitem__(self, key: Any) -> Any:
        return self._child(self._conn, (*self._path, key))

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return Method(self, name)

    def __repr__(self) -> str:
        return f"<pyzdb ref {describe(self._path)}>"

    def _run(self) -> Any:
        """Fetch the value at this path (one request)."""
        return self._conn.call("get", self._path)

    def _set(self, value: Any) -> Any:
        """Store ``value`` at this path (``ref[key] = value`` one level up)."""
        return self._conn.call("set", self._path, args=(value,))

    def _delete(self) -> Any:
        """Delete the value at this path (``del ref[key]`` one level up)."""
        return self._conn.call("delete", self._path)

    def _len(self) -> Any:
        """``len()`` of the value at this path."""
        return self._conn.call("len", self._path)

    def _contains(self, item: Any) -> Any:
        """``item in`` the value at this path."""
        return self._conn.call("contains", self._path, args=(item,))

    def _bool(self) -> Any:
        """``bool()`` of the value at this path."""
        return self._conn.call("bool", self._path)

    def _items(self) -> Any:
        """The list of what iterating the value gives (list items, dict keys), in one request."""
        return self._conn.call("iter", self._path)

    def _iop(self, operator: str, other: Any) -> Any:
        """Run an in-place operator (``'+='``, ``'-='``, ...) atomically on the server."""
        name = INPLACE_SPELLINGS.get(operator)
        if name is None:
            raise ValueError(
                f"unknown in-place operator {operator!r}; use one of {' '.join(INPLACE_SPELLINGS)}"
            )
        return self._conn.call("iop", self._path, method=name, args=(other,))


class Ref(BaseRef):
    """A lazy reference to a place in the store (the sync client's: statements run at once)."""

    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:
        path = (*self._path, key)
        if isinstance(value, Ref):
            if value._conn is self._conn and value._path == path:
                return  # the tail of ``ref[key] op= x``: the server already did it
            value = value._run()
        self._conn.call("set", path, args=(value,))

    def __delitem__(self, key: Any) -> None:
        self._conn.call("delete", (*self._path, key))

    def __len__(self) -> int:
        return self._len()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items())

    def _stream(
        self, page_bytes: int = 1 << 20, page_items: int = 1000, consistent: bool = True
    ) -> Iterator[Any]:
        """Yield the items (list elements, dict keys) page by page, each page one request.

        No page on the wire exceeds ``page_bytes``, and one page at a time is
        held.  With ``consistent``, a change to the value between pages raises
        ``ChangedError``; without, the stream goes on (items may repeat or be
        missed, as with Redis' SCAN).
        """
        cursor = protocol.Cursor(page_bytes, page_items, consistent)
        while not cursor.done:
            yield from cursor.take(self._conn.call("page", self._path, args=cursor.args()))

    def __contains__(self, item: Any) -> bool:
        return self._contains(item)

    def __bool__(self) -> bool:
        return self._bool()

    def _inplace(self, operator: str, other: Any) -> Ref:
        self._conn.call("iop", self._path, method=operator, args=(other,))
        return self

    def __iadd__(self, other: Any) -> Ref:
        return self._inplace("add", other)

    def __isub__(self, other: Any) -> Ref:
        return self._inplace("sub", other)

    def __imul__(self, other: Any) -> Ref:
        return self._inplace("mul", other)

    def __itruediv__(self, other: Any) -> Ref:
        return self._inplace("truediv", other)

    def __ifloordiv__(self, other: Any) -> Ref:
        return self._inplace("floordiv", other)

    def __imod__(self, other: Any) -> Ref:
        return self._inplace("mod", other)

    def __ior__(self, other: Any) -> Ref:
        return self._inplace("or", other)


Ref._child = Ref


class Method:
    """A method of a stored value, called on the server."""

    __slots__ = ("_ref", "_name")

    def __init__(self, ref: BaseRef, name: str) -> None:
        self._ref = ref
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if callable(value):
                raise NotAllowedError(
                    f"{self._name}() cannot take {value!r}: callables never leave the client"
                )
        return self._ref._conn.call("call", self._ref._path, method=self._name, args=args, kwargs=kwargs)

    def __repr__(self) -> str:
        return f"<pyzdb method {describe(self._ref._path)}.{self._name}>"


class RootOps:
    """The server's own operations on the root reference, shared by both clients."""

    __slots__ = ()
    _conn: Transport

    def save(self) -> Any:
        """Write the snapshot on the server now."""
        return self._conn.call("save")

    def stats(self) -> dict:
        """The server's statistics by section (SPEC §12): a read, answered by a replica if reads go to one."""
        return self._conn.call("stats")

    def undo(self) -> Any:
        """Undo the newest write (raises ``UndoError`` when there is none)."""
        return self._conn.call("undo")

    def redo(self) -> Any:
        """Redo the newest undone write (raises ``UndoError`` when there is none)."""
        return self._conn.call("redo")

    def lock(self) -> Any:
        """Take exclusive use of the read-write server (waits for the current holder)."""
        return self._conn.lock()

    def unlock(self) -> Any:
        """Give the lock back."""
        return self._conn.unlock()

    def locked(self) -> Any:
        """``with db.locked():`` (``async with`` on the asyncio client) holds the lock for the block."""
        return self._conn.locked()

    def batch(self) -> Batch:
        """``with db.batch() as b:`` (``async with`` on the asyncio client): one all-or-nothing request."""
        return self._conn.batch()

    def timeseries(
        self,
        name: str,
        *,
        schema: dict | None = timeseries_proxy.DEFAULT_SCHEMA,
        index: Any = timeseries_proxy.DEFAULT_INDEX,
        grid: Any = timeseries_proxy.DEFAULT_GRID,
        vantage_points: int = timeseries_proxy.DEFAULT_VANTAGE_POINTS,
        duplicate_policy: str = timeseries_proxy.DEFAULT_DUPLICATE_POLICY,
        retention: float = timeseries_proxy.DEFAULT_RETENTION,
    ) -> Any:
        """The time-series collection ``name``, created when it does not exist (SPEC §8).

        Options passed that differ from an existing collection's raise ``ValueError``;
        ``db.timeseries(name)`` alone opens it as it is.
        """
        options = {
            "schema": schema,
            "index": index,
            "grid": grid,
            "vantage_points": vantage_points,
            "duplicate_policy": duplicate_policy,
            "retention": retention,
        }
        return self._collection(name, options)

    def timeseries_names(self) -> list[str]:
        """The names of the time-series collections."""
        return timeseries_proxy.names(self._conn)

    def _collection(self, name: str, options: dict) -> Any:
        raise NotImplementedError


class Root(RootOps, Ref):
    """The root of the store (``db``), with the server's own operations."""

    __slots__ = ()

    def _collection(self, name: str, options: dict) -> timeseries_proxy.CollectionRef:
        return timeseries_proxy.open_collection(self._conn, name, options)


# --- batches ---------------------------------------------------------------------

_UNSET = object()


class Placeholder:
    """The result of a read (or write) recorded in a batch; ``.value`` is set once the batch ran."""

    __slots__ = ("index", "_value")

    def __init__(self, index: int) -> None:
        self.index = index
        """The operation's position in the batch."""
        self._value: Any = _UNSET

    @property
    def value(self) -> Any:
        """The operation's result; ``LookupError`` until the batch has run."""
        if self._value is _UNSET:
            raise LookupError(f"operation {self.index} of the batch has not run (yet)")
        return self._value

    def __repr__(self) -> str:
        shown = "pending" if self._value is _UNSET else repr(self._value)
        return f"<pyzdb batch result {self.index}: {shown}>"


class Recorder:
    """The transport of a batch's references: each call is recorded, encoded, not sent (no I/O)."""

    __slots__ = ("operations", "writes", "placeholders")

    def __init__(self) -> None:
        self.operations: list[dict] = []
        self.writes = 0
        self.placeholders: list[Placeholder] = []

    def call(
        self,
        op: str,
        path: tuple = (),
        method: str | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Placeholder:
        """Record one operation (values checked now: ``TypeError``); return its placeholder."""
        if op in protocol.REFUSED_IN_BATCH:
            raise NotAllowedError(f"{op}() is refused in a batch")
        uploads: list[bytes] = []
        operation = protocol.build_request(op, path, method, args, kwargs, uploads)
        if uploads:
            raise NotAllowedError("a batch cannot upload files; send each file in a write of its own")
        del operation["v"]
        self.operations.append(operation)
        self.writes += protocol.is_write(op, method)
        placeholder = Placeholder(len(self.placeholders))
        self.placeholders.append(placeholder)
        return placeholder

    def lock(self) -> None:
        """Refused: a batch is one request."""
        raise NotAllowedError("lock() is refused in a batch")

    unlock = locked = batch = lock


class Batch(Ref):
    """``with conn.batch() as b:`` records ``b['x'] = 1``, ``b['l'].append(2)``, ... and sends them as one.

    Nothing is sent until the block exits cleanly (nothing at all if it
    raises).  The server applies the operations in order, all or nothing; on
    a failure the client raises that operation's error, with
    ``.batch_index``.  Each recorded call returns a :class:`Placeholder`;
    ``b.results`` lists every result once the batch has run.  With the
    asyncio client, use ``async with``.
    """

    __slots__ = ("_target", "_asynchronous", "results")

    def __init__(self, target: Any, asynchronous: bool = False) -> None:
        super().__init__(Recorder())
        self._target = target
        self._asynchronous = asynchronous
        self.results: list | None = None
        """Every operation's result, in order, once the batch has run."""

    def save(self) -> None:
        """Refused in a batch (so are ``undo``, ``redo``, ``lock`` and exec)."""
        raise NotAllowedError("save() is refused in a batch")

    def undo(self) -> None:
        """Refused in a batch."""
        raise NotAllowedError("undo() is refused in a batch")

    def redo(self) -> None:
        """Refused in a batch."""
        raise NotAllowedError("redo() is refused in a batch")

    def lock(self) -> None:
        """Refused in a batch."""
        raise NotAllowedError("lock() is refused in a batch")

    def _request(self) -> tuple[list[dict], bool] | None:
        recorder: Recorder = self._conn
        if self.results is not None:
            raise RuntimeError("this batch has already run")
        if not recorder.operations:
            self.results = []
            return None
        return recorder.operations, recorder.writes > 0

    def _settle(self, results: Any) -> None:
        placeholders = self._conn.placeholders
        if type(results) is not list or len(results) != len(placeholders):
            raise ProtocolError(f"a batch of {len(placeholders)} got a reply of {codec.brief(results)}")
        for placeholder, result in zip(placeholders, results, strict=True):
            placeholder._value = result
        self.results = results

    def __enter__(self) -> Batch:
        if self._asynchronous:
            raise TypeError("the asyncio client's batch needs 'async with conn.batch() as b:'")
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None and (request := self._request()) is not None:
            self._settle(self._target.run_batch(*request))

    async def __aenter__(self) -> Batch:
        if not self._asynchronous:
            raise TypeError("the sync client's batch needs 'with conn.batch() as b:'")
        return self

    async def __aexit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None and (request := self._request()) is not None:
            self._settle(await self._target.run_batch(*request))


Batch._child = Ref
