"""The exception tree of pyzdb.errors and its wire form (no I/O)."""

from __future__ import annotations

import builtins
import inspect

import pytest

import pyzdb
from pyzdb import codec, errors

EXCEPTION_NAMES = {
    "PyzdbError",
    "ProtocolError",
    "NotAllowedError",
    "ReadOnlyError",
    "PermissionDeniedError",
    "ReplicaBehindError",
    "UndoError",
    "LockError",
    "ExecNotAllowedError",
    "ExecError",
    "StorageError",
    "AlreadyAppliedError",
    "ChangedError",
    "TooLargeError",
    "ConnectionError",
    "TimeoutError",
    "InternalError",
    "ServerError",
    "ServerKeyError",
    "ServerIndexError",
    "ServerTypeError",
    "ServerValueError",
    "ServerZeroDivisionError",
    "ServerOverflowError",
    "ServerAttributeError",
    "ServerRecursionError",
}
SERVER_ERRORS = {
    errors.ServerKeyError: KeyError,
    errors.ServerIndexError: IndexError,
    errors.ServerTypeError: TypeError,
    errors.ServerValueError: ValueError,
    errors.ServerZeroDivisionError: ZeroDivisionError,
    errors.ServerOverflowError: OverflowError,
    errors.ServerAttributeError: AttributeError,
    errors.ServerRecursionError: RecursionError,
}
WIRE_CLASSES = [getattr(errors, name) for name in sorted(EXCEPTION_NAMES - {"PyzdbError", "ServerError"})]


def defined_in(module) -> set[str]:
    """Public names whose object was defined in ``module`` itself (not imported)."""
    return {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__
    }


def test_exported_members():
    """pyzdb.__all__ lists exactly the public, non-module names of the package."""
    public = {
        name for name, obj in vars(pyzdb).items() if not name.startswith("_") and not inspect.ismodule(obj)
    }
    assert set(pyzdb.__all__) - {"__version__"} == public | set(pyzdb._LAZY)
    assert all(hasattr(pyzdb, name) for name in pyzdb.__all__)
    assert pyzdb.PyzdbError is errors.PyzdbError


def test_errors_module_members():
    """The module defines the tree, the three helpers, and nothing else public."""
    assert defined_in(errors) == EXCEPTION_NAMES | {"display_name", "to_wire", "from_wire"}


@pytest.mark.parametrize("name", sorted(EXCEPTION_NAMES))
def test_every_class_is_a_pyzdb_error_drawn_in_the_docstring(name):
    cls = getattr(errors, name)
    assert issubclass(cls, errors.PyzdbError)
    assert cls.__doc__, f"{name} has no docstring"
    assert name in errors.__doc__


def test_builtin_bases():
    assert issubclass(errors.NotAllowedError, AttributeError)
    assert issubclass(errors.ConnectionError, builtins.ConnectionError)
    assert issubclass(errors.TimeoutError, builtins.TimeoutError)
    assert issubclass(errors.TimeoutError, builtins.ConnectionError)
    assert issubclass(errors.TimeoutError, errors.ConnectionError)
    assert issubclass(codec.UnsupportedTypeError, TypeError)
    assert issubclass(codec.UnsupportedTypeError, errors.PyzdbError)
    for cls, builtin in SERVER_ERRORS.items():
        assert issubclass(cls, builtin)
        assert issubclass(cls, errors.ServerError)


def test_server_key_error_reads_like_a_key_error():
    exc = errors.ServerKeyError("'nope'")
    assert str(exc) == "'nope'"  # KeyError would add quotes around its argument
    assert errors.display_name(exc) == "KeyError"
    with pytest.raises(KeyError):
        raise exc


def test_timeout_is_caught_as_builtin_timeout():
    with pytest.raises(builtins.TimeoutError):
        raise errors.TimeoutError("no reply in 1.0 s")
    assert str(errors.TimeoutError("no reply in 1.0 s")) == "no reply in 1.0 s"


@pytest.mark.parametrize("cls", WIRE_CLASSES, ids=lambda cls: cls.__name__)
def test_wire_round_trip(cls):
    name, message = errors.to_wire(cls("it went wrong: 'x' ü"))
    back = errors.from_wire(name, message)
    assert type(back) is cls
    assert str(back) == "it went wrong: 'x' ü"
    assert errors.display_name(back) == name


@pytest.mark.parametrize(
    "exc, wire",
    [
        (KeyError("nope"), ("KeyError", "'nope'")),
        (IndexError("list index out of range"), ("IndexError", "list index out of range")),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), ("ValueError", None)),
        (codec.UnsupportedTypeError("cannot store a value of type set at value"), ("TypeError", None)),
        (ZeroDivisionError("division by zero"), ("ZeroDivisionError", "division by zero")),
        (RecursionError("too deep"), ("RecursionError", "too deep")),
    ],
)
def test_builtin_errors_travel_as_their_builtin_type(exc, wire):
    name, message = errors.to_wire(exc)
    assert name == wire[0]
    assert message == (wire[1] if wire[1] is not None else str(exc))
    back = errors.from_wire(name, message)
    assert isinstance(back, getattr(builtins, name))
    assert isinstance(back, errors.ServerError)
    assert str(back) == message


def test_unknown_wire_type_becomes_a_plain_server_error():
    exc = errors.from_wire("ModuleNotFoundError", "No module named 'x'")
    assert type(exc) is errors.ServerError
    assert str(exc) == "ModuleNotFoundError: No module named 'x'"
    assert not isinstance(exc, ImportError)
