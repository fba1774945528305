"""pyzdb.File end to end: files moved in or uploaded, read back, kept consistent by undo and saves."""

from __future__ import annotations

import pytest
import zmq

from helpers import ServerProcess
from pyzdb import errors, protocol
from pyzdb.client import Connection
from pyzdb.files import File


@pytest.fixture
def inbox(tmp_path):
    """The folder the ``importing`` server may move files from."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def importing(tmp_path, inbox):
    """A read-write server started with ``--import-dir inbox``."""
    proc = ServerProcess(tmp_path / "db.pkl", None, "--import-dir", str(inbox)).start()
    yield proc
    proc.stop()


def _blobs(server: ServerProcess) -> list[str]:
    folder = server.db.with_name(server.db.name + ".blobs")
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".part")) if folder.exists() else []


def test_server_file_is_moved_into_the_blob_folder(importing, inbox):
    source = inbox / "report.pdf"
    source.write_bytes(b"%PDF-1.4 fake")
    with Connection(importing.write_uri, timeout=10) as conn:
        conn.db["doc"] = File(source)
        stored = conn.db["doc"]._run()
    assert isinstance(stored, File) and stored.name == "report.pdf" and stored.size == 13
    assert not source.exists(), "the server moves the file in"
    assert open(stored.location, "rb").read() == b"%PDF-1.4 fake"
    assert _blobs(importing) == [stored.blob]


def test_upload_travels_as_a_frame_and_nests(server, db, tmp_path):
    local = tmp_path / "photo.jpg"
    local.write_bytes(bytes(range(256)) * 40)
    db["album"] = [File.upload(local), {"thumb": File(name="t.png", content=b"\x89PNG")}]
    photo, other = db["album"]._run()
    assert open(photo.location, "rb").read() == local.read_bytes()
    assert open(other["thumb"].location, "rb").read() == b"\x89PNG"
    assert db["album"][0]._run() == photo


def test_missing_server_file_is_a_clear_error_and_changes_nothing(importing, inbox):
    with Connection(importing.write_uri, timeout=10) as conn:
        with pytest.raises(ValueError, match="no such file"):
            conn.db["x"] = File(inbox / "absent")
        assert "x" not in conn.db


def test_forged_blob_reference_is_refused(conn):
    with pytest.raises(ValueError, match="no blob"):
        conn.db["x"] = File(name="passwd", blob="../../etc/passwd")


def test_delete_keeps_blob_for_undo_and_save_drops_orphans(tmp_path):
    server = ServerProcess(tmp_path / "db.pkl", None, "--undo-limit", "1").start()
    try:
        with Connection(server.write_uri, timeout=10) as conn:
            db = conn.db
            db["a"] = File(name="a.txt", content=b"A")
            db["b"] = File(name="b.txt", content=b"B")
            a, b = db["a"]._run(), db["b"]._run()
            del db["a"]
            db.save()
            assert _blobs(server) == sorted([a.blob, b.blob]), "undo can still bring a.txt back"
            db.undo()
            assert open(db["a"]._run().location, "rb").read() == b"A"
            del db["a"]
            db["c"] = 1  # pushes the deletion of a.txt out of the one-step history
            db.save()
            assert _blobs(server) == [b.blob], "nothing refers to a.txt any more: no orphan after a save"
    finally:
        server.stop()


def test_files_survive_sigkill_and_journal_replay(importing, inbox):
    server = importing
    source = inbox / "data.bin"
    source.write_bytes(b"payload")
    with Connection(server.write_uri, timeout=10) as conn:
        conn.db["f"] = File(source)
        conn.db["u"] = File(name="u.bin", content=b"uploaded")
        before = conn.db._run()
    server.kill()
    server.start()
    with Connection(server.write_uri, timeout=10) as conn:
        assert conn.db._run() == before
        assert open(conn.db["u"]._run().location, "rb").read() == b"uploaded"
    assert len(_blobs(server)) == 2


def test_extra_frames_without_files_are_refused(server):
    context = zmq.Context()
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(server.write_uri)
    try:
        sock.send_multipart([b'{"v":1,"op":"set","path":["x"],"args":[1]}', b"stray"])
        assert sock.poll(5000)
        with pytest.raises(errors.ProtocolError, match="extra frame"):
            protocol.decode_reply(sock.recv())
    finally:
        sock.close()
        context.term()


def test_file_is_importable_from_the_package_root():
    import pyzdb

    assert pyzdb.File is File
