"""Walking paths in the store and applying patches to it (no I/O).

A *path* is a tuple of keys from the root: dict keys, list indices, and, as
the last element only, slices.  A *patch* is the smallest change pyzdb makes
to the store, a tuple whose first item names it:

==========================================  ===================================
patch                                       effect on ``node = resolve(path)``
==========================================  ===================================
``("set", path, key, value)``               ``node[key] = value``
``("delete", path, key)``                   ``del node[key]``
``("insert", path, index, value)``          ``node.insert(index, value)``
``("splice", path, start, stop, values)``   ``node[start:stop] = values``
``("assign", path, contents)``              replace all of ``node``'s contents
``("put_at", path, key, value, position)``  insert ``key`` into the dict ``node``
                                            so that it is the ``position``-th key
``("object", (), target, *args)``           ``target.apply_patch(*args)``: a change to
                                            data kept outside the tree (time-series
                                            collections, ``pyzdb.timeseries.registry``)
==========================================  ===================================

Every write is a list of patches, and so is its inverse (see ``pyzdb.undo``).
Indices in patches are always normalised (non-negative, within range), so a
patch means the same thing whenever it is replayed.
"""

from __future__ import annotations

from typing import Any

Path = tuple
Patch = tuple


def resolve(root: Any, path: Path) -> Any:
    """Return the value at ``path``; raises KeyError/IndexError/TypeError as Python would."""
    node = root
    for key in path:
        node = node[key]
    return node


def apply_patch(root: Any, patch: Patch) -> None:
    """Apply one patch to the store."""
    kind, path, *args = patch
    _APPLY[kind](resolve(root, path), *args)


def apply_patches(root: Any, patches: list[Patch]) -> None:
    """Apply patches in order."""
    for patch in patches:
        apply_patch(root, patch)


def _set(node: Any, key: Any, value: Any) -> None:
    node[key] = value


def _delete(node: Any, key: Any) -> None:
    del node[key]


def _insert(node: list, index: int, value: Any) -> None:
    node.insert(index, value)


def _splice(node: list, start: int, stop: int, values: list) -> None:
    node[start:stop] = values


def _assign(node: Any, contents: Any) -> None:
    if type(node) is list:
        node[:] = contents
    else:
        node.clear()
        node.update(contents)


def _put_at(node: dict, key: Any, value: Any, position: int) -> None:
    if position >= len(node):
        node[key] = value
        return
    items = list(node.items())
    items.insert(position, (key, value))
    node.clear()
    node.update(items)


def _object(_root: Any, target: Any, *args: Any) -> None:
    target.apply_patch(*args)


_APPLY = {
    "set": _set,
    "delete": _delete,
    "insert": _insert,
    "splice": _splice,
    "assign": _assign,
    "put_at": _put_at,
    "object": _object,
}
