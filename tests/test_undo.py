"""Undo and redo of every write, checked against plain Python (pyzdb.store, pyzdb.undo).

The state machine drives a :class:`Store` with random writes on nested data and
applies the same operation, with ordinary Python, to a model.  The model keeps
its own undo and redo stacks of deep-copied states, so after every step the
store must equal the model exactly (types and dict key order included), and an
operation that raises in Python must raise the same type and change nothing.
"""

from __future__ import annotations

import copy
import math
import operator
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pyzdb.errors import UndoError
from pyzdb.storage import snapshot
from pyzdb.store import Store
from pyzdb.tree import resolve
from pyzdb.undo import UndoLog


def same(a: Any, b: Any) -> bool:
    """Strict equality: same types everywhere, same dict key order, nan equals nan."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return len(a) == len(b) and all(
            same(ka, kb) and same(a[ka], b[kb]) for ka, kb in zip(a, b, strict=True)
        )
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float and math.isnan(a):
        return math.isnan(b)
    return a == b


# --- strategies ------------------------------------------------------------------

# 1, 1.0 and True are one dict key: mixing them checks that undo restores the stored key's type.
KEYS = st.sampled_from(["a", "b", "c", "d", 0, 1, 2, True, 1.0, ("t", 1), None])
TWINS = {0: (0, False, 0.0), 1: (1, True, 1.0)}
"""Keys that are equal (one dict key) but of different types."""
SCALARS = st.one_of(
    st.integers(-3, 9),
    st.sampled_from(["", "x", "yz", b"b", None, True, False, 0.5, -2.0, 1.0, (1, "t"), ()]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(KEYS, inner, max_size=3),
        st.tuples(inner, inner),
    ),
    max_leaves=6,
)
SEQUENCES = st.one_of(
    st.lists(VALUES, max_size=4),
    st.tuples(SCALARS, SCALARS),
    st.sampled_from(["", "ab", b"xy", {"k": 1, 2: 3}]),
    SCALARS,  # mostly not iterable: Python raises TypeError
)
NUMBERS = st.one_of(st.integers(-2, 4), st.sampled_from([0.5, -1.5, True]))
OPERATORS = st.sampled_from(["add", "sub", "mul", "truediv", "floordiv", "mod", "or"])
ANY_OPERAND = st.one_of(NUMBERS, SEQUENCES, st.dictionaries(KEYS, VALUES, max_size=2))
_ARITHMETIC = st.tuples(OPERATORS, NUMBERS)
_REPEAT = st.tuples(st.just("mul"), st.integers(-1, 3))
FITTING_OPERANDS = {
    int: _ARITHMETIC,
    float: _ARITHMETIC,
    bool: _ARITHMETIC,
    list: st.one_of(st.tuples(st.just("add"), SEQUENCES), _REPEAT),
    dict: st.tuples(
        st.just("or"),
        st.one_of(st.dictionaries(KEYS, VALUES, max_size=3), st.lists(st.tuples(KEYS, VALUES), max_size=3)),
    ),
    str: st.one_of(st.tuples(st.just("add"), st.sampled_from(["", "q"])), _REPEAT),
    bytes: st.one_of(st.tuples(st.just("add"), st.just(b"q")), _REPEAT),
    tuple: st.one_of(st.tuples(st.just("add"), st.tuples(SCALARS)), _REPEAT),
}
"""Operator and operand pairs that usually succeed, by type of the target."""
STEPS = st.sampled_from([None, 1, 2, 3, -1, -2, 0])  # 0 raises ValueError, as in Python
INITIAL = st.fixed_dictionaries(
    {
        "l": st.lists(st.integers(-5, 5), max_size=6),
        "d": st.dictionaries(KEYS, VALUES, max_size=4),
        "n": st.integers(-5, 5),
        "nest": st.lists(
            st.one_of(st.lists(VALUES, max_size=4), st.dictionaries(KEYS, VALUES, max_size=3)),
            max_size=3,
        ),
    }
)


def container_paths(node: Any, path: tuple = (), depth: int = 4) -> list[tuple]:
    """Paths of every dict and list in ``node`` (``node`` included)."""
    found = [path]
    if depth:
        items = node.items() if type(node) is dict else enumerate(node)
        for key, child in items:
            if type(child) in (dict, list):
                found += container_paths(child, (*path, key), depth - 1)
    return found


def has_list(machine: UndoMachine) -> bool:
    """Precondition of the list rules: the model holds at least one list."""
    return any(type(resolve(machine.model, p)) is list for p in container_paths(machine.model))


def bound() -> st.SearchStrategy:
    """A slice bound, sometimes far outside the list."""
    return st.one_of(st.none(), st.integers(-8, 8))


# --- the plain Python model --------------------------------------------------------


def python_write(root: Any, op: str, path: tuple, method: str | None, args: list, kwargs: dict) -> Any:
    """Do with ordinary Python what ``Store.write(op, path, method, args, kwargs)`` does."""
    if op == "call":
        return getattr(resolve(root, path), method)(*args, **kwargs)
    parent, key = resolve(root, path[:-1]), path[-1]
    if op == "set":
        parent[key] = args[0]
    elif op == "delete":
        del parent[key]
    else:  # augmented assignment: get the item, operate in place if the type can, set it back
        parent[key] = getattr(operator, "i" + method)(parent[key], args[0])
    return None


class UndoMachine(RuleBasedStateMachine):
    """Random writes, undos, redos and restarts on a Store and on a plain-Python model."""

    @initialize(root=INITIAL, limit=st.sampled_from([1000, 1000, 1000, 4, 1, 0]))
    def start(self, root: dict, limit: int) -> None:
        """A store and a model holding the same data."""
        self.store = Store(copy.deepcopy(root), undo_limit=limit)
        self.model = root
        self.limit = limit
        self.initial = copy.deepcopy(root)
        self.undo_states: list = []
        self.redo_states: list = []
        self.trimmed = False

    # --- helpers ---------------------------------------------------------------

    def pick(self, data: st.DataObject, kind: type) -> tuple:
        """Draw the path of a container of type ``kind`` (the root dict is always there)."""
        paths = [p for p in container_paths(self.model) if type(resolve(self.model, p)) is kind]
        paths = paths or [()]
        return data.draw(st.sampled_from(paths), label="path")

    def pick_list(self, data: st.DataObject) -> tuple[tuple, list]:
        """Draw the path of a list and the list itself (in the model)."""
        paths = [p for p in container_paths(self.model) if type(resolve(self.model, p)) is list]
        path = data.draw(st.sampled_from(paths), label="list path")
        return path, resolve(self.model, path)

    def index(self, data: st.DataObject, size: int) -> int:
        """An index into a list of ``size``, sometimes out of range or negative."""
        return data.draw(st.integers(-size - 2, size + 1), label="index")

    def key_of(self, data: st.DataObject, node: dict) -> Any:
        """A key of ``node``, an equal key of another type (``True`` for ``1``), or a fresh one."""
        existing = list(node) or ["a"]
        twins = [twin for key in existing for twin in TWINS.get(key, ()) if type(twin) is not type(key)]
        return data.draw(st.one_of(st.sampled_from(existing), st.sampled_from(twins or existing), KEYS))

    def write(self, op: str, path: tuple, method: str | None = None, args=(), kwargs=None) -> None:
        """Run one write on both sides and check they agree, in result or in exception."""
        kwargs = kwargs or {}
        before = copy.deepcopy(self.model)
        try:
            expected = python_write(
                self.model, op, path, method, copy.deepcopy(list(args)), copy.deepcopy(kwargs)
            )
        except Exception as exc:
            self.model = before
            self.expect_failure(exc, op, path, method, args, kwargs)
            return
        result = self.store.write(op, path, method, copy.deepcopy(list(args)), copy.deepcopy(kwargs))
        assert same(result, expected), (result, expected)
        self.push(before)

    def expect_failure(self, exc: Exception, op: str, path: tuple, method, args, kwargs: dict) -> None:
        """The store must raise exactly the exception type Python raised (and change nothing)."""
        try:
            self.store.write(op, path, method, copy.deepcopy(list(args)), copy.deepcopy(kwargs))
        except Exception as got:
            assert type(got) is type(exc), (got, exc)
        else:
            raise AssertionError(f"the store did not raise {exc!r}")

    def push(self, state: Any) -> None:
        """Record a step in the model's own bounded history; a new write clears redo."""
        self.undo_states.append(state)
        if len(self.undo_states) > self.limit:
            self.undo_states.pop(0)
            self.trimmed = True
        self.redo_states.clear()

    # --- item and slice assignment and deletion ----------------------------------

    @rule(data=st.data(), value=VALUES)
    def set_dict_item(self, data: st.DataObject, value: Any) -> None:
        """``d[key] = value``."""
        path = self.pick(data, dict)
        self.write("set", (*path, self.key_of(data, resolve(self.model, path))), args=[value])

    @precondition(has_list)
    @rule(data=st.data(), value=VALUES)
    def set_list_item(self, data: st.DataObject, value: Any) -> None:
        """``l[i] = value`` (negative and out-of-range indices too)."""
        path, node = self.pick_list(data)
        self.write("set", (*path, self.index(data, len(node))), args=[value])

    @precondition(has_list)
    @rule(data=st.data(), start=bound(), stop=bound(), step=STEPS, values=SEQUENCES)
    def set_slice(self, data: st.DataObject, start, stop, step, values: Any) -> None:
        """``l[start:stop:step] = values`` (extended, unequal lengths, start > stop)."""
        path, _ = self.pick_list(data)
        self.write("set", (*path, slice(start, stop, step)), args=[values])

    @rule(data=st.data())
    def delete_dict_item(self, data: st.DataObject) -> None:
        """``del d[key]``."""
        path = self.pick(data, dict)
        self.write("delete", (*path, self.key_of(data, resolve(self.model, path))))

    @precondition(has_list)
    @rule(data=st.data())
    def delete_list_item(self, data: st.DataObject) -> None:
        """``del l[i]``."""
        path, node = self.pick_list(data)
        self.write("delete", (*path, self.index(data, len(node))))

    @precondition(has_list)
    @rule(data=st.data(), start=bound(), stop=bound(), step=STEPS)
    def delete_slice(self, data: st.DataObject, start, stop, step) -> None:
        """``del l[start:stop:step]`` (extended and negative steps too)."""
        path, _ = self.pick_list(data)
        self.write("delete", (*path, slice(start, stop, step)))

    # --- dict methods ---------------------------------------------------------

    @rule(data=st.data(), default=st.one_of(st.just(()), st.tuples(VALUES)))
    def dict_setdefault_or_pop(self, data: st.DataObject, default: tuple) -> None:
        """``d.setdefault(key[, default])`` or ``d.pop(key[, default])``."""
        path = self.pick(data, dict)
        method = data.draw(st.sampled_from(["setdefault", "pop"]), label="method")
        self.write("call", path, method, [self.key_of(data, resolve(self.model, path)), *default])

    @rule(data=st.data())
    def dict_popitem_or_clear(self, data: st.DataObject) -> None:
        """``d.popitem()`` or ``d.clear()``."""
        path = self.pick(data, dict)
        self.write("call", path, data.draw(st.sampled_from(["popitem", "clear"]), label="method"))

    @rule(
        data=st.data(),
        other=st.one_of(
            st.dictionaries(KEYS, VALUES, max_size=3),
            st.lists(st.tuples(KEYS, VALUES), max_size=4),  # duplicate keys happen here
            st.lists(st.lists(KEYS, min_size=1, max_size=3), max_size=2),  # pairs of wrong length
            st.sampled_from(["", "ab", ["ab", "cd"], [5], 5]),
        ),
        pairs=st.dictionaries(st.sampled_from(["a", "b", "z"]), VALUES, max_size=2),
        positional=st.booleans(),
    )
    def dict_update(self, data: st.DataObject, other: Any, pairs: dict, positional: bool) -> None:
        """``d.update(other, **pairs)`` with a dict, pairs, keywords, or both."""
        path = self.pick(data, dict)
        self.write("call", path, "update", [other] if positional else [], pairs)

    # --- list methods ---------------------------------------------------------

    @precondition(has_list)
    @rule(data=st.data(), value=VALUES, values=SEQUENCES)
    def list_append_extend(self, data: st.DataObject, value: Any, values: Any) -> None:
        """``l.append(value)`` or ``l.extend(values)``."""
        path, _ = self.pick_list(data)
        if data.draw(st.booleans(), label="append"):
            self.write("call", path, "append", [value])
        else:
            self.write("call", path, "extend", [values])

    @precondition(has_list)
    @rule(data=st.data(), value=VALUES)
    def list_insert(self, data: st.DataObject, value: Any) -> None:
        """``l.insert(i, value)`` with negative and past-the-end indices."""
        path, node = self.pick_list(data)
        index = data.draw(st.integers(-len(node) - 3, len(node) + 3), label="index")
        self.write("call", path, "insert", [index, value])

    @precondition(has_list)
    @rule(data=st.data(), value=VALUES)
    def list_remove(self, data: st.DataObject, value: Any) -> None:
        """``l.remove(x)`` of an item present, or not."""
        path, node = self.pick_list(data)
        if node and data.draw(st.booleans(), label="present"):
            value = data.draw(st.sampled_from(node), label="item")
        self.write("call", path, "remove", [value])

    @precondition(has_list)
    @rule(data=st.data(), with_index=st.booleans())
    def list_pop(self, data: st.DataObject, with_index: bool) -> None:
        """``l.pop()`` and ``l.pop(i)``."""
        path, node = self.pick_list(data)
        self.write("call", path, "pop", [self.index(data, len(node))] if with_index else [])

    @precondition(has_list)
    @rule(data=st.data(), reverse=st.sampled_from([None, False, True, 0, 1]))
    def list_sort(self, data: st.DataObject, reverse) -> None:
        """``l.sort()`` and ``l.sort(reverse=...)`` (mixed types raise TypeError)."""
        path, _ = self.pick_list(data)
        self.write("call", path, "sort", [], {} if reverse is None else {"reverse": reverse})

    @precondition(has_list)
    @rule(data=st.data())
    def list_reverse_or_clear(self, data: st.DataObject) -> None:
        """``l.reverse()`` or ``l.clear()``."""
        path, _ = self.pick_list(data)
        self.write("call", path, data.draw(st.sampled_from(["reverse", "clear"]), label="method"))

    # --- in-place operators ---------------------------------------------------

    @rule(data=st.data())
    def inplace_on_an_item(self, data: st.DataObject) -> None:
        """``node[key] op= value`` on an existing item, with an operator that suits its type."""
        path = data.draw(st.sampled_from(container_paths(self.model)), label="path")
        node = resolve(self.model, path)
        keys = list(node) if type(node) is dict else list(range(-len(node), len(node)))
        key = data.draw(st.sampled_from(keys or ["absent"]), label="key")
        fitting = FITTING_OPERANDS.get(type(node[key])) if keys else None
        if fitting is None:
            fitting = st.tuples(OPERATORS, ANY_OPERAND)
        name, value = data.draw(fitting, label="operator")
        self.write("iop", (*path, key), name, [value])

    @rule(data=st.data(), name=OPERATORS, value=ANY_OPERAND)
    def inplace_anywhere(self, data: st.DataObject, name: str, value: Any) -> None:
        """``node[key] op= value`` with any key, slice, operator and operand (Python often raises)."""
        path = data.draw(st.sampled_from(container_paths(self.model)), label="path")
        node = resolve(self.model, path)
        if type(node) is dict:
            key = self.key_of(data, node)
        elif data.draw(st.booleans(), label="slice"):
            key = slice(data.draw(bound()), data.draw(bound()), data.draw(STEPS))
            if type(value) is not int and data.draw(st.booleans(), label="fitting"):
                name, value = "add", data.draw(SEQUENCES)
        else:
            key = self.index(data, len(node))
        self.write("iop", (*path, key), name, [value])

    # --- undo, redo, restart --------------------------------------------------

    @rule()
    def undo(self) -> None:
        """``undo()``: the previous state, or UndoError with nothing to undo."""
        if not self.undo_states:
            with pytest.raises(UndoError, match="nothing to undo"):
                self.store.undo()
            return
        self.store.undo()
        self.redo_states.append(self.model)
        self.model = self.undo_states.pop()

    @rule()
    def redo(self) -> None:
        """``redo()``: the undone state again, or UndoError with nothing to redo."""
        if not self.redo_states:
            with pytest.raises(UndoError, match="nothing to redo"):
                self.store.redo()
            return
        self.store.redo()
        self.undo_states.append(self.model)
        self.model = self.redo_states.pop()

    @rule()
    def save_and_restart(self) -> None:
        """Pickle the store with its history (as the snapshot does) and go on with the copy."""
        state = pickle.loads(pickle.dumps({"root": self.store.root, "history": self.store.history}, 5))
        self.store = Store(state["root"])
        self.store.history = state["history"]

    @invariant()
    def store_matches_model(self) -> None:
        """After every step the store is exactly the model, and the step counts agree."""
        assert same(self.store.root, self.model), (self.store.root, self.model)
        assert self.store.history.can_undo == len(self.undo_states)
        assert self.store.history.can_redo == len(self.redo_states)

    def teardown(self) -> None:
        """Undo everything (back to the initial state), restart, then redo everything (the final state)."""
        if not hasattr(self, "store"):
            return
        final, steps = copy.deepcopy(self.model), len(self.undo_states)
        for state in reversed(self.undo_states):
            self.store.undo()
            assert same(self.store.root, state)
        if not self.trimmed:
            assert same(self.store.root, self.initial)
        with pytest.raises(UndoError):
            self.store.undo()
        self.save_and_restart()
        for _ in range(steps):
            self.store.redo()
        assert same(self.store.root, final)


UndoMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestUndoMachine = UndoMachine.TestCase


# --- examples ---------------------------------------------------------------------


def test_limit_keeps_the_newest_steps() -> None:
    """With limit 3, only the last three writes can be undone, newest first."""
    store = Store({"n": 0}, undo_limit=3)
    for value in range(1, 6):
        store.write("set", ("n",), args=[value])
    assert store.history.can_undo == 3
    for expected in (4, 3, 2):
        store.undo()
        assert store.root == {"n": expected}
    with pytest.raises(UndoError, match="nothing to undo"):
        store.undo()
    assert store.root == {"n": 2}


def test_limit_zero_keeps_no_step() -> None:
    """With limit 0 writes still happen, but there is nothing to undo."""
    store = Store({}, undo_limit=0)
    store.write("set", ("x",), args=[1])
    assert store.root == {"x": 1}
    with pytest.raises(UndoError, match="nothing to undo"):
        store.undo()
    assert store.root == {"x": 1}


def test_negative_limit_is_refused() -> None:
    """A negative bound is a configuration error."""
    with pytest.raises(ValueError, match="negative"):
        UndoLog(-1)


def test_resize_keeps_the_newest_steps() -> None:
    """Shrinking the bound drops the oldest steps; the rest still undo in order."""
    store = Store({"l": []})
    for value in range(4):
        store.write("call", ("l",), "append", [value])
    store.history.resize(2)
    assert store.history.can_undo == 2
    store.undo()
    store.undo()
    assert store.root == {"l": [0, 1]}
    with pytest.raises(UndoError):
        store.undo()


def test_empty_undo_and_redo_raise_clear_errors() -> None:
    """A fresh store has nothing to undo or redo, says so, and stays unchanged."""
    store = Store({"a": 1})
    with pytest.raises(UndoError, match="^nothing to undo$"):
        store.undo()
    with pytest.raises(UndoError, match="^nothing to redo$"):
        store.redo()
    assert store.root == {"a": 1}


def test_write_after_undo_clears_redo() -> None:
    """A new write after an undo makes the undone step unreachable."""
    store = Store({})
    store.write("set", ("a",), args=[1])
    store.write("set", ("b",), args=[2])
    store.undo()
    assert store.history.can_redo == 1
    store.write("set", ("c",), args=[3])
    assert store.history.can_redo == 0
    with pytest.raises(UndoError, match="nothing to redo"):
        store.redo()
    assert store.root == {"a": 1, "c": 3}


def test_failed_write_is_not_a_step() -> None:
    """A write that raises changes nothing and leaves the history (redo included) alone."""
    store = Store({"l": [1]})
    store.write("call", ("l",), "append", [2])
    store.undo()
    with pytest.raises(IndexError):
        store.write("delete", ("l", 5))
    assert store.history.can_undo == 0 and store.history.can_redo == 1
    store.redo()
    assert store.root == {"l": [1, 2]}


def test_one_step_per_write_request() -> None:
    """extend, update and an in-place operator are one step each, however many patches."""
    store = Store({"l": [0], "d": {"a": 1}})
    store.write("call", ("l",), "extend", [[1, 2, 3]])
    store.write("call", ("d",), "update", [{"b": 2, "c": 3}], {"e": 5})
    store.write("iop", ("l",), "add", [[4, 5]])
    store.write("delete", ("l", slice(None, None, 2)))
    assert store.history.can_undo == 4
    for _ in range(4):
        store.undo()
    assert store.root == {"l": [0], "d": {"a": 1}}


def test_undo_after_snapshot_save_and_load(tmp_path) -> None:
    """The history saved with the store by the snapshot module still undoes after a restart."""
    store = Store({"d": {"a": 1, "b": 2}, "l": [[1], [2]]})
    store.write("delete", ("d", "a"))
    store.write("call", ("l", 0), "append", [3])
    store.write("set", ("l", 1), args=[{"k": (1, 2)}])
    store.undo()
    path = tmp_path / "db.pkl"
    snapshot.save(path, {"root": store.root, "history": store.history})
    state = snapshot.load(path)
    reloaded = Store(state["root"])
    reloaded.history = state["history"]
    assert reloaded.history.can_undo == 2 and reloaded.history.can_redo == 1
    reloaded.redo()
    assert reloaded.root == {"d": {"b": 2}, "l": [[1, 3], {"k": (1, 2)}]}
    for _ in range(3):
        reloaded.undo()
    assert same(reloaded.root, {"d": {"a": 1, "b": 2}, "l": [[1], [2]]})


def test_shared_values_stay_consistent_across_pickle() -> None:
    """A value held both by the store and by a patch is one object after a pickle round trip."""
    store = Store({})
    store.write("set", ("x",), args=[[1]])
    store.write("call", ("x",), "append", [2])
    state = pickle.loads(pickle.dumps({"root": store.root, "history": store.history}, 5))
    reloaded = Store(state["root"])
    reloaded.history = state["history"]
    reloaded.undo()
    reloaded.undo()
    reloaded.redo()
    assert reloaded.root == {"x": [1]}
    reloaded.redo()
    assert reloaded.root == {"x": [1, 2]}
