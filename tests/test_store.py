"""The store: reads, writes as undo steps, refusals that change nothing (pyzdb.store)."""

from __future__ import annotations

import copy

import pytest

from pyzdb.errors import NotAllowedError, UndoError
from pyzdb.store import Store


def test_new_store_is_an_empty_dict() -> None:
    """Without a root the store starts as {} with the default history bound."""
    store = Store()
    assert store.root == {} and type(store.root) is dict
    assert store.history.limit == 1000


def test_spec_prompt_session() -> None:
    """The session of SPEC §2, on the store directly."""
    store = Store()
    store.write("set", ("x",), args=[3])
    store.write("set", ("l",), args=[list(range(10))])
    assert store.read("get") == {"x": 3, "l": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
    store.write("set", ("l", 4), args=[["a", "b", "c"]])
    store.undo()
    assert store.root == {"x": 3, "l": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
    store.undo()
    store.redo()
    store.redo()
    assert store.root == {"x": 3, "l": [0, 1, 2, 3, ["a", "b", "c"], 5, 6, 7, 8, 9]}
    assert store.read("iter", ("l", 4)) == ["a", "b", "c"]
    assert store.read("iter") == ["x", "l"]
    store.write("call", ("l", 4), "append", ["d"])
    assert store.root["l"][4] == ["a", "b", "c", "d"]


def test_write_returns_the_method_result() -> None:
    """pop, popitem and setdefault return what Python returns; item assignment returns None."""
    store = Store({"l": [1, 2, 3], "d": {"a": 1, "b": 2}})
    assert store.write("call", ("l",), "pop", [0]) == 1
    assert store.write("call", ("d",), "popitem") == ("b", 2)
    assert store.write("call", ("d",), "setdefault", ["a", 9]) == 1
    assert store.write("call", ("d",), "pop", ["zz", "dflt"]) == "dflt"
    assert store.write("set", ("d", "c"), args=[3]) is None
    assert store.root == {"l": [2, 3], "d": {"a": 1, "c": 3}}


@pytest.mark.parametrize(
    ("op", "path", "method", "args", "kwargs", "error"),
    [
        ("call", ("l",), "__class__", [], {}, NotAllowedError),
        ("call", ("l",), "sort", [], {"key": "len"}, NotAllowedError),
        ("call", ("l",), "count", [1], {}, NotAllowedError),
        ("set", (), None, [{}], {}, NotAllowedError),
        ("set", ("l", slice(0, 1), 0), None, [0], {}, NotAllowedError),
        ("iop", ("l",), "pow", [2], {}, NotAllowedError),
        ("call", ("l",), "remove", [99], {}, ValueError),
        ("delete", ("d", "zz"), None, [], {}, KeyError),
        ("set", ("l", 7), None, [0], {}, IndexError),
        ("iop", ("n",), "truediv", [0], {}, ZeroDivisionError),
        ("call", ("mixed",), "sort", [], {}, TypeError),
    ],
)
def test_refused_or_failing_writes_change_nothing(op, path, method, args, kwargs, error) -> None:
    """A write that is refused or raises leaves the data and both history stacks as they were."""
    store = Store({"l": [1, 2], "d": {"a": 1}, "n": 1, "mixed": [2, "a", 1]})
    store.write("call", ("l",), "append", [3])
    store.write("call", ("l",), "append", [4])
    store.undo()
    before = copy.deepcopy(store.root)
    with pytest.raises(error):
        store.write(op, path, method, args, kwargs)
    assert store.root == before
    assert (store.history.can_undo, store.history.can_redo) == (1, 1)


def test_reads_do_not_change_the_history() -> None:
    """Reads are not steps."""
    store = Store({"d": {"a": 1}})
    store.read("get", ("d",))
    store.read("call", ("d",), "items")
    assert store.history.can_undo == 0
    with pytest.raises(UndoError):
        store.undo()


def test_read_methods_through_the_store() -> None:
    """keys/values/items come back as lists, items as tuples."""
    store = Store({"d": {"b": 1, "a": 2}})
    assert store.read("call", ("d",), "keys") == ["b", "a"]
    assert store.read("call", ("d",), "values") == [1, 2]
    assert store.read("call", ("d",), "items") == [("b", 1), ("a", 2)]
    assert store.read("len", ("d",)) == 2 and store.read("contains", ("d",), args=["a"]) is True


def test_inplace_operators_are_one_step_each() -> None:
    """``n += 1``, ``l += [..]``, ``l *= 2`` and ``d |= {...}`` each undo in one step."""
    store = Store({"n": 1, "l": [1], "d": {"a": 1}, "s": "ab", "t": (1,)})
    store.write("iop", ("n",), "add", [1])
    store.write("iop", ("l",), "add", [[2, 3]])
    store.write("iop", ("l",), "mul", [2])
    store.write("iop", ("d",), "or", [{"b": 2, "a": 0}])
    store.write("iop", ("s",), "mul", [2])
    store.write("iop", ("t",), "add", [(2,)])
    assert store.root == {"n": 2, "l": [1, 2, 3, 1, 2, 3], "d": {"a": 0, "b": 2}, "s": "abab", "t": (1, 2)}
    for _ in range(6):
        store.undo()
    assert store.root == {"n": 1, "l": [1], "d": {"a": 1}, "s": "ab", "t": (1,)}


def test_list_iadd_keeps_the_same_list_object() -> None:
    """``l += x`` and ``l *= n`` change the list in place, as in Python (references see it)."""
    inner = [1]
    store = Store({"l": inner})
    store.write("iop", ("l",), "add", [[2]])
    store.write("iop", ("l",), "mul", [2])
    assert store.root["l"] is inner and inner == [1, 2, 1, 2]
    store.undo()
    store.undo()
    assert store.root["l"] is inner and inner == [1]
