"""The blob folder: where the server keeps the content of ``pyzdb.File`` values.

``<store>.blobs/<id>-<name>`` holds one file per stored :class:`File`.  A
write carrying files is rewritten before it is journaled: a file moved in
from the server's disk or uploaded in a request frame becomes a *stored*
file (blob id, size, location), so replaying the journal never moves or
uploads anything again.  Each blob is fsynced into place before the write
that refers to it is journaled.

``File("/path/on/server")`` moves a file of the server's own disk, so it is
refused (``NotAllowedError``) unless the server was started with
``--import-dir DIR`` and the file's real path (symlinks and ``..``
resolved) lies inside one of those folders; the store's own files (the
store, its journals, its lock, its temporary files, the blob folder) are
never importable.  The checks run before the write is planned, and the move
only once the write is known to be valid, so a refused or failing write
moves nothing.

After a snapshot, blobs that neither the store nor its undo history refer to
are deleted (only those older than the snapshot, so a blob taken in while the
snapshot was written is kept): deleting or undoing never leaves a dangling
reference, and a save leaves no orphans.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from pyzdb import errors, protocol
from pyzdb.files import File, files_in
from pyzdb.protocol import Request
from pyzdb.storage.snapshot import fsync_folder

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class BlobStore:
    """The blob folder of one store."""

    def __init__(self, store_path: str | os.PathLike, import_dirs: tuple[str, ...] = ()) -> None:
        """The blob folder beside ``store_path``; ``import_dirs`` are the ``--import-dir`` folders."""
        store_path = Path(store_path).absolute()
        self.folder = store_path.with_name(store_path.name + ".blobs")
        self._store_name = store_path.name
        self._store_dir = Path(os.path.realpath(store_path.parent))
        self.import_dirs = tuple(_import_dir(folder) for folder in import_dirs)

    def check(self, request: Request) -> list[File]:
        """The request's files, once each may be taken in; raises (changing nothing) otherwise."""
        found = files_in(list(request.args)) + files_in(list(request.kwargs.values()))
        frames = {f.frame for f in found if f.frame is not None}
        if frames != set(range(1, len(request.uploads) + 1)):
            raise errors.ProtocolError("every extra frame must be the content of exactly one $file")
        for file in found:
            if file.stored:
                if "/" in file.blob or not (self.folder / file.blob).is_file():
                    raise ValueError(f"no blob {file.blob!r} in this store")
            elif file.source is not None:
                file.source = str(self.importable(file.source))
        return found

    def importable(self, source: str) -> Path:
        """The real path of ``File(source)`` if the server may move it in; ``NotAllowedError`` if not."""
        if not self.import_dirs:
            raise errors.NotAllowedError(
                f"File({source!r}) would move a file of the server's; the server takes them only "
                "from folders named with --import-dir (File.upload() sends a file's content instead)"
            )
        real = Path(os.path.realpath(source))  # symlinks and '..' resolved
        if not any(real.is_relative_to(folder) for folder in self.import_dirs):
            raise errors.NotAllowedError(f"File({source!r}) is outside the server's --import-dir folders")
        if self._is_own(real):
            raise errors.NotAllowedError(f"File({source!r}) is one of the store's own files")
        if not real.is_file():
            raise ValueError(f"cannot store File({source!r}): no such file on the server")
        return real

    def _is_own(self, real: Path) -> bool:
        """True for the store, its journals, lock and temporary files, and anything in the blob folder."""
        blobs = Path(os.path.realpath(self.folder))
        if real.is_relative_to(blobs) or real.is_relative_to(self.folder):
            return True
        return real.parent == self._store_dir and real.name.startswith(self._store_name)

    def ingest(self, request: Request) -> Request:
        """Take the request's files into the folder; return the request as it must be journaled.

        Call :meth:`check` first, and this only once the write is known to be valid.
        """
        found = self.check(request)
        if not found:
            return request
        for file in found:
            self._take(file, request.uploads)
        raw = protocol.encode_request(
            protocol.build_request(
                request.op,
                request.path,
                request.method,
                request.args,
                request.kwargs,
                id=request.id,
                client=request.client,
                seq=request.seq,
                token=request.token,
            )
        )
        return dataclasses.replace(request, raw=raw, uploads=())

    def _take(self, file: File, uploads: tuple[bytes, ...]) -> None:
        if file.stored:
            return
        self.folder.mkdir(exist_ok=True)
        blob = f"{os.urandom(8).hex()}-{_UNSAFE.sub('_', file.name)[:100]}"
        target = self.folder / blob
        if file.frame is not None:
            _write_durably(target, uploads[file.frame - 1])
        else:
            _move_in(Path(file.source), target)
        file.blob, file.location, file.size = blob, str(target), target.stat().st_size
        file.source = file.content = file.frame = None

    def collect(self, state: Any, older_than: float) -> int:
        """Delete blobs nothing in ``state`` refers to and older than ``older_than``; return how many."""
        if not self.folder.is_dir():
            return 0
        names = os.listdir(self.folder)
        if not names:
            return 0
        referenced = {file.blob for file in files_in(state)}
        removed = 0
        for name in names:
            path = self.folder / name
            if name not in referenced and path.stat().st_mtime < older_than:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _import_dir(folder: str) -> Path:
    """The real path of an ``--import-dir`` folder; ``ValueError`` if it is not a folder."""
    real = Path(os.path.realpath(folder))
    if not real.is_dir():
        raise ValueError(f"--import-dir {folder}: not a folder")
    return real


def _move_in(source: Path, target: Path) -> None:
    if not source.is_file():
        raise ValueError(f"cannot store File({str(source)!r}): no such file on the server")
    try:
        shutil.move(source, target)
        now = time.time()
        os.utime(target, (now, now))  # the move kept the old mtime; collect() must see it as new
        with open(target, "rb") as handle:
            os.fsync(handle.fileno())
        fsync_folder(target.parent)
    except OSError as exc:
        raise errors.StorageError(f"cannot move {source} into the blob folder: {exc}") from None


def _write_durably(target: Path, content: bytes) -> None:
    tmp = target.with_name(target.name + ".part")
    try:
        with open(tmp, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_folder(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise errors.StorageError(f"cannot store the uploaded file: {exc}") from None
