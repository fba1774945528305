"""End-to-end tests of the read-write server: hostile input, signals, errors, and the client against it.

Every test talks to a real server process over real ZeroMQ sockets.  The
hostile messages are sent over raw pyzmq sockets, so they reach the server
exactly as written, bypassing everything the client would check.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from helpers import ServerProcess, free_port_base, raw_request, run_clients
from pyzdb import errors, protocol
from pyzdb.client import Connection, client, connect
from pyzdb.storage import snapshot

SAMPLE = {"n": 1, "l": [1, 2, 3], "s": "abc", "d": {"k": [None, True]}, 5: (1, b"x")}


# --- helpers -----------------------------------------------------------------------


@pytest.fixture
def shared_db(shared: ServerProcess) -> Iterator[Any]:
    """The root of ``shared``, holding exactly :data:`SAMPLE`."""
    with Connection(shared.write_uri, timeout=10) as conn:
        conn.db.clear()
        conn.db.update(SAMPLE)
        yield conn.db


def assert_serving(proc: ServerProcess) -> None:
    """The process is alive and answers a normal request."""
    assert proc.process.poll() is None, proc.log()
    with Connection(proc.write_uri, timeout=5) as conn:
        assert conn.call("ping")["version"] == protocol.VERSION


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (nan equals nan)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return repr(a) == repr(b)  # nan equals nan, -0.0 differs from 0.0
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return (
            list(a) == list(b)
            and all(type(k) is type(j) for k, j in zip(a, b, strict=True))
            and all(same(a[k], b[k]) for k in a)
        )
    return a == b


def request(message: str) -> bytes:
    """A request written by hand (the protocol version is added in front)."""
    return b'{"v":1,' + message.encode() + b"}"


# --- hostile input -----------------------------------------------------------------

HOSTILE = {
    "not-json": ([b"not json"], errors.ProtocolError),
    "empty": ([b""], errors.ProtocolError),
    "json-array": ([b"[1, 2]"], errors.ProtocolError),
    "json-string": ([b'"get"'], errors.ProtocolError),
    "missing-version": ([b'{"op": "get"}'], errors.ProtocolError),
    "wrong-version": ([b'{"v": 2, "op": "get"}'], errors.ProtocolError),
    "version-as-string": ([b'{"v": "1", "op": "get"}'], errors.ProtocolError),
    "missing-op": ([b'{"v": 1}'], errors.ProtocolError),
    "call-without-method": ([request('"op":"call"')], errors.ProtocolError),
    "set-without-value": ([request('"op":"set","path":["n"]')], errors.ProtocolError),
    "set-without-path": ([request('"op":"set","args":[1]')], errors.ProtocolError),
    "args-not-array": ([request('"op":"set","path":["n"],"args":{"a":1}')], errors.ProtocolError),
    "id-is-array": ([request('"op":"get","id":[1]')], errors.ProtocolError),
    "seq-is-bool": (
        [request('"op":"set","path":["n"],"args":[2],"client":"c","seq":true')],
        errors.ProtocolError,
    ),
    "nested-100000": ([b"[" * 100_000 + b"]" * 100_000], errors.ProtocolError),
    "value-nested-100000": (
        [request('"op":"set","path":["n"],"args":[' + "[" * 100_000 + "]" * 100_000 + "]")],
        errors.ProtocolError,
    ),
    "value-nested-150": (
        [request('"op":"set","path":["n"],"args":[' + "[" * 150 + "]" * 150 + "]")],
        errors.ProtocolError,
    ),
    "multipart": ([b"{}", b"x"], errors.ProtocolError),
    "multipart-valid-first": ([request('"op":"set","path":["n"],"args":[9]'), b"x"], errors.ProtocolError),
    "unknown-op": ([request('"op":"drop_everything"')], errors.NotAllowedError),
    "op-is-number": ([request('"op":7')], errors.ProtocolError),
    "dunder-method": ([request('"op":"call","method":"__class__"')], errors.NotAllowedError),
    "dunder-method-write": (
        [request('"op":"call","path":["l"],"method":"__setitem__","args":[0,9]')],
        errors.NotAllowedError,
    ),
    "unknown-method": ([request('"op":"call","method":"system","args":["ls"]')], errors.NotAllowedError),
    "method-of-other-type": ([request('"op":"call","path":["s"],"method":"upper"')], errors.NotAllowedError),
    "bad-inplace-operator": (
        [request('"op":"iop","path":["n"],"method":"__import__","args":["os"]')],
        errors.NotAllowedError,
    ),
    "pow-operator": (
        [request('"op":"iop","path":["n"],"method":"pow","args":[100000]')],
        errors.NotAllowedError,
    ),
    "sort-key": (
        [request('"op":"call","path":["l"],"method":"sort","kwargs":{"key":"len"}')],
        errors.NotAllowedError,
    ),
    "exec-not-allowed": ([request('"op":"exec","args":["import os"]')], errors.ExecNotAllowedError),
    "unlock-not-held": ([request('"op":"unlock"')], errors.LockError),
    "path-not-array": ([request('"op":"get","path":"abc"')], errors.ProtocolError),
    "path-step-list": ([request('"op":"get","path":[[1]]')], errors.ProtocolError),
    "path-step-object": ([request('"op":"get","path":[{"a":1}]')], errors.ProtocolError),
    "path-unknown-tag": ([request('"op":"get","path":[{"$eval":"1"}]')], errors.ProtocolError),
    "path-slice-bad-bound": (
        [request('"op":"get","path":["l",{"$slice":[1,"a",null]}]')],
        errors.ProtocolError,
    ),
    "path-slice-short": ([request('"op":"get","path":["l",{"$slice":[1]}]')], errors.ProtocolError),
    "path-slice-in-middle": (
        [request('"op":"set","path":["l",{"$slice":[0,2,null]},0],"args":[1]')],
        errors.NotAllowedError,
    ),
    "path-slice-step-zero": ([request('"op":"set","path":["l",{"$slice":[0,2,0]}],"args":[[]]')], ValueError),
    "path-slice-of-dict": ([request('"op":"set","path":[{"$slice":[0,2,null]}],"args":[[1]]')], TypeError),
    "invalid-utf8": (
        [request('"op":"set","path":["n"],"args":["') + b"\xc3\x28" + b'"]}'],
        errors.ProtocolError,
    ),
    "utf16-bom": ([b"\xff\xfe{\x00"], errors.ProtocolError),
    "bare-nan": ([request('"op":"set","path":["n"],"args":[NaN]')], errors.ProtocolError),
    "decimal-int-5000-digits": (
        [request('"op":"set","path":["n"],"args":[' + "1" * 5000 + "]")],
        errors.ProtocolError,
    ),
    "bad-bytes-tag": ([request('"op":"set","path":["n"],"args":[{"$bytes":"!!"}]')], errors.ProtocolError),
    "bad-float-tag": ([request('"op":"set","path":["n"],"args":[{"$float":"1e999"}]')], errors.ProtocolError),
    "bad-int-tag": ([request('"op":"set","path":["n"],"args":[{"$int":"zz"}]')], errors.ProtocolError),
    "bad-tuple-tag": ([request('"op":"set","path":["n"],"args":[{"$tuple":5}]')], errors.ProtocolError),
    "unhashable-dict-key": (
        [request('"op":"set","path":["n"],"args":[{"$dict":[[[1],2]]}]')],
        errors.ProtocolError,
    ),
    "repeat-bomb": (
        [request('"op":"iop","path":["s"],"method":"mul","args":[1000000000000000]')],
        ValueError,
    ),
}


@pytest.mark.parametrize("frames, expected", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_request_gets_an_error_and_changes_nothing(
    shared, shared_db, zmq_context, frames: list[bytes], expected: type
) -> None:
    """Each hostile message gets an error reply of the right class; the store and the server survive."""
    before = shared_db._run()
    reply = raw_request(zmq_context, shared.write_uri, frames)
    assert reply is not None and len(reply) == 1
    with pytest.raises(expected) as caught:
        protocol.decode_reply(reply[0])
    assert isinstance(caught.value, errors.PyzdbError)
    assert same(shared_db._run(), before)
    assert_serving(shared)


DEALER_ERRORS = {
    "delimiter-only": [b""],
    "not-json": [b"", b"not json"],
    "multipart": [b"", b"{}", b"x"],
    "second-delimiter": [b"", request('"op":"set","path":["n"],"args":[9]'), b"", b"x"],
}


@pytest.mark.parametrize("frames", list(DEALER_ERRORS.values()), ids=list(DEALER_ERRORS))
def test_hostile_envelope_from_dealer_gets_an_error(shared, shared_db, zmq_context, frames) -> None:
    """A DEALER speaking the REQ envelope by hand gets the same error replies."""
    before = shared_db._run()
    reply = raw_request(zmq_context, shared.write_uri, frames, zmq.DEALER)
    assert reply is not None and reply[0] == b"" and len(reply) == 2
    with pytest.raises(errors.ProtocolError):
        protocol.decode_reply(reply[1])
    assert same(shared_db._run(), before)
    assert_serving(shared)


def test_message_without_delimiter_is_answered_and_changes_nothing(shared, shared_db, zmq_context) -> None:
    """A DEALER that omits the empty delimiter still gets its error reply (after a delimiter)."""
    before = shared_db._run()
    reply = raw_request(zmq_context, shared.write_uri, [b"not json"], zmq.DEALER)
    assert reply is not None and reply[0] == b"" and len(reply) == 2
    with pytest.raises(errors.ProtocolError):
        protocol.decode_reply(reply[1])
    assert same(shared_db._run(), before)
    assert_serving(shared)


def test_forged_envelope_reply_comes_back_to_the_sender_only(shared, shared_db, zmq_context) -> None:
    """Extra routing frames in front of a request travel back to the sender, not elsewhere."""
    frames = [b"someone-else", b"", request('"op":"get","path":["n"]')]
    reply = raw_request(zmq_context, shared.write_uri, frames, zmq.DEALER)
    assert reply is not None and reply[:2] == [b"someone-else", b""]
    assert protocol.decode_reply(reply[2])[1] == 1


def test_oversized_message_is_refused(tmp_path, zmq_context) -> None:
    """Past --max-message-size: an error reply, the store unchanged, the server still serving."""
    proc = ServerProcess(tmp_path / "db.pkl", None, "--max-message-size", "100000")
    try:
        proc.start()
        with Connection(proc.write_uri, timeout=10) as conn:
            conn.db["small"] = "y" * 50_000  # under the limit: accepted
            before = conn.db._run()
            big = request('"op":"set","path":["big"],"args":["' + "x" * 1_000_000 + '"]')
            reply = raw_request(zmq_context, proc.write_uri, [big])
            assert reply is not None
            with pytest.raises(errors.ProtocolError, match="exceeds the limit of 100000"):
                protocol.decode_reply(reply[0])
            assert conn.db._run() == before
        assert_serving(proc)
        assert proc.stop() == 0
    finally:
        proc.stop()


# --- signals and restarts ----------------------------------------------------------

TYPED = {
    1: "int key",
    ("l", 4): "tuple key",
    2.5: "float key",
    None: "None key",
    "bytes": b"\x00\xff raw",
    "floats": [math.nan, math.inf, -math.inf, -0.0, 1e-300],
    "big": [2**100, -(2**64), 2**53 + 1],
    "tuples": ((), (1, (2, b"3")), [(None,)]),
    "nested": {"$dollar": {0: [True, False]}},
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_zero_and_data_survives_with_its_types(server, signum) -> None:
    """SIGTERM / SIGINT: save, release, exit 0; after a restart every value comes back with its types."""
    with Connection(server.write_uri, timeout=10) as conn:
        conn.db["typed"] = TYPED
        assert same(conn.db["typed"]._run(), TYPED)  # through the wire
        assert conn.db["typed"][("l", 4)]._run() == "tuple key"
    assert server.stop(signum) == 0
    assert same(snapshot.load(server.db)["root"]["typed"], TYPED)  # saved on the way out
    server.start()  # the store file was released
    with Connection(server.write_uri, timeout=10) as conn:
        assert same(conn.db["typed"]._run(), TYPED)  # through a save and a restart


def test_undo_history_survives_a_restart(server) -> None:
    """Writes, save(), a hard kill, a restart: the same client undoes and redoes across it."""
    db, conn = client(server.write_uri, timeout=10)
    try:
        db["x"] = 1
        db["x"] = 2
        db["l"] = [1]
        db["l"] += [2, 3]
        db.save()
        server.kill()
        server.start()
        db.undo()
        assert db._run() == {"x": 2, "l": [1]}
        db.undo()
        db.undo()
        assert db._run() == {"x": 1}
        db.redo()
        assert db._run() == {"x": 2}
    finally:
        conn.close()


# --- errors ------------------------------------------------------------------------


def _missing_key(db) -> None:
    db["nope"]._run()


def _index_out_of_range(db) -> None:
    db["l"][10]._run()


def _add_int_to_str(db) -> None:
    db["s"] += 1


def _remove_missing(db) -> None:
    db["l"].remove(99)


def _divide_by_zero(db) -> None:
    db["n"] /= 0


SERVER_ERRORS = {
    "KeyError": (_missing_key, KeyError, "'nope'"),
    "IndexError": (_index_out_of_range, IndexError, "list index out of range"),
    "TypeError": (_add_int_to_str, TypeError, 'can only concatenate str (not "int") to str'),
    "ValueError": (_remove_missing, ValueError, "list.remove(x): x not in list"),
    "ZeroDivisionError": (_divide_by_zero, ZeroDivisionError, "division by zero"),
}


@pytest.mark.parametrize("action, builtin, message", list(SERVER_ERRORS.values()), ids=list(SERVER_ERRORS))
def test_server_errors_come_back_as_the_builtin_type(
    shared_db, action: Callable, builtin: type, message
) -> None:
    """The client raises the builtin type with the server's message; also a PyzdbError; nothing changed."""
    with pytest.raises(builtin) as caught:
        action(shared_db)
    assert isinstance(caught.value, errors.PyzdbError)
    assert str(caught.value) == message
    assert same(shared_db._run(), SAMPLE)


def test_unknown_method_is_not_allowed(shared_db) -> None:
    """``db['l'].foo()`` is refused by the server with NotAllowedError, which is also an AttributeError."""
    with pytest.raises(errors.NotAllowedError, match="'foo'") as caught:
        shared_db["l"].foo()
    assert isinstance(caught.value, AttributeError)


def test_undo_with_nothing_to_undo(db) -> None:
    """A fresh store: undo and redo raise UndoError."""
    with pytest.raises(errors.UndoError):
        db.undo()
    with pytest.raises(errors.UndoError):
        db.redo()


def test_unstorable_value_is_refused_on_the_client(shared_db) -> None:
    """``db['s'] = {1}``: a TypeError naming the type and where it is; the server never sees it."""
    with pytest.raises(TypeError, match="set"):
        shared_db["s"] = {1}
    with pytest.raises(TypeError, match=r"type set at .*\['a'\]\[1\]"):
        shared_db["s"] = {"a": [0, {2}]}
    with pytest.raises(TypeError, match=r"type object at .*\['k'\]"):
        shared_db["l"].append({"k": object()})
    assert same(shared_db._run(), SAMPLE)


# --- the client against the real server -----------------------------------------------


def test_slices_get_set_and_delete(shared_db) -> None:
    """Slices behave as on a local list."""
    local = list(range(10))
    shared_db["l"] = range(10)
    assert shared_db["l"][2:5]._run() == local[2:5]
    assert shared_db["l"][::-3]._run() == local[::-3]
    shared_db["l"][1:3] = ["a", "b", "c"]
    local[1:3] = ["a", "b", "c"]
    shared_db["l"][::4] = [None] * len(local[::4])
    local[::4] = [None] * len(local[::4])
    del shared_db["l"][-3:]
    del local[-3:]
    del shared_db["l"][1::2]
    del local[1::2]
    assert shared_db["l"]._run() == local


def test_iteration_len_contains_and_bool(shared_db) -> None:
    """Iteration, len, in and bool on references."""
    assert [key for key in shared_db] == list(SAMPLE)
    assert [v * 2 for v in shared_db["l"]] == [2, 4, 6]
    assert len(shared_db) == len(SAMPLE) and len(shared_db["s"]) == 3
    assert "n" in shared_db and 5 in shared_db and "zz" not in shared_db and 2 in shared_db["l"]
    shared_db["empty"] = []
    assert bool(shared_db["l"]) and not shared_db["empty"]


def test_method_results(shared_db) -> None:
    """Methods return their results: pop the value, items tuples, get with a default."""
    assert shared_db["l"].pop() == 3
    assert shared_db["l"].pop(0) == 1
    assert shared_db["d"].items() == [("k", [None, True])]
    assert type(shared_db["d"].items()[0]) is tuple
    assert shared_db.get("missing", 42) == 42
    assert shared_db["d"].setdefault("k2", 7) == 7
    assert shared_db["d"].pop("k2") == 7
    assert shared_db["l"]._run() == [2]


def test_inplace_operator_is_one_atomic_request(shared_db, shared) -> None:
    """``db['n'] += 1`` is one request; concurrent clients never lose an increment."""
    conn = shared_db._conn
    sent = []
    real_call = conn.call
    conn.call = lambda *args, **kwargs: sent.append(args) or real_call(*args, **kwargs)
    try:
        shared_db["n"] += 1
    finally:
        del conn.call
    assert [args[0] for args in sent] == ["iop"]
    assert shared_db["n"]._run() == 2
    code = (
        "import sys\nfrom pyzdb.client import client\n"
        "db, conn = client(sys.argv[1], timeout=20)\n"
        "for _ in range(50):\n    db['n'] += 1\nconn.close()\n"
    )
    run_clients(code, 4, shared.write_uri, timeout=60)
    assert shared_db["n"]._run() == 202


def test_repr_of_a_reference_sends_nothing(tmp_path) -> None:
    """With the server stopped, repr still answers at once."""
    proc = ServerProcess(tmp_path / "db.pkl")
    db, conn = client(proc.write_uri, timeout=10)
    try:
        proc.start()
        assert proc.stop() == 0
        started = time.monotonic()
        texts = [repr(db["a"][0]), repr(db["l"][1:3]), repr(db[("t", 1)]), repr(db["l"].append)]
        assert time.monotonic() - started < 0.1
        assert texts == [
            "<pyzdb ref db['a'][0]>",
            "<pyzdb ref db['l'][1:3]>",
            "<pyzdb ref db[('t', 1)]>",
            "<pyzdb method db['l'].append>",
        ]
    finally:
        conn.close()
        proc.stop()


def test_timeout_then_usable_once_a_server_is_there(tmp_path) -> None:
    """No server: TimeoutError after about the timeout; start one on that port and the same client works."""
    base = free_port_base()
    proc = ServerProcess(tmp_path / "db.pkl", base)
    db, conn = client(proc.write_uri, timeout=1)
    try:
        started = time.monotonic()
        with pytest.raises(errors.TimeoutError):
            db["x"]._run()
        assert 0.9 <= time.monotonic() - started < 2.5
        with pytest.raises(errors.TimeoutError, match="may or may not have been applied"):
            db["x"] = 1
        proc.start()
        db["x"] = 2
        assert db["x"]._run() == 2
    finally:
        conn.close()
        proc.stop()


def test_context_managed_connection_closes_its_sockets(shared) -> None:
    """``with connect(...)``: usable inside, every socket and the context closed after."""
    with connect(shared.write_uri, timeout=10) as conn:
        conn.db["n"] = 5
        sock = conn._write._socket
        assert conn.db["n"]._run() == 5
    assert sock.closed and conn._write._socket is None and conn._context.closed
