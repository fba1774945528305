"""``pyzdb.File``: large binary content kept as a file in the server's blob folder (no I/O here).

Three forms of the same value:

* ``File("/path/on/server")``: a file already on the server's machine; the
  server *moves* it into its blob folder when the write arrives.
* ``File.upload("local/path")`` or ``File(name="x.bin", content=b"...")``:
  the client ships the bytes as an extra ZeroMQ frame of the request (not
  base64 inside the JSON).
* a stored file, as read back: ``name``, ``size`` and ``location`` (its path on
  the server), plus the ``blob`` id the server knows it by.
"""

from __future__ import annotations

import os
from typing import Any


class File:
    """A reference to a file stored by the server."""

    __slots__ = ("name", "size", "location", "blob", "source", "content", "frame")

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        name: str | None = None,
        content: bytes | None = None,
        size: int | None = None,
        location: str | None = None,
        blob: str | None = None,
        frame: int | None = None,
    ) -> None:
        if (path is None) == (content is None) and blob is None and frame is None:
            raise TypeError("File needs either a path on the server or the content to upload")
        if content is not None and type(content) is not bytes:
            raise TypeError("File content must be bytes")
        self.source = None if path is None else os.fspath(path)
        self.name = name or (os.path.basename(self.source) if self.source else "file")
        self.content = content
        self.size = len(content) if content is not None else size
        self.location = location
        self.blob = blob
        self.frame = frame
        """On the server, before the upload is stored: the request frame holding the content."""

    @classmethod
    def upload(cls, local_path: str | os.PathLike, name: str | None = None) -> File:
        """A file of this (client) machine, whose content travels with the request."""
        with open(local_path, "rb") as handle:
            return cls(name=name or os.path.basename(os.fspath(local_path)), content=handle.read())

    @property
    def stored(self) -> bool:
        """True for a file the server has already taken into its blob folder."""
        return self.blob is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, File):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def _identity(self) -> tuple:
        return (self.name, self.blob, self.source, self.content, self.size)

    def __repr__(self) -> str:
        if self.stored:
            return f"File(name={self.name!r}, size={self.size}, location={self.location!r})"
        if self.source is not None:
            return f"File({self.source!r})"
        return f"File(name={self.name!r}, content=<{self.size} bytes>)"

    def __getstate__(self) -> dict:
        return {slot: getattr(self, slot) for slot in self.__slots__}

    def __setstate__(self, state: dict) -> None:
        for slot in self.__slots__:
            setattr(self, slot, state.get(slot))


def from_wire(payload: dict) -> File:
    """Decode the payload of a ``$file`` tag (raises TypeError/ValueError when malformed)."""
    fields = {"name": str, "size": int, "location": str, "blob": str, "path": str, "frame": int}
    if type(payload) is not dict or not set(payload) <= set(fields):
        raise ValueError(f"a $file has only the fields {sorted(fields)}")
    for key, value in payload.items():
        if value is not None and type(value) is not fields[key]:
            raise TypeError(f"$file field {key!r} must be {fields[key].__name__}")
    if payload.get("blob") is not None:
        return File(
            name=payload.get("name"),
            size=payload.get("size"),
            location=payload.get("location"),
            blob=payload["blob"],
        )
    if payload.get("path") is not None:
        return File(payload["path"], name=payload.get("name"))
    if payload.get("frame") is not None:
        return File(name=payload.get("name"), frame=payload["frame"])
    raise ValueError("a $file needs a blob, a path or a frame")


def files_in(value: Any, depth: int = 0) -> list[File]:
    """Every :class:`File` inside a value (lists, tuples, dict values)."""
    kind = type(value)
    if kind is File:
        return [value]
    if kind in (list, tuple):
        return [f for item in value for f in files_in(item, depth + 1)]
    if kind is dict:
        return [f for item in value.values() for f in files_in(item, depth + 1)]
    return []
