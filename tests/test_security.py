"""CURVE keys and roles (SPEC §11): real keys, real server processes, every port.

A server started with ``--curve KEYDIR`` lets in only the keys in its folders:
read-write clients, read-only clients (reads answered, writes refused with
``PermissionDeniedError``) and replicas (the only ones that may serve the
read queue).  Anything else gets nothing, and the server is unharmed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pexpect
import pytest
import zmq

from helpers import ROOT, ServerProcess, child_env, free_port_base, python_command, wait_until
from metrics_helpers import GatewayProcess, exchange
from pyzdb import errors
from pyzdb.client import Connection
from pyzdb.keys import ClientKeys, make_client_keys, make_server_keys
from pyzdb.server.auth import CLIENT_DOMAIN, KeyRing, ZapHandler, secure

REFUSED_WAIT = 1.5
"""Seconds a refused client waits before its TimeoutError (a refusal is silence)."""


def keys_of(keydir: Path, name: str, server_dir: Path | None = None) -> dict[str, str]:
    """Connection arguments for client ``name`` of ``keydir`` (talking to ``server_dir``'s server)."""
    return {
        "server_key": str((server_dir or keydir) / "server.key"),
        "client_key": str(keydir / "private" / f"{name}.key_secret"),
    }


@pytest.fixture
def keydir(tmp_path):
    """A key folder with one read-write (alice), one read-only (bob) and one replica (ro1) key."""
    folder = tmp_path / "keys"
    make_server_keys(folder)
    for name, role in (("alice", "rw"), ("bob", "ro"), ("ro1", "replica")):
        make_client_keys(folder, name, role)
    return folder


@pytest.fixture
def outsider(tmp_path):
    """Another key folder: its server key and its client eve are unknown to the server under test."""
    folder = tmp_path / "other"
    make_server_keys(folder)
    make_client_keys(folder, "eve", "rw")
    return folder


def curve_server(tmp_path: Path, keydir: Path, *extra: str) -> ServerProcess:
    """A started read-write server under ``--curve keydir``."""
    return ServerProcess(
        tmp_path / "db.pkl", None, "--curve", str(keydir), *extra, keys=keys_of(keydir, "alice")
    ).start()


@pytest.fixture
def server(tmp_path, keydir):
    """A read-write server under CURVE; stopped by PID after the test."""
    proc = curve_server(tmp_path, keydir)
    yield proc
    proc.stop()


def replica(server: ServerProcess, keydir: Path, name: str = "ro1") -> ServerProcess:
    """A started read-only server joining ``server``'s read queue with key ``name``."""
    secret = str(keydir / "private" / f"{name}.key_secret")
    return ServerProcess(
        server.db, server.port_base, "--curve", str(keydir), "--client-key", secret, read_only=True
    ).start()


def refused(conn: Connection) -> errors.TimeoutError:
    """The TimeoutError a read on ``conn`` ends with (fails the test if it is answered)."""
    with pytest.raises(errors.TimeoutError) as caught:
        conn.call("get", ("x",))
    return caught.value


def read_until(conn: Connection, path: tuple, expected, timeout: float = 10.0):
    """Read ``path`` until it equals ``expected`` (a read-only server lags a little); bounded."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = conn.call("get", path)
        if value == expected:
            return value
        time.sleep(0.1)
    return value


def wait_for_log(proc: ServerProcess, text: str, timeout: float = 10.0) -> bool:
    """True once ``text`` is in the process's log (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.log():
            return True
        time.sleep(0.05)
    return False


def test_read_write_key_uses_every_port(tmp_path, server, keydir):
    ro = replica(server, keydir)
    try:
        with Connection(server.write_uri, server.read_uri, timeout=10, **keys_of(keydir, "alice")) as conn:
            conn.db["x"] = 3
            conn.db["l"] = [1]
            with conn.locked():  # the lock socket, under CURVE too
                conn.db["l"].append(2)
            conn.db.save()
            assert conn.db["l"]._run() == [1, 2]  # a read on the read queue, served by the replica
            assert read_until(conn, ("x",), 3) == 3
        with Connection(server.write_uri, server.read_uri, timeout=10, **keys_of(keydir, "bob")) as conn:
            assert read_until(conn, ("l",), [1, 2]) == [1, 2]  # a read-only key on the read queue
    finally:
        ro.stop()


def test_read_only_key_reads_and_is_refused_every_write(server, keydir):
    with Connection(server.write_uri, timeout=10, **keys_of(keydir, "alice")) as alice:
        alice.db["x"] = 3
        alice.db["l"] = [1, 2]
        with Connection(server.write_uri, timeout=10, **keys_of(keydir, "bob")) as bob:
            assert bob.db["x"]._run() == 3
            assert len(bob.db["l"]) == 2 and 1 in bob.db["l"]
            refusals = {
                "set": lambda: bob.db.__setitem__("x", 4),
                "append": lambda: bob.db["l"].append(3),
                "delete": lambda: bob.db.__delitem__("x"),
                "undo": bob.db.undo,
                "save": bob.db.save,
                "lock": bob.lock,
            }
            for name, attempt in refusals.items():
                with pytest.raises(errors.PermissionDeniedError, match="needs a read-write key") as caught:
                    attempt()
                assert not isinstance(caught.value, errors.ReadOnlyError), name
            assert bob.db["x"]._run() == 3  # the connection goes on
        assert alice.db._run() == {"x": 3, "l": [1, 2]}  # nothing changed
        alice.db.undo()  # bob's refused writes made no undo step: alice's last write is undone
        assert alice.db._run() == {"x": 3}


@pytest.mark.parametrize("case", ["no key", "unknown key", "wrong server key", "replica key as a client"])
def test_refused_clients_get_nothing(server, keydir, outsider, case):
    keys = {
        "no key": {},
        "unknown key": keys_of(outsider, "eve", keydir),
        "wrong server key": keys_of(keydir, "alice", outsider),
        "replica key as a client": keys_of(keydir, "ro1"),
    }[case]
    with Connection(server.write_uri, timeout=REFUSED_WAIT, retry_interval=0.5, **keys) as conn:
        with pytest.raises(errors.TimeoutError) as caught:
            conn.db["x"] = "stolen"
        if keys:
            assert "check the keys" in str(caught.value)
    with Connection(server.write_uri, timeout=10, **keys_of(keydir, "alice")) as alice:
        with pytest.raises(errors.ServerKeyError):
            alice.db["x"]._run()  # the refused write never arrived
        alice.db["x"] = 1  # and the server is unharmed
        assert alice.db["x"]._run() == 1
    assert not server.exited()


def _port_uris(server: ServerProcess) -> dict[str, str]:
    base = server.port_base
    return {
        name: f"tcp://127.0.0.1:{base + offset}" for name, offset in (("lock", 0), ("write", 1), ("read", 3))
    }


def test_refused_keys_get_nothing_on_any_client_port(server, keydir, outsider):
    unknown = ClientKeys.load(outsider / "server.key", outsider / "private" / "eve.key_secret")
    wrong_server = ClientKeys.load(outsider / "server.key", keydir / "private" / "alice.key_secret")
    eve = ClientKeys.load(keydir / "server.key", outsider / "private" / "eve.key_secret")
    replica_key = ClientKeys.load(keydir / "server.key", keydir / "private" / "ro1.key_secret")
    context = zmq.Context()
    try:
        for port, uri in _port_uris(server).items():
            for keys in (None, unknown, wrong_server, eve, replica_key):
                sock = context.socket(zmq.REQ)
                sock.linger = 0
                if keys is not None:
                    keys.apply(sock)
                sock.connect(uri)
                sock.send(b'{"v": 1, "op": "ping", "id": 1}')
                assert not sock.poll(1000), f"{port} port answered a refused peer"
                sock.close()
    finally:
        context.term()
    with Connection(server.write_uri, timeout=10, **keys_of(keydir, "alice")) as alice:
        assert alice.call("ping")["read_only"] is False


def test_garbage_on_curve_ports_harms_nothing(server, keydir):
    greeting = b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03\x00CURVE" + b"\x00" * 15  # a half handshake
    for offset in (0, 1, 3, 4):
        for payload in (b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)), greeting, greeting + b"\x04\xff" * 40):
            with socket.create_connection(("127.0.0.1", server.port_base + offset), timeout=5) as raw:
                raw.sendall(payload)
    with Connection(server.write_uri, timeout=10, **keys_of(keydir, "alice")) as alice:
        started = time.monotonic()
        alice.db["x"] = 1
        assert alice.db["x"]._run() == 1
        assert time.monotonic() - started < 2
    assert not server.exited()


def test_rogue_rep_on_the_read_queue_gets_no_request(server, keydir, outsider):
    context = zmq.Context()
    rogues = []
    try:
        # an unknown key, and a read-write client key: neither is a replica key
        for keys in (
            ClientKeys.load(keydir / "server.key", outsider / "private" / "eve.key_secret"),
            ClientKeys.load(keydir / "server.key", keydir / "private" / "alice.key_secret"),
        ):
            rogue = context.socket(zmq.REP)
            rogue.linger = 0
            keys.apply(rogue)
            rogue.connect(f"tcp://127.0.0.1:{server.port_base + 4}")
            rogues.append(rogue)
        with Connection(server.write_uri, server.read_uri, timeout=15, **keys_of(keydir, "alice")) as alice:
            alice.db["secret"] = "s3cr3t"
            alice.db.save()
            reader = alice._read
            frames = [b'{"v": 1, "op": "get", "path": ["secret"], "id": 7}']
            with pytest.raises(errors.TimeoutError):
                reader.request(frames, 2.0, 2.0)  # no replica yet: nobody may answer
            for rogue in rogues:
                assert not rogue.poll(100), "a process without a replica key received a client read"
            ro = replica(server, keydir)
            try:
                assert read_until(alice, ("secret",), "s3cr3t") == "s3cr3t"
            finally:
                ro.stop()
            for rogue in rogues:
                assert not rogue.poll(100)
    finally:
        for rogue in rogues:
            rogue.close()
        context.term()


def test_enforced_zap_domain_fails_closed_without_a_handler(keydir):
    """The libzmq trap: with no ZAP handler, CURVE lets any key in unless the domain is enforced."""
    ring = KeyRing.load(keydir)
    alice = ClientKeys.load(keydir / "server.key", keydir / "private" / "alice.key_secret")
    context = zmq.Context()
    try:
        for enforced in (False, True):
            server = context.socket(zmq.ROUTER)
            server.linger = 0
            if enforced:
                secure(server, ring, CLIENT_DOMAIN)
            else:  # what CURVE does with the usual options only
                server.curve_server = True
                server.curve_secretkey = ring.server_secret
                server.zap_domain = CLIENT_DOMAIN.encode()
            port = server.bind_to_random_port("tcp://127.0.0.1")
            client = context.socket(zmq.REQ)
            client.linger = 0
            alice.apply(client)
            client.connect(f"tcp://127.0.0.1:{port}")
            client.send(b"hello")
            arrived = bool(server.poll(1000))
            assert arrived is not enforced
            client.close()
            server.close()
    finally:
        context.term()


def test_zap_handler_answers_only_its_two_domains(keydir):
    context = zmq.Context()
    handler = ZapHandler(context, keydir)
    try:
        alice = ClientKeys.load(keydir / "server.key", keydir / "private" / "alice.key_secret")
        ro1 = ClientKeys.load(keydir / "server.key", keydir / "private" / "ro1.key_secret")
        raw = {name: zmq.utils.z85.decode(keys.public) for name, keys in (("alice", alice), ("ro1", ro1))}

        def status(domain: bytes, key: bytes, mechanism: bytes = b"CURVE") -> bytes:
            return handler.answer([b"1.0", b"1", domain, b"127.0.0.1", b"", mechanism, key])[2]

        assert status(b"pyzdb", raw["alice"]) == b"200"
        assert status(b"pyzdb-replica", raw["ro1"]) == b"200"
        assert status(b"pyzdb-replica", raw["alice"]) == b"400"
        assert status(b"pyzdb", raw["ro1"]) == b"400"
        assert status(b"", raw["alice"]) == b"400"  # no wildcard: a socket without a domain gets nobody
        assert status(b"*", raw["alice"]) == b"400"
        assert status(b"pyzdb", raw["alice"], b"NULL") == b"400"
        assert handler.answer([b"garbage"])[2] == b"400"
    finally:
        handler.stop()
        context.term()


def test_sighup_adds_and_removes_keys_and_keeps_them_on_a_bad_file(server, keydir):
    carol_keys = None
    with Connection(server.write_uri, timeout=10, **keys_of(keydir, "bob")) as bob:
        assert bob.call("ping")["read_only"] is False
        make_client_keys(keydir, "carol", "rw")
        carol_keys = keys_of(keydir, "carol")
        with Connection(server.write_uri, timeout=REFUSED_WAIT, retry_interval=0.5, **carol_keys) as carol:
            refused(carol)  # not yet: the server reads keys at start and on SIGHUP
        (keydir / "clients" / "ro" / "bob.key").unlink()
        server.send_signal(signal.SIGHUP)
        assert wait_for_log(server, "keys reloaded")
        with Connection(server.write_uri, timeout=10, **carol_keys) as carol:
            carol.db["x"] = "carol"
        bob.timeout, bob.retry_interval = REFUSED_WAIT, 0.5
        refused(bob)  # bob's connection is still open, but his key is gone: his requests are dropped
    (keydir / "clients" / "rw" / "broken.key").write_text("public-key = 'not a key'\n")
    (keydir / "clients" / "rw" / "carol.key").unlink()
    server.send_signal(signal.SIGHUP)
    assert wait_for_log(server, "keys not reloaded, keeping the previous ones")
    assert "broken.key" in server.log()
    with Connection(server.write_uri, timeout=10, **carol_keys) as carol:  # the old set still holds
        assert carol.db["x"]._run() == "carol"
    assert not server.exited()


def test_exec_needs_a_read_write_key(tmp_path, keydir):
    proc = curve_server(tmp_path, keydir, "--allow-exec")
    try:
        with Connection(proc.write_uri, timeout=10, **keys_of(keydir, "alice")) as alice:
            assert alice.call("exec", (), None, ("print(1 + 1)",)) == "2\n"
        with Connection(proc.write_uri, timeout=10, **keys_of(keydir, "bob")) as bob:
            with pytest.raises(errors.PermissionDeniedError):
                bob.call("exec", (), None, ("db['x'] = 'owned'",))
        with Connection(proc.write_uri, timeout=10, **keys_of(keydir, "alice")) as alice:
            assert "x" not in alice.db
    finally:
        proc.stop()


def test_read_only_server_under_curve_needs_its_key(tmp_path, keydir):
    result = subprocess.run(
        python_command("server", "-ro", "--db", str(tmp_path / "db.pkl"), "--curve", str(keydir)),
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
    )
    assert result.returncode == 2
    assert "--client-key" in result.stderr


def test_bad_key_file_stops_start_up_with_its_name(tmp_path, keydir):
    (keydir / "clients" / "ro" / "bad.key").write_text("nothing here\n")
    result = subprocess.run(
        python_command(
            "server",
            "--db",
            str(tmp_path / "db.pkl"),
            "--curve",
            str(keydir),
            "--port-base",
            str(free_port_base()),
        ),
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
    )
    assert result.returncode == 1
    assert "bad.key" in result.stderr and "cannot start" in result.stderr


def test_prompt_with_a_missing_key_file_says_so(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pyzdb", "--server-key", str(tmp_path / "nope.key"), "--client-key", "x"],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
    )
    assert result.returncode == 1
    assert "nope.key" in result.stderr and "Traceback" not in result.stderr


def test_removed_key_loses_the_read_queue_too(server, keydir):
    ro = replica(server, keydir)
    try:
        with (
            Connection(server.write_uri, server.read_uri, timeout=10, **keys_of(keydir, "alice")) as alice,
            Connection(server.write_uri, server.read_uri, timeout=10, **keys_of(keydir, "bob")) as bob,
        ):
            alice.db["x"] = 1
            alice.db.save()
            assert read_until(bob, ("x",), 1) == 1  # bob reads through the read queue
            (keydir / "clients" / "ro" / "bob.key").unlink()
            server.send_signal(signal.SIGHUP)
            assert wait_for_log(server, "read queue restarted")
            bob.timeout, bob.retry_interval = REFUSED_WAIT, 0.5
            refused(bob)  # his open connection to the read queue was dropped; he cannot make a new one
            assert read_until(alice, ("x",), 1) == 1  # alice and the replica reconnected
    finally:
        ro.stop()


class Relay:
    """A TCP relay in front of one port that keeps every byte it forwards (both directions)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.seen = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        try:
            inside, _ = self._listener.accept()
        except OSError:
            return
        outside = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        self._sockets += [inside, outside]
        for source, sink in ((inside, outside), (outside, inside)):
            thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                self.seen += chunk
                sink.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.mark.parametrize("curve", [True, False])
def test_values_on_the_wire_are_encrypted_under_curve(tmp_path, keydir, curve):
    value = "top-secret-value-0123456789"
    extra, keys = (("--curve", str(keydir)), keys_of(keydir, "alice")) if curve else ((), {})
    proc = ServerProcess(tmp_path / "db.pkl", None, *extra, keys=keys).start()
    relay = Relay(proc.port_base + 1)
    try:
        with Connection(f"tcp://127.0.0.1:{relay.port}", timeout=10, **keys) as conn:
            conn.db["x"] = value
            assert conn.db["x"]._run() == value
    finally:
        relay.close()
        proc.stop()
    assert len(relay.seen) > 100
    assert (value.encode() in relay.seen) is not curve


def test_metrics_gateway_stores_into_a_curve_server(tmp_path, server, keydir):
    keys = keys_of(keydir, "alice")
    args = ("--server-key", keys["server_key"], "--client-key", keys["client_key"])
    with GatewayProcess(server.write_uri, tmp_path, *args) as gateway, gateway.connect() as sock:
        assert exchange(sock, b"put palm.cpu 42.5 1150864247\n") == b"ok\n\n"
        assert exchange(sock, b"get palm.cpu\n") == b"ok\npalm.cpu 42.5 1150864247\n\n"
    with Connection(server.write_uri, timeout=10, **keys) as alice:
        series = alice.db.timeseries("metrics").get("palm.cpu")["ts"]
        assert list(series) == [(1150864247.0, 42.5)]


def test_metrics_gateway_with_a_read_only_key_cannot_store(tmp_path, server, keydir):
    keys = keys_of(keydir, "bob")
    args = ("--server-key", keys["server_key"], "--client-key", keys["client_key"])
    with GatewayProcess(server.write_uri, tmp_path, *args) as gateway, gateway.connect() as sock:
        assert exchange(sock, b"put palm.cpu 42.5 1150864247\n").startswith(b"error\n")
    with Connection(server.write_uri, timeout=10, **keys_of(keydir, "alice")) as alice:
        assert "metrics" not in alice.db.timeseries_names()


@pytest.mark.parametrize("curve", [False, True])
def test_a_non_loopback_bind_without_curve_logs_a_warning(tmp_path, keydir, curve):
    extra, keys = (["--curve", str(keydir)], keys_of(keydir, "alice")) if curve else ([], {})
    proc = ServerProcess(tmp_path / "db.pkl", None, "--host", "0.0.0.0", *extra, keys=keys).start()
    try:
        assert wait_for_log(proc, "server ready")
        warned = "without --curve: anyone who reaches these ports" in proc.log()
        assert warned is not curve
    finally:
        proc.stop()


def _terminal(script: str, uri: str, keys: dict[str, str], history: Path) -> pexpect.spawn:
    """``python script uri --server-key .. --client-key ..`` in a pseudo-terminal."""
    env = dict(os.environ, TERM="dumb", INPUTRC="/dev/null", PYZDB_HISTORY=str(history), PYTHONPATH=str(ROOT))
    args = [script, uri, "--server-key", keys["server_key"], "--client-key", keys["client_key"]]
    return pexpect.spawn(
        sys.executable, args, cwd=str(ROOT), env=env, timeout=10, encoding="utf-8", dimensions=(24, 200)
    )


def _type(child, line: str, prompt: str) -> list[str]:
    child.sendline(line)
    child.expect_exact(prompt)
    echo, *printed = child.before.split("\r\n")
    assert echo == line
    return [text for text in printed if text]


def test_the_prompts_take_keys(tmp_path, keydir):
    proc = curve_server(tmp_path, keydir, "--allow-exec")
    try:
        bob = _terminal("client.py", proc.write_uri, keys_of(keydir, "bob"), tmp_path / "h1")
        try:
            bob.expect_exact("> ")
            assert _type(bob, "db", "> ") == ["{}"]
            assert _type(bob, "db['x'] = 4", "> ") == [
                "PermissionDeniedError: 'set' needs a read-write key; this key is read-only"
            ]
        finally:
            bob.close(force=True)
        alice = _terminal("exec_client.py", proc.write_uri, keys_of(keydir, "alice"), tmp_path / "h2")
        try:
            alice.expect_exact(">>> ")
            assert _type(alice, "db['x'] = 5; print(db['x'])", ">>> ") == ["5"]
        finally:
            alice.close(force=True)
        bob = _terminal("exec_client.py", proc.write_uri, keys_of(keydir, "bob"), tmp_path / "h3")
        try:
            bob.expect_exact(">>> ")
            (line,) = _type(bob, "db['x'] = 6", ">>> ")
            assert line.startswith("PermissionDeniedError")
        finally:
            bob.close(force=True)
        with Connection(proc.write_uri, timeout=10, **keys_of(keydir, "alice")) as conn:
            assert conn.db["x"]._run() == 5
    finally:
        proc.stop()


def test_a_replica_under_curve_follows_the_writer_and_checks_its_own_readers(
    tmp_path, server, keydir, outsider
):
    folder = tmp_path / "replica"
    folder.mkdir()
    read_port = free_port_base(1)
    direct = f"tcp://127.0.0.1:{read_port}"
    secret = str(keydir / "private" / "ro1.key_secret")
    common = ["--primary", f"tcp://127.0.0.1:{server.port_base + 5}", "--read-bind", direct]
    ro = ServerProcess(
        folder / "replica.pkl", server.port_base, *common, "--curve", str(keydir), "--client-key", secret,
        read_only=True,
    )  # fmt: skip
    with Connection(server.write_uri, timeout=5, **keys_of(keydir, "alice")) as conn:
        conn.db["x"] = "over curve"
    ro.start()
    try:
        for name in ("alice", "bob"):  # any client key of the folder reads on the replica's own port
            with Connection(direct, timeout=5, **keys_of(keydir, name)) as conn:
                wait_until(lambda: conn.call("get", ()) == {"x": "over curve"}, 10)
        for keys in ({}, keys_of(outsider, "eve", keydir), keys_of(keydir, "ro1")):
            with Connection(direct, timeout=REFUSED_WAIT, retry_interval=0.5, **keys) as conn:
                refused(conn)
        assert "without --curve" not in ro.log()
    finally:
        ro.stop()
    plain = ServerProcess(folder / "replica.pkl", server.port_base, *common, "--server-key",
                          str(keydir / "server.key"), "--client-key", secret, read_only=True)  # fmt: skip
    with pytest.raises(RuntimeError, match="--read-bind under CURVE needs --curve KEYDIR"):
        plain.start()
    public_only = tmp_path / "public-only"  # the writer's folder without its server.key_secret
    shutil.copytree(keydir, public_only, ignore=shutil.ignore_patterns("server.key_secret"))
    no_secret = ServerProcess(folder / "replica.pkl", server.port_base, *common, "--curve", str(public_only),
                              "--client-key", secret, read_only=True)  # fmt: skip
    with pytest.raises(RuntimeError, match="exited with 1.*cannot read the key file .*server.key_secret"):
        no_secret.start()  # a clear refusal, not a hang
