"""The allowlist, read results and write planning (pyzdb.ops)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyzdb import ops
from pyzdb.errors import NotAllowedError
from pyzdb.tree import apply_patches


def sample() -> dict:
    """A small nested store."""
    return {"d": {"a": 1, "b": 2, "c": 3}, "l": [3, 1, 2, 1], "s": "text", "n": 5}


# --- the allowlist -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["__class__", "__init__", "__setitem__", "__reduce_ex__", "_private", "_"])
def test_underscore_names_are_refused(name: str) -> None:
    """Dunder and private names never reach getattr, as reads or as writes."""
    root = sample()
    with pytest.raises(NotAllowedError, match="not allowed"):
        ops.read(root, "call", ("d",), name, [], {})
    with pytest.raises(NotAllowedError, match="not allowed"):
        ops.plan_write(root, "call", ("l",), name, [], {})


@pytest.mark.parametrize(
    ("path", "name"),
    [(("d",), "fromkeys"), (("d",), "append"), (("l",), "keys"), (("l",), "frobnicate"), (("s",), "upper")],
)
def test_unknown_names_are_refused_with_the_allowed_ones(path: tuple, name: str) -> None:
    """A method the node's type does not allow is refused, and the message lists what is allowed."""
    with pytest.raises(NotAllowedError, match=f"no allowed operation '{name}'") as caught:
        ops.read(sample(), "call", path, name, [], {})
    kind = type(sample()[path[0]])
    for allowed in ops._SIGNATURES.get(kind, {}):
        assert allowed in str(caught.value)


def test_non_string_method_name_is_refused() -> None:
    """A method name must be a string."""
    with pytest.raises(NotAllowedError):
        ops.read(sample(), "call", ("d",), 3, [], {})


@pytest.mark.parametrize(
    ("path", "name", "args", "kwargs"),
    [
        (("l",), "sort", [], {"key": "len"}),
        (("l",), "sort", [], {"reverse": True, "key": None}),
        (("d",), "get", ["a"], {"default": 1}),
        (("d",), "setdefault", ["z"], {"default": 1}),
        (("d",), "pop", ["a"], {"default": 0}),
        (("l",), "index", [1], {"start": 0}),
    ],
)
def test_keyword_arguments_are_refused(path: tuple, name: str, args: list, kwargs: dict) -> None:
    """Only sort(reverse=) and update(**pairs) take keywords; the store is left alone."""
    root = sample()
    before = copy.deepcopy(root)
    plan = ops.plan_write if name in ops.WRITE_METHODS else ops.read
    with pytest.raises(NotAllowedError, match="keyword"):
        plan(root, "call", path, name, args, kwargs)
    assert root == before


def test_allowed_keywords_are_accepted() -> None:
    """sort(reverse=True) and update(**pairs) plan normally."""
    root = sample()
    assert ops.plan_write(root, "call", ("l",), "sort", [], {"reverse": True}).forward == [
        ("assign", ("l",), [3, 2, 1, 1])
    ]
    change = ops.plan_write(root, "call", ("d",), "update", [], {"z": 9})
    assert change.forward == [("set", ("d",), "z", 9)]


@pytest.mark.parametrize(("name", "args"), [("keys", ["x"]), ("get", []), ("insert", [0]), ("pop", [1, 2])])
def test_wrong_argument_counts_raise_type_error(name: str, args: list) -> None:
    """Too many or too few positional arguments raise TypeError, as Python would."""
    path = ("l",) if name in ("insert", "pop") else ("d",)
    plan = ops.plan_write if name in ops.WRITE_METHODS else ops.read
    with pytest.raises(TypeError, match=rf"{name}\(\) takes"):
        plan(sample(), "call", path, name, args, {})


@pytest.mark.parametrize(
    ("path", "name", "args"),
    [(("l",), "append", [1]), (("l",), "sort", []), (("d",), "clear", []), (("d",), "popitem", [])],
)
def test_write_methods_sent_as_reads_are_refused(path: tuple, name: str, args: list) -> None:
    """A read request cannot change the store, even with a write method name."""
    root = sample()
    before = copy.deepcopy(root)
    with pytest.raises(NotAllowedError, match="send it as a write"):
        ops.read(root, "call", path, name, args, {})
    assert root == before


@pytest.mark.parametrize(("path", "name", "args"), [(("l",), "count", [1]), (("d",), "keys", [])])
def test_read_methods_sent_as_writes_are_refused(path: tuple, name: str, args: list) -> None:
    """A write request must change something: read methods are refused there."""
    with pytest.raises(NotAllowedError, match="send it as a read"):
        ops.plan_write(sample(), "call", path, name, args, {})


@pytest.mark.parametrize(
    ("op", "path", "method", "args"),
    [
        ("set", ("l", slice(0, 2), 0), None, [9]),
        ("delete", ("l", slice(None), 0), None, []),
        ("iop", ("l", slice(1, 3), 0), "add", [1]),
        ("call", ("l", slice(0, 2), 0), "append", [1]),
    ],
)
def test_slices_mid_path_are_refused_for_writes(op: str, path: tuple, method, args: list) -> None:
    """Writing through a slice would change a copy: refused before anything runs."""
    root = {"l": [[1], [2], [3]]}
    with pytest.raises(NotAllowedError, match="slice may only be the last step"):
        ops.plan_write(root, op, path, method, args, {})
    assert root == {"l": [[1], [2], [3]]}


def test_slices_mid_path_are_fine_for_reads() -> None:
    """Reads may go through a slice (it is a copy, and nothing is written)."""
    assert ops.read({"l": [[1], [2], [3]]}, "get", ("l", slice(1, None), 0), None, [], {}) == [2]


@pytest.mark.parametrize(
    ("op", "method", "args"), [("set", None, [{}]), ("delete", None, []), ("iop", "or", [{}])]
)
def test_the_root_cannot_be_replaced(op: str, method, args: list) -> None:
    """set/delete/iop need a key; the root dict itself stays (its methods still work)."""
    root = sample()
    with pytest.raises(NotAllowedError, match="root itself cannot be replaced"):
        ops.plan_write(root, op, (), method, args, {})
    assert ops.plan_write(root, "call", (), "clear", [], {}).forward == [("assign", (), {})]


@pytest.mark.parametrize("name", ["pow", "lshift", "__add__", "matmul", "and"])
def test_unknown_inplace_operators_are_refused(name: str) -> None:
    """Only the listed in-place operators run."""
    with pytest.raises(NotAllowedError, match="in-place operator"):
        ops.plan_write(sample(), "iop", ("n",), name, [2], {})


def test_unknown_write_op_is_refused() -> None:
    """An op that is not set/delete/iop/call is refused."""
    with pytest.raises(NotAllowedError, match="unknown write operation"):
        ops.plan_write(sample(), "replace", ("n",), None, [1], {})


def test_repeat_guard_refuses_huge_sequences() -> None:
    """``*=`` may not build more than MAX_REPEAT items (it would exhaust the server)."""
    root = {"l": [1, 2], "s": "ab"}
    for key in ("l", "s"):
        with pytest.raises(ValueError, match="would build more than"):
            ops.plan_write(root, "iop", (key,), "mul", [ops.MAX_REPEAT], {})
    assert root == {"l": [1, 2], "s": "ab"}


def test_invalid_dict_keys_are_refused() -> None:
    """Keys the codec cannot carry are refused with TypeError, in set, setdefault and update."""
    root = {"d": {}}
    with pytest.raises(TypeError, match="bytes"):
        ops.plan_write(root, "set", ("d", b"k"), None, [1], {})
    with pytest.raises(TypeError, match="frozenset"):
        ops.plan_write(root, "call", ("d",), "setdefault", [frozenset()], {})
    with pytest.raises(TypeError, match="list"):
        ops.plan_write(root, "call", ("d",), "update", [[([1], 2)]], {})


# --- read results ------------------------------------------------------------------


def test_keys_values_items_are_lists_and_items_are_tuples() -> None:
    """Views become lists (they must be encodable); each item is a (key, value) tuple."""
    root = sample()
    keys = ops.read(root, "call", ("d",), "keys", [], {})
    values = ops.read(root, "call", ("d",), "values", [], {})
    items = ops.read(root, "call", ("d",), "items", [], {})
    assert type(keys) is list and keys == ["a", "b", "c"]
    assert type(values) is list and values == [1, 2, 3]
    assert type(items) is list and items == [("a", 1), ("b", 2), ("c", 3)]
    assert all(type(item) is tuple for item in items)


def test_other_reads() -> None:
    """get/len/iter/contains/bool and the read methods return what Python returns."""
    root = sample()
    assert ops.read(root, "get", ("l", -1), None, [], {}) == 1
    assert ops.read(root, "get", ("l", slice(None, None, -1)), None, [], {}) == [1, 2, 1, 3]
    assert ops.read(root, "len", ("d",), None, [], {}) == 3
    assert ops.read(root, "iter", ("d",), None, [], {}) == ["a", "b", "c"]
    assert ops.read(root, "contains", ("l",), None, [2], {}) is True
    assert ops.read(root, "bool", ("d",), None, [], {}) is True
    assert ops.read(root, "call", ("d",), "get", ["zz", 0], {}) == 0
    assert ops.read(root, "call", ("l",), "count", [1], {}) == 2
    assert ops.read(root, "call", ("l",), "index", [1, 2], {}) == 3
    copied = ops.read(root, "call", ("d",), "copy", [], {})
    copied["x"] = 1
    assert "x" not in root["d"]


def test_reads_raise_as_python() -> None:
    """A missing key or index raises the builtin error Python raises."""
    with pytest.raises(KeyError):
        ops.read(sample(), "get", ("nope",), None, [], {})
    with pytest.raises(IndexError):
        ops.read(sample(), "get", ("l", 10), None, [], {})
    with pytest.raises(TypeError):
        ops.read(sample(), "get", ("n", 0), None, [], {})
    with pytest.raises(ValueError):
        ops.read(sample(), "call", ("l",), "index", [99], {})


# --- planning -----------------------------------------------------------------------


def test_dict_delete_restores_the_stored_key_type() -> None:
    """1, 1.0 and True are one key: deleting d[True] and undoing brings back the int 1."""
    root = {"d": {1: "a", "z": 0}}
    change = ops.plan_write(root, "delete", ("d", True), None, [], {})
    apply_patches(root, change.forward)
    apply_patches(root, change.inverse)
    assert [type(k) for k in root["d"]] == [int, str]


def test_inplace_on_a_list_slice() -> None:
    """``l[1:3] += [9]`` works as in Python (the slice is read, extended and written back)."""
    root = {"l": [0, 1, 2, 3]}
    change = ops.plan_write(root, "iop", ("l", slice(1, 3)), "add", [(9,)], {})
    apply_patches(root, change.forward)
    assert root == {"l": [0, 1, 2, 9, 3]}
    apply_patches(root, change.inverse)
    assert root == {"l": [0, 1, 2, 3]}


def test_dict_or_accepts_pairs() -> None:
    """``d |= [(k, v)]`` works, as it does in Python 3.9+."""
    root = {"d": {"a": 1}}
    change = ops.plan_write(root, "iop", ("d",), "or", [[("b", 2)]], {})
    apply_patches(root, change.forward)
    assert root == {"d": {"a": 1, "b": 2}}


@pytest.mark.parametrize(
    ("args", "error"),
    [([[1]], TypeError), ([[(1, 2, 3)]], ValueError), ([[([], 1), (1,)]], TypeError), ([5], TypeError)],
)
def test_update_errors_follow_python(args: list, error: type) -> None:
    """update() fails with dict.update's exception type, for the first bad element."""
    with pytest.raises(error):
        {}.update(*args)
    with pytest.raises(error):
        ops.plan_write({"d": {}}, "call", ("d",), "update", args, {})


OPERATIONS = st.one_of(
    st.tuples(st.just("set"), st.integers(-12, 12), st.just(None), st.just([0])),
    st.tuples(st.just("delete"), st.integers(-12, 12), st.just(None), st.just([])),
    st.tuples(st.just("insert"), st.integers(-12, 12), st.just("insert"), st.just([0])),
    st.tuples(st.just("pop"), st.integers(-12, 12), st.just("pop"), st.just([])),
    st.tuples(
        st.sampled_from(["set", "delete"]),
        st.builds(
            slice,
            st.none() | st.integers(-12, 12),
            st.none() | st.integers(-12, 12),
            st.sampled_from([None, 1, 2, -1, -3]),
        ),
        st.just(None),
        st.lists(st.just(0), max_size=4).map(lambda x: [x]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.integers(0, 9), max_size=8), operation=OPERATIONS)
def test_planning_does_not_touch_the_store_and_indices_are_normalised(items: list, operation) -> None:
    """plan_write leaves the store alone; every index in a patch is within the list; forward
    then inverse is the identity, and forward matches plain Python."""
    kind, key, method, args = operation
    root = {"l": list(items)}
    try:
        if method in ("insert", "pop"):
            change = ops.plan_write(root, "call", ("l",), method, [key, *args], {})
        else:
            change = ops.plan_write(root, kind, ("l", key), None, args, {})
    except (IndexError, ValueError):
        assert root == {"l": items}
        return
    assert root == {"l": items}
    expected = list(items)
    if method:
        getattr(expected, method)(key, *args)
    elif kind == "set":
        expected[key] = args[0]
    else:
        del expected[key]
    size = max(len(items), len(expected))
    for patch in change.forward + change.inverse:
        for position in patch[2:4] if patch[0] == "splice" else patch[2:3]:
            assert type(position) is int and 0 <= position <= size
    apply_patches(root, change.forward)
    assert root == {"l": expected}
    apply_patches(root, change.inverse)
    assert root == {"l": items}


def test_write_method_on_a_slice_is_refused_and_changes_nothing():
    from pyzdb.store import Store

    store = Store({"l": [3, 1, 2]})
    with pytest.raises(NotAllowedError, match="copy"):
        store.write("call", ("l", slice(0, 2)), "append", [9])
    assert store.root == {"l": [3, 1, 2]} and store.history.can_undo == 0
