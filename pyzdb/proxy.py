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

from pyzdb.errors import NotAllowedError


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


class Root(RootOps, Ref):
    """The root of the store (``db``), with the server's own operations."""

    __slots__ = ()
