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
from contextlib import contextmanager
from typing import Any, Protocol

from pyzdb.errors import NotAllowedError
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


class Ref:
    """A lazy reference to a place in the store."""

    __slots__ = ("_conn", "_path")

    def __init__(self, conn: Transport, path: tuple = ()) -> None:
        self._conn = conn
        self._path = path

    def _run(self) -> Any:
        """Fetch the value at this path (one request)."""
        return self._conn.call("get", self._path)

    def __getitem__(self, key: Any) -> Ref:
        return Ref(self._conn, (*self._path, key))

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
        return self._conn.call("len", self._path)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._conn.call("iter", self._path))

    def __contains__(self, item: Any) -> bool:
        return self._conn.call("contains", self._path, args=(item,))

    def __bool__(self) -> bool:
        return self._conn.call("bool", self._path)

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return Method(self, name)

    def __repr__(self) -> str:
        return f"<pyzdb ref {describe(self._path)}>"

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


class Method:
    """A method of a stored value, called on the server."""

    __slots__ = ("_ref", "_name")

    def __init__(self, ref: Ref, name: str) -> None:
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


class Root(Ref):
    """The root of the store (``db``), with the server's own operations."""

    __slots__ = ()

    def save(self) -> None:
        """Write the snapshot on the server now."""
        self._conn.call("save")

    def stats(self) -> dict:
        """The server's statistics by section (SPEC §12): a read, answered by a replica if reads go to one."""
        return self._conn.call("stats")

    def undo(self) -> None:
        """Undo the newest write (raises ``UndoError`` when there is none)."""
        self._conn.call("undo")

    def redo(self) -> None:
        """Redo the newest undone write (raises ``UndoError`` when there is none)."""
        self._conn.call("redo")

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
    ) -> timeseries_proxy.CollectionRef:
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
        return timeseries_proxy.open_collection(self._conn, name, options)

    def timeseries_names(self) -> list[str]:
        """The names of the time-series collections."""
        return timeseries_proxy.names(self._conn)

    def lock(self) -> None:
        """Take exclusive use of the read-write server (waits for the current holder)."""
        self._conn.lock()

    def unlock(self) -> None:
        """Give the lock back."""
        self._conn.unlock()

    @contextmanager
    def locked(self) -> Iterator[Root]:
        """``with db.locked():`` holds the lock for the block and unlocks on any exit."""
        with self._conn.locked():
            yield self
