"""Every exception pyzdb raises, under one root.

::

    PyzdbError
     ├── ProtocolError          malformed, oversized or unsupported message
     ├── NotAllowedError        operation outside the allowlist (also AttributeError)
     ├── ReadOnlyError          a write sent to a read-only server
 ├── PermissionDeniedError  a write (lock, save, exec) sent with a read-only CURVE key
     ├── ReplicaBehindError     a read-your-writes read reached a replica that is behind
     ├── UndoError              nothing to undo / nothing to redo
     ├── LockError              lock misuse: not held, expired, already held
     ├── ExecNotAllowedError    exec client used on a server without --allow-exec
     ├── ExecError              the code sent by the exec client raised
     ├── StorageError           the server could not write to disk
     ├── AlreadyAppliedError    a resent write was applied before; its reply was too big to keep
     ├── ChangedError           a consistent stream's value changed between two pages
     ├── TooLargeError          a reply larger than the client's memory_limit, or an item over page_bytes
     ├── ConnectionError        (also builtins.ConnectionError) transport failure
     │    └── TimeoutError      (also builtins.TimeoutError) no reply in time
     ├── InternalError          a bug in the server; the message says where
     └── ServerError            an error raised by the operation itself on the
          │                     server, re-raised on the client as a subclass of
          │                     the same builtin type (``except KeyError`` works);
          │                     a type this client does not know stays a plain
          │                     ServerError whose message starts with the type
          └── ServerKeyError, ServerIndexError, ServerTypeError, ServerValueError,
              ServerZeroDivisionError, ServerOverflowError, ServerAttributeError,
              ServerRecursionError

``pyzdb.codec.UnsupportedTypeError`` (a value pyzdb cannot store) is a
PyzdbError and a TypeError; it travels as ``TypeError``.

Each class has a ``wire_name``: the ``type`` string used in error replies
(see docs/protocol.md).  :func:`from_wire` turns a reply's error back into an
exception; :func:`to_wire` does the reverse on the server.
"""

from __future__ import annotations

import builtins


class PyzdbError(Exception):
    """Root of every pyzdb exception."""

    wire_name = "PyzdbError"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ProtocolError(PyzdbError):
    """A message that does not follow docs/protocol.md."""

    wire_name = "ProtocolError"


class NotAllowedError(PyzdbError, AttributeError):
    """An operation, attribute or argument outside pyzdb's allowlist."""

    wire_name = "NotAllowedError"


class ReadOnlyError(PyzdbError):
    """A write request reached a read-only server."""

    wire_name = "ReadOnlyError"


class PermissionDeniedError(PyzdbError):
    """A write, ``lock()``, ``save()`` or exec sent with a read-only CURVE key (``--curve``)."""

    wire_name = "PermissionDeniedError"


class ReplicaBehindError(PyzdbError):
    """A read asked a replica for a write it has not applied yet (read-your-writes)."""

    wire_name = "ReplicaBehindError"


class UndoError(PyzdbError):
    """``undo()`` or ``redo()`` with nothing to undo or redo."""

    wire_name = "UndoError"


class LockError(PyzdbError):
    """Lock misuse: unlocking a lock not held, or a lease that expired."""

    wire_name = "LockError"


class ExecNotAllowedError(PyzdbError):
    """The exec client was used on a server started without --allow-exec."""

    wire_name = "ExecNotAllowedError"


class ExecError(PyzdbError):
    """Code run by the exec client raised; the message names the exception."""

    wire_name = "ExecError"


class StorageError(PyzdbError):
    """The server could not write the store or its journal to disk."""

    wire_name = "StorageError"


class AlreadyAppliedError(PyzdbError):
    """A resent write had already been applied, and its reply was too large to keep for the resend."""

    wire_name = "AlreadyAppliedError"


class ChangedError(PyzdbError):
    """A value streamed with ``consistent=True`` changed between two of its pages."""

    wire_name = "ChangedError"


class TooLargeError(PyzdbError):
    """A reply over the connection's ``memory_limit`` (not sent), or a streamed item over ``page_bytes``."""

    wire_name = "TooLargeError"


class ConnectionError(PyzdbError, builtins.ConnectionError):  # noqa: A001
    """The client could not reach the server."""

    wire_name = "ConnectionError"


class TimeoutError(ConnectionError, builtins.TimeoutError):  # noqa: A001
    """No reply arrived within the client's timeout."""

    wire_name = "TimeoutError"


class InternalError(PyzdbError):
    """An unexpected failure inside the server (a bug: please report it)."""

    wire_name = "InternalError"


class ServerError(PyzdbError):
    """Base of errors raised by an operation itself on the server."""


def _server_error(builtin: type[BaseException]) -> type[ServerError]:
    name = builtin.__name__
    cls = type(
        f"Server{name}",
        (ServerError, builtin),
        {
            "__doc__": f"A {name} raised on the server.",
            "wire_name": name,
            "__module__": __name__,
            "__str__": ServerError.__str__,
        },
    )
    return cls


ServerKeyError = _server_error(KeyError)
ServerIndexError = _server_error(IndexError)
ServerTypeError = _server_error(TypeError)
ServerValueError = _server_error(ValueError)
ServerZeroDivisionError = _server_error(ZeroDivisionError)
ServerOverflowError = _server_error(OverflowError)
ServerAttributeError = _server_error(AttributeError)
ServerRecursionError = _server_error(RecursionError)

_BY_WIRE_NAME: dict[str, type[PyzdbError]] = {
    cls.wire_name: cls
    for cls in (
        ProtocolError,
        NotAllowedError,
        ReadOnlyError,
        PermissionDeniedError,
        ReplicaBehindError,
        UndoError,
        LockError,
        ExecNotAllowedError,
        ExecError,
        StorageError,
        AlreadyAppliedError,
        ChangedError,
        TooLargeError,
        ConnectionError,
        TimeoutError,
        InternalError,
        ServerKeyError,
        ServerIndexError,
        ServerTypeError,
        ServerValueError,
        ServerZeroDivisionError,
        ServerOverflowError,
        ServerAttributeError,
        ServerRecursionError,
    )
}


def display_name(exc: BaseException) -> str:
    """The name a user should see for ``exc``: ``KeyError``, not ``ServerKeyError``."""
    return getattr(exc, "wire_name", type(exc).__name__)


def to_wire(exc: BaseException) -> tuple[str, str]:
    """Return ``(type, message)`` for an error reply."""
    if isinstance(exc, PyzdbError):
        return exc.wire_name, exc.message
    name = type(exc).__name__
    for builtin in (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError, OverflowError):
        if isinstance(exc, builtin):
            name = builtin.__name__
            break
    try:
        message = str(exc)
    except ValueError:  # KeyError(n) for an int n too long to print: the reply must still go out
        message = f"({name} message too long to show)"
    return name, message


def from_wire(name: str, message: str) -> PyzdbError:
    """Build the exception for an error reply's ``type`` and ``message``."""
    cls = _BY_WIRE_NAME.get(name)
    if cls is None:
        return ServerError(f"{name}: {message}")
    return cls(message)
