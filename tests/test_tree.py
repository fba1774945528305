"""Paths and patches (pyzdb.tree)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyzdb.tree import apply_patch, apply_patches, resolve


def test_resolve_walks_keys_indices_and_slices() -> None:
    """A path is a tuple of keys; the empty path is the root."""
    root = {"a": [10, {"b": (1, 2)}], 1: "int key", ("t", 2): "tuple key"}
    assert resolve(root, ()) is root
    assert resolve(root, ("a", -1, "b", 0)) == 1
    assert resolve(root, ("a", slice(0, 1))) == [10]
    assert resolve(root, (1,)) == "int key"
    assert resolve(root, (("t", 2),)) == "tuple key"


@pytest.mark.parametrize(
    ("path", "error"), [(("nope",), KeyError), (("a", 5), IndexError), (("a", 0, 0), TypeError)]
)
def test_resolve_raises_as_python(path: tuple, error: type) -> None:
    """A missing key, an index out of range, or indexing an int raise Python's own errors."""
    with pytest.raises(error):
        resolve({"a": [10]}, path)


def test_set_delete_insert_splice() -> None:
    """The basic patches do what their table in the module docstring says."""
    root = {"l": [0, 1, 2, 3], "d": {}}
    apply_patches(
        root,
        [
            ("set", ("d",), "k", "v"),
            ("set", ("l",), 0, "zero"),
            ("delete", ("l",), 1),
            ("insert", ("l",), 1, "one"),
            ("splice", ("l",), 2, 4, ["x", "y", "z"]),
        ],
    )
    assert root == {"l": ["zero", "one", "x", "y", "z"], "d": {"k": "v"}}


def test_assign_keeps_the_node_and_replaces_its_contents() -> None:
    """assign changes a list or dict in place: references to the node stay valid."""
    inner_list, inner_dict = [1, 2], {"a": 1}
    root = {"l": inner_list, "d": inner_dict}
    apply_patch(root, ("assign", ("l",), [3]))
    apply_patch(root, ("assign", ("d",), {"z": 0, "y": 1}))
    assert root["l"] is inner_list and inner_list == [3]
    assert root["d"] is inner_dict and list(inner_dict.items()) == [("z", 0), ("y", 1)]


@pytest.mark.parametrize("position", [0, 1, 2, 3, 10])
def test_put_at_restores_dict_order(position: int) -> None:
    """put_at inserts a key as the position-th key (past the end: last), keeping the others' order."""
    root = {"d": {"a": 1, "b": 2, "c": 3}}
    apply_patch(root, ("put_at", ("d",), "new", 0, position))
    expected = ["a", "b", "c"]
    expected.insert(position, "new")
    assert list(root["d"]) == expected
    assert root["d"]["new"] == 0 and root["d"]["b"] == 2


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(st.text(max_size=2), min_size=1, max_size=6, unique=True), data=st.data())
def test_delete_then_put_at_is_the_identity(keys: list, data: st.DataObject) -> None:
    """Deleting any key and putting it back at its old position restores the exact order."""
    node = {key: index for index, key in enumerate(keys)}
    position = data.draw(st.integers(0, len(keys) - 1))
    key = keys[position]
    root = {"d": node}
    apply_patch(root, ("delete", ("d",), key))
    apply_patch(root, ("put_at", ("d",), key, position, position))
    assert list(root["d"].items()) == [(k, i) for i, k in enumerate(keys)]


def test_unknown_patch_kind_is_an_error() -> None:
    """Only the listed patch kinds exist."""
    with pytest.raises(KeyError):
        apply_patch({}, ("rename", (), "a", "b"))
