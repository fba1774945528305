"""``File("/path/on/server")`` only from ``--import-dir`` folders (SPEC §4, §11), with real servers.

Each abuse the security issue lists is reproduced and must now be refused,
leaving the file where it was: moving any file the server's user can reach
(even with a write that then fails), storing a journal (a SIGKILL would then
lose every acknowledged write) and storing the store's lock (a second
read-write server would then start on the same store).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers import ServerProcess, child_env, free_port_base, python_command
from pyzdb import errors
from pyzdb.client import Connection
from pyzdb.files import File


@pytest.fixture
def inbox(tmp_path):
    """The one folder the server may import from."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path):
    """A file the server's user can reach, outside the import folder."""
    path = tmp_path / "elsewhere" / "private.txt"
    path.parent.mkdir()
    path.write_bytes(b"not yours")
    return path


def start(tmp_path, *import_dirs) -> ServerProcess:
    extra = [arg for folder in import_dirs for arg in ("--import-dir", str(folder))]
    return ServerProcess(tmp_path / "db.pkl", None, *extra).start()


def test_without_import_dir_no_server_file_is_taken(tmp_path, outside):
    server = start(tmp_path)
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            with pytest.raises(errors.NotAllowedError, match="--import-dir"):
                conn.db["x"] = File(outside)
            assert "x" not in conn.db
            conn.db["u"] = File.upload(outside)  # an upload always works for writers
            assert open(conn.db["u"]._run().location, "rb").read() == b"not yours"
    finally:
        server.stop()
    assert outside.read_bytes() == b"not yours"


def test_inside_outside_symlink_and_dotdot(tmp_path, inbox, outside):
    inside = inbox / "ok.bin"
    inside.write_bytes(b"mine")
    (inbox / "link").symlink_to(outside)
    (inbox / "sub").mkdir()
    server = start(tmp_path, inbox)
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            conn.db["ok"] = File(inside)
            assert open(conn.db["ok"]._run().location, "rb").read() == b"mine"
            for attempt in (
                outside,
                inbox / "link",
                inbox / "sub" / ".." / ".." / "elsewhere" / "private.txt",
            ):
                with pytest.raises(errors.NotAllowedError, match="outside the server's --import-dir"):
                    conn.db["bad"] = File(attempt)
            assert "bad" not in conn.db
    finally:
        server.stop()
    assert not inside.exists()
    assert outside.read_bytes() == b"not yours"
    assert (inbox / "link").is_symlink()


def test_a_write_that_fails_moves_nothing(tmp_path, inbox):
    source = inbox / "keep.bin"
    source.write_bytes(b"keep me")
    server = start(tmp_path, inbox)
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            with pytest.raises(KeyError):
                conn.db["nope"]["x"] = File(source)
            conn.db["l"] = []
            with pytest.raises(IndexError):
                conn.db["l"][5] = File(source)
            conn.db.save()  # a save used to delete the orphaned blob for good
            assert source.read_bytes() == b"keep me"
            assert conn.db._run() == {"l": []}
    finally:
        server.stop()
    assert source.read_bytes() == b"keep me"


def test_the_store_journal_cannot_be_taken_and_sigkill_loses_nothing(tmp_path):
    server = start(tmp_path, tmp_path)  # even with the store's own folder importable
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            conn.db["x"] = 1
            journals = sorted(tmp_path.glob("db.pkl.journal.*"))
            assert journals
            for own in (*journals, tmp_path / "db.pkl.lock"):
                with pytest.raises(errors.NotAllowedError, match="store's own files"):
                    conn.db["j"] = File(own)
            conn.db["y"] = 2
        server.kill()
        server.start()
        with Connection(server.write_uri, timeout=10) as conn:
            assert conn.db._run() == {"x": 1, "y": 2}
    finally:
        server.stop()


def test_the_store_lock_cannot_be_taken_so_a_second_writer_still_refuses(tmp_path):
    lock = tmp_path / "db.pkl.lock"
    link = tmp_path / "inbox"
    link.mkdir()
    (link / "lock-link").symlink_to(lock)
    server = start(tmp_path, tmp_path, link)
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            for attempt in (lock, link / "lock-link", link / ".." / "db.pkl"):
                with pytest.raises(errors.NotAllowedError, match="store's own files"):
                    conn.db["l"] = File(attempt)
        blob_folder = tmp_path / "db.pkl.blobs"
        assert not blob_folder.exists() or not os.listdir(blob_folder)
        second = subprocess.run(
            python_command("server", "--db", str(tmp_path / "db.pkl"), "--port-base", str(free_port_base())),
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
        )
        assert second.returncode == 1 and "cannot start" in second.stderr
    finally:
        server.stop()


def test_a_stored_blob_cannot_be_imported_again(tmp_path, inbox):
    server = start(tmp_path, tmp_path)
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            conn.db["u"] = File(name="u.bin", content=b"U")
            location = conn.db["u"]._run().location
            with pytest.raises(errors.NotAllowedError, match="store's own files"):
                conn.db["again"] = File(location)
            assert open(location, "rb").read() == b"U"
    finally:
        server.stop()


def test_import_dir_that_is_not_a_folder_stops_start_up(tmp_path):
    result = subprocess.run(
        python_command(
            "server",
            "--db",
            str(tmp_path / "db.pkl"),
            "--import-dir",
            str(tmp_path / "missing"),
            "--port-base",
            str(free_port_base()),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert result.returncode == 1
    assert "--import-dir" in result.stderr and "not a folder" in result.stderr
