"""The operations pyzdb runs on the store, and nothing else (no I/O).

This module is the allowlist.  Reads return a value; writes are *planned*:
:func:`plan_write` works out the patches that make the change and the patches
that undo it, without touching the store, so a write that fails changes
nothing, and the change, its undo and its redo are the same kind of data.

Allowed methods (SPEC §3)::

    dict: keys values items get copy | setdefault pop popitem update clear
    list: index count copy            | append extend insert remove pop sort reverse clear

In-place operators: ``+= -= *= /= //= %=`` on any value or list slice, list ``+=`` / ``*=``
in place, dict ``|=``.  Names starting with ``_``, unknown names and keyword
arguments other than ``sort(reverse=)`` and ``update(**pairs)`` are refused
with :class:`NotAllowedError` before the store is read.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyzdb import formatsize
from pyzdb.codec import MAX_INT_BITS, check_key_hashes, is_valid_key
from pyzdb.errors import NotAllowedError
from pyzdb.tree import Patch, Path, resolve

READ_METHODS = frozenset({"keys", "values", "items", "get", "copy", "index", "count"})
WRITE_METHODS = frozenset(
    {"setdefault", "pop", "popitem", "update", "clear"}
    | {"append", "extend", "insert", "remove", "sort", "reverse"}
)
INPLACE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "or": operator.or_,
}
MAX_REPEAT = 10_000_000
"""Largest sequence (items, characters, bytes) an in-place ``*=`` or ``%=`` may build (guards memory)."""
_SEQUENCES = (list, str, bytes, tuple)

# method name -> (min positional args, max positional args, allowed keyword names)
_SIGNATURES: dict[type, dict[str, tuple[int, int, frozenset | None]]] = {
    dict: {
        "keys": (0, 0, frozenset()),
        "values": (0, 0, frozenset()),
        "items": (0, 0, frozenset()),
        "get": (1, 2, frozenset()),
        "copy": (0, 0, frozenset()),
        "setdefault": (1, 2, frozenset()),
        "pop": (1, 2, frozenset()),
        "popitem": (0, 0, frozenset()),
        "update": (0, 1, None),
        "clear": (0, 0, frozenset()),
    },
    list: {
        "index": (1, 3, frozenset()),
        "count": (1, 1, frozenset()),
        "copy": (0, 0, frozenset()),
        "append": (1, 1, frozenset()),
        "extend": (1, 1, frozenset()),
        "insert": (2, 2, frozenset()),
        "remove": (1, 1, frozenset()),
        "pop": (0, 1, frozenset()),
        "sort": (0, 0, frozenset({"reverse"})),
        "reverse": (0, 0, frozenset()),
        "clear": (0, 0, frozenset()),
    },
}


@dataclass
class Change:
    """A planned write: its result, the patches that make it, and those that undo it."""

    result: Any = None
    forward: list[Patch] = field(default_factory=list)
    inverse: list[Patch] = field(default_factory=list)


def check_method(node: Any, name: str, args: list, kwargs: dict) -> None:
    """Refuse a method call outside the allowlist or with the wrong arguments."""
    if not isinstance(name, str) or name.startswith("_"):
        raise NotAllowedError(f"{name!r} is not allowed: pyzdb runs only data operations")
    allowed = _SIGNATURES.get(type(node), {})
    if name not in allowed:
        kind = type(node).__name__
        names = " ".join(sorted(allowed)) or "none"
        raise NotAllowedError(f"{kind!r} has no allowed operation {name!r} (allowed: {names})")
    low, high, keywords = allowed[name]
    if not low <= len(args) <= high:
        expected = str(low) if low == high else f"{low} to {high}"
        raise TypeError(f"{name}() takes {expected} arguments ({len(args)} given)")
    if keywords is not None:
        for keyword in kwargs:
            if keyword not in keywords:
                raise NotAllowedError(f"{name}() does not accept the keyword {keyword!r}")


def read(root: Any, op: str, path: Path, method: str | None, args: list, kwargs: dict) -> Any:
    """Run a read operation and return its result (a live value: encode it before changes)."""
    node = resolve(root, path)
    if op == "get":
        return node
    if op == "len":
        return len(node)
    if op == "iter":
        return list(node)
    if op == "contains":
        return args[0] in node
    if op == "bool":
        return bool(node)
    check_method(node, method, args, kwargs)
    if method in WRITE_METHODS:
        raise NotAllowedError(f"{method}() changes the store; send it as a write")
    result = getattr(node, method)(*args)
    return list(result) if method in ("keys", "values", "items") else result


def plan_write(root: Any, op: str, path: Path, method: str | None, args: list, kwargs: dict) -> Change:
    """Plan a write without changing the store; raise as Python would if it cannot run."""
    if any(type(key) is slice for key in path[:-1]):
        raise NotAllowedError("a slice may only be the last step of a path that is written")
    if op == "call":
        if path and type(path[-1]) is slice:
            raise NotAllowedError(f"{method}() on a slice would only change a copy of it")
        node = resolve(root, path)
        check_method(node, method, args, kwargs)
        if method not in WRITE_METHODS:
            raise NotAllowedError(f"{method}() does not change the store; send it as a read")
        return _METHOD_PLANNERS[type(node), method](node, path, *args, **kwargs)
    if not path:
        raise NotAllowedError(f"{op!r} needs a key: the root itself cannot be replaced")
    parent_path, key = path[:-1], path[-1]
    parent = resolve(root, parent_path)
    if op == "set":
        return _plan_set(parent, parent_path, key, args[0])
    if op == "delete":
        return _plan_delete(parent, parent_path, key)
    if op == "iop":
        return _plan_inplace(parent, parent_path, key, method, args[0])
    raise NotAllowedError(f"unknown write operation {op!r}")


# --- item assignment and deletion ------------------------------------------------


def _plan_set(parent: Any, path: Path, key: Any, value: Any) -> Change:
    if type(parent) is dict:
        _check_key(key)
        if key in parent:
            return Change(None, [("set", path, key, value)], [("set", path, key, parent[key])])
        return Change(None, [("set", path, key, value)], [("delete", path, key)])
    if type(parent) is list:
        if type(key) is slice:
            return _plan_set_slice(parent, path, key, value)
        index = _list_index(parent, key, "list assignment index out of range")
        return Change(None, [("set", path, index, value)], [("set", path, index, parent[index])])
    raise TypeError(f"{type(parent).__name__!r} object does not support item assignment")


def _plan_set_slice(parent: list, path: Path, key: slice, value: Any) -> Change:
    start, stop, step = key.indices(len(parent))  # first, as Python: a zero step is a ValueError
    values = _as_list(
        value, "can only assign an iterable" if step == 1 else "must assign iterable to extended slice"
    )
    if step == 1:
        stop = max(start, stop)
        return Change(
            None,
            [("splice", path, start, stop, values)],
            [("splice", path, start, start + len(values), parent[start:stop])],
        )
    indices = range(start, stop, step)
    if len(values) != len(indices):
        raise ValueError(
            f"attempt to assign sequence of size {len(values)} to extended slice of size {len(indices)}"
        )
    return Change(
        None,
        [("set", path, i, v) for i, v in zip(indices, values, strict=False)],
        [("set", path, i, parent[i]) for i in indices],
    )


def _plan_delete(parent: Any, path: Path, key: Any) -> Change:
    if type(parent) is dict:
        return _plan_dict_delete(parent, path, key, None)
    if type(parent) is list:
        if type(key) is slice:
            return _plan_delete_slice(parent, path, key)
        index = _list_index(parent, key, "list assignment index out of range")
        return _list_delete(parent, path, index, None)
    raise TypeError(f"{type(parent).__name__!r} object doesn't support item deletion")


def _plan_delete_slice(parent: list, path: Path, key: slice) -> Change:
    start, stop, step = key.indices(len(parent))
    if step == 1:
        stop = max(start, stop)
        return Change(
            None,
            [("splice", path, start, stop, [])],
            [("splice", path, start, start, parent[start:stop])],
        )
    indices = sorted(range(start, stop, step))
    return Change(
        None,
        [("delete", path, i) for i in reversed(indices)],
        [("insert", path, i, parent[i]) for i in indices],
    )


def _plan_dict_delete(node: dict, path: Path, key: Any, result: Any) -> Change:
    if key not in node:
        raise KeyError(key)
    old = node[key]
    keys = list(node)
    position = keys.index(key)
    stored = keys[position]  # may differ in type from ``key`` (1, 1.0 and True are one key)
    if position == len(keys) - 1:
        restore = ("set", path, stored, old)
    else:
        restore = ("put_at", path, stored, old, position)
    return Change(result, [("delete", path, key)], [restore])


def _list_delete(node: list, path: Path, index: int, result: Any) -> Change:
    return Change(result, [("delete", path, index)], [("insert", path, index, node[index])])


# --- in-place operators ----------------------------------------------------------


def _plan_inplace(parent: Any, path: Path, key: Any, name: str, value: Any) -> Change:
    if name not in INPLACE_OPERATORS:
        raise NotAllowedError(f"in-place operator {name!r} is not allowed")
    if type(parent) not in (dict, list):
        operator.getitem(parent, key)  # a missing item raises as Python would, before the assignment
        raise TypeError(f"{type(parent).__name__!r} object does not support item assignment")
    if type(parent) is list and type(key) is slice:
        return _plan_set_slice(parent, path, key, _inplace_on_copy(parent[key], name, value))
    if type(parent) is list:
        key = _list_index(parent, key, "list index out of range")
    target = parent[key]
    here = (*path, key)
    if type(target) is list and name == "add":
        return _list_extend(target, here, value)
    if type(target) is dict and name == "or":
        return _dict_update(target, here, value)
    _check_growth(target, name, value)
    new = INPLACE_OPERATORS[name](target, value)
    _check_int(new)
    if type(target) is list:
        return Change(None, [("assign", here, new)], [("assign", here, list(target))])
    return Change(None, [("set", path, key, new)], [("set", path, key, target)])


def _inplace_on_copy(target: list, name: str, value: Any) -> Any:
    """``target op= value`` on a fresh list (a slice of the store), as Python computes it."""
    if name == "add":
        return target + _as_list(value, f"{type(value).__name__!r} object is not iterable")
    if name == "mul":
        _check_repeat(target, value)
    return INPLACE_OPERATORS[name](target, value)


def _check_growth(target: Any, name: str, value: Any) -> None:
    """Refuse, before it is built, a result that could be far larger than ``target`` and ``value``."""
    if name == "mul":
        _check_repeat(target, value)
        if isinstance(target, int) and isinstance(value, int):
            # a product has at least this many bits: refused before it is computed
            _check_int_bits(target.bit_length() + value.bit_length() - 1, "*=")
    elif name == "mod" and type(target) in (str, bytes):
        size = formatsize.bound(target, value)
        if size > MAX_REPEAT:
            raise ValueError(f"%= could build {size} characters, more than the limit of {MAX_REPEAT}")


def _check_repeat(target: Any, times: Any) -> None:
    """``sequence * n`` and ``n * sequence`` may build at most :data:`MAX_REPEAT` items."""
    if isinstance(target, _SEQUENCES) and isinstance(times, int):
        size = len(target) * times
    elif isinstance(target, int) and isinstance(times, _SEQUENCES):
        size = target * len(times)
    else:
        return
    if size > MAX_REPEAT:
        raise ValueError(f"*= would build more than {MAX_REPEAT} items")


def _check_int(value: Any) -> None:
    """An integer result must fit the limit that requests have (so that it can be read back)."""
    if isinstance(value, int):
        _check_int_bits(value.bit_length(), "the result")


def _check_int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise ValueError(f"{what} would be an integer of {bits} bits, more than the limit of {MAX_INT_BITS}")


# --- dict methods ----------------------------------------------------------------


def _dict_setdefault(node: dict, path: Path, key: Any, default: Any = None) -> Change:
    _check_key(key)
    if key in node:
        return Change(node[key])
    return Change(default, [("set", path, key, default)], [("delete", path, key)])


_MISSING = object()


def _dict_pop(node: dict, path: Path, key: Any, default: Any = _MISSING) -> Change:
    if key not in node and default is not _MISSING:
        return Change(default)
    return _plan_dict_delete(node, path, key, node.get(key))


def _dict_popitem(node: dict, path: Path) -> Change:
    if not node:
        raise KeyError("popitem(): dictionary is empty")
    key = next(reversed(node))
    return _plan_dict_delete(node, path, key, (key, node[key]))


def _dict_update(node: dict, path: Path, other: Any = (), **pairs: Any) -> Change:
    if type(other) is dict:
        items = iter(other.items())
    else:  # lazily, so that a bad pair and a bad key fail in the order dict.update finds them
        items = (_pair(item, number) for number, item in enumerate(other))
    entries = []
    for key, value in itertools.chain(items, pairs.items()):
        _check_key(key)
        entries.append((key, value))
    check_key_hashes([key for key, _ in entries])  # before ``seen`` is built from them
    change = Change()
    seen = set()
    for key, value in entries:
        change.forward.append(("set", path, key, value))
        if key in seen:
            continue
        seen.add(key)
        if key in node:
            change.inverse.append(("set", path, key, node[key]))
        else:
            change.inverse.append(("delete", path, key))
    return change


def _pair(item: Any, number: int) -> tuple:
    if type(item) not in (list, tuple, str, bytes, dict):
        raise TypeError(f"cannot convert dictionary update sequence element #{number} to a sequence")
    pair = tuple(item)
    if len(pair) != 2:
        raise ValueError(
            f"dictionary update sequence element #{number} has length {len(pair)}; 2 is required"
        )
    return pair


def _clear(node: Any, path: Path) -> Change:
    return Change(None, [("assign", path, type(node)())], [("assign", path, node.copy())])


# --- list methods ----------------------------------------------------------------


def _list_append(node: list, path: Path, value: Any) -> Change:
    end = len(node)
    return Change(None, [("insert", path, end, value)], [("delete", path, end)])


def _list_extend(node: list, path: Path, values: Any) -> Change:
    values = _as_list(values, f"{type(values).__name__!r} object is not iterable")
    end = len(node)
    return Change(
        None,
        [("splice", path, end, end, values)],
        [("splice", path, end, end + len(values), [])],
    )


def _list_insert(node: list, path: Path, index: Any, value: Any) -> Change:
    index = operator.index(index)
    if index < 0:
        index = max(0, index + len(node))
    index = min(index, len(node))
    return Change(None, [("insert", path, index, value)], [("delete", path, index)])


def _list_remove(node: list, path: Path, value: Any) -> Change:
    try:
        index = node.index(value)
    except ValueError:
        raise ValueError("list.remove(x): x not in list") from None
    return _list_delete(node, path, index, None)


def _list_pop(node: list, path: Path, index: Any = -1) -> Change:
    _check_index_type(index)
    if not node:
        raise IndexError("pop from empty list")
    index = _list_index(node, index, "pop index out of range")
    return _list_delete(node, path, index, node[index])


def _list_sort(node: list, path: Path, reverse: Any = False) -> Change:
    ordered = sorted(node, reverse=bool(operator.index(reverse)))
    return Change(None, [("assign", path, ordered)], [("assign", path, list(node))])


def _list_reverse(node: list, path: Path) -> Change:
    return Change(None, [("assign", path, node[::-1])], [("assign", path, list(node))])


_METHOD_PLANNERS: dict[tuple[type, str], Callable[..., Change]] = {
    (dict, "setdefault"): _dict_setdefault,
    (dict, "pop"): _dict_pop,
    (dict, "popitem"): _dict_popitem,
    (dict, "update"): _dict_update,
    (dict, "clear"): _clear,
    (list, "append"): _list_append,
    (list, "extend"): _list_extend,
    (list, "insert"): _list_insert,
    (list, "remove"): _list_remove,
    (list, "pop"): _list_pop,
    (list, "sort"): _list_sort,
    (list, "reverse"): _list_reverse,
    (list, "clear"): _clear,
}


# --- helpers ---------------------------------------------------------------------


def _check_key(key: Any) -> None:
    if not is_valid_key(key):
        raise TypeError(f"cannot use a value of type {type(key).__name__} as a dict key")


def _check_index_type(key: Any) -> None:
    if type(key) not in (int, bool):
        raise TypeError(f"list indices must be integers or slices, not {type(key).__name__}")


def _list_index(node: list, key: Any, message: str) -> int:
    _check_index_type(key)
    index = key + len(node) if key < 0 else int(key)
    if not 0 <= index < len(node):
        raise IndexError(message)
    return index


def _as_list(value: Any, message: str) -> list:
    if type(value) in (list, tuple, str, bytes, dict):
        return list(value)
    raise TypeError(message)
