"""A first end-to-end check: the SPEC §3 application example against a real server."""

import signal

from pyzdb.client import client


def test_spec_application_example(server):
    db, conn = client(server.write_uri, timeout=10)
    db["x"] = 3
    x = db["x"]._run()
    db["l"] = range(10)
    odd_squares = [v * v for v in db["l"] if v % 2]
    db["l"].append(10)
    n = len(db["l"])
    ok = "x" in db
    db.save()
    db.undo()
    assert len(db["l"]) == 10
    db.redo()
    conn.close()
    assert (x, odd_squares, n, ok) == (3, [1, 9, 25, 49, 81], 11, True)


def test_sigterm_saves_and_exits_zero(server, tmp_path):
    db, conn = client(server.write_uri, timeout=10)
    db["kept"] = {"a": [1, 2, (3, 4)], 5: b"bytes"}
    conn.close()
    assert server.stop(signal.SIGTERM) == 0
    server.start()
    db, conn = client(server.write_uri, timeout=10)
    assert db["kept"]._run() == {"a": [1, 2, (3, 4)], 5: b"bytes"}
    conn.close()
