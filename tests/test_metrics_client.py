"""The metrics Client against the real gateway and pyzdb server, and against misbehaving peers."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from metrics_helpers import GatewayProcess
from pyzdb.client import Connection
from pyzdb.errors import PyzdbError
from pyzdb.metrics import Client, ClientError


@pytest.fixture
def gateway(server, tmp_path):
    """A gateway in front of the ``server`` fixture; stopped (by PID) after the test."""
    with GatewayProcess(server.write_uri, tmp_path) as proc:
        yield proc


def put_examples(client: Client) -> tuple[int, int]:
    """The issue's example puts; returns the time bounds around the put without a timestamp."""
    client.put("palm.cpu", 42.3, 1150864247)
    client.put("palm.cpu", 2.0, 1150864248)
    client.put("palm.cpu", 4.0, 1150864248)  # overwrites 2.0
    client.put("eardrum.memory", 1024, 1150864250)
    client.put("eardrum.memory", 2048, 1150864251)
    before = int(time.time())
    client.put("eardrum.cpu", 3)
    return before, int(time.time())


EXPECTED = {
    "palm.cpu": [(1150864247, 42.3), (1150864248, 4.0)],
    "eardrum.memory": [(1150864250, 1024.0), (1150864251, 2048.0)],
}


def check_examples(got: dict, before: int, after: int) -> None:
    """``got`` is get('*') after :func:`put_examples`."""
    [(stamp, value)] = got.pop("eardrum.cpu")
    assert before <= stamp <= after and type(stamp) is int
    assert value == 3.0 and type(value) is float
    assert got == EXPECTED
    assert all(type(t) is int and type(v) is float for points in got.values() for t, v in points)


def test_example_puts_and_get_star(gateway):
    with Client("127.0.0.1", gateway.port, timeout=10) as client:
        before, after = put_examples(client)
        check_examples(client.get("*"), before, after)
        assert client.get("palm.cpu") == {"palm.cpu": EXPECTED["palm.cpu"]}
        assert client.get("no.such.key") == {}


def test_metrics_survive_restarts_of_gateway_and_server(server, tmp_path):
    gateway = GatewayProcess(server.write_uri, tmp_path).start()
    try:
        with Client("127.0.0.1", gateway.port, timeout=10) as client:
            before, after = put_examples(client)
            written = client.get("*")
        check_examples(dict(written), before, after)
        assert gateway.stop() == 0 and server.stop() == 0
        server.start()
        gateway.start()  # same ports, same store
        with Client("127.0.0.1", gateway.port, timeout=10) as client:
            assert client.get("*") == written
        with Connection(server.write_uri, timeout=10) as conn:  # visible to any pyzdb client
            metrics = conn.db.timeseries("metrics")
            assert metrics.range("palm.cpu") == [(1150864247.0, 42.3), (1150864248.0, 4.0)]
    finally:
        gateway.stop()


def test_error_reply_raises_client_error_and_the_client_goes_on(gateway):
    with Client("127.0.0.1", gateway.port, timeout=10) as client:
        with pytest.raises(ClientError, match="wrong command"):
            client.put("k", float("nan"), 1)  # sent, refused by the gateway
        client.put("k", 1.5, 2)
        assert client.get("k") == {"k": [(2, 1.5)]}


@pytest.mark.parametrize(
    ("name", "value", "timestamp"),
    [("two words", 1.0, 1), ("a*b", 1.0, 1), ("", 1.0, 1), ("k", "abc", 1), ("k", 1.0, "soon")],
)
def test_bad_arguments_raise_client_error(name, value, timestamp):
    with FakeGateway(b"") as fake, Client("127.0.0.1", fake.port, timeout=5) as client:
        with pytest.raises(ClientError):
            client.put(name, value, timestamp)
        with pytest.raises(ClientError):
            client.get("new\nline")
    assert fake.received == b""  # refused before anything was sent


class FakeGateway:
    """A peer that answers every request with ``reply`` (and records what it received)."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.received = b""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            while data := _recv(conn):
                self.received += data
                if self.reply is None:
                    continue  # never answer
                if self.reply == b"":
                    return  # hang up
                conn.sendall(self.reply)

    def __enter__(self) -> FakeGateway:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._listener.close()
        self._thread.join(15)


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except OSError:
        return b""


@pytest.mark.parametrize(
    ("request_args", "reply"),
    [
        (("*",), b"ok\ngarbage\n\n"),
        (("*",), b"yes\n\n"),
        (("*",), b"ok\na x 2\n\n"),
        (("k", 1.0, 1), b"ok\nk 1.0 1\n\n"),  # points in the reply to a put
    ],
)
def test_malformed_answer_raises_client_error(request_args, reply):
    with FakeGateway(reply) as fake, Client("127.0.0.1", fake.port, timeout=5) as client:
        method = client.get if len(request_args) == 1 else client.put
        with pytest.raises(ClientError, match="malformed reply"):
            method(*request_args)


def test_timeout_and_lost_connection_raise_client_error():
    with FakeGateway(None) as fake, Client("127.0.0.1", fake.port, timeout=0.3) as client:
        with pytest.raises(ClientError, match="failed"):
            client.get("*")
        with pytest.raises(ClientError, match="closed"):
            client.get("*")  # the stream may be out of step: the client does not reuse it
    with FakeGateway(b"") as fake, Client("127.0.0.1", fake.port, timeout=5) as client:
        with pytest.raises(ClientError, match="closed the connection"):
            client.put("k", 1.0, 1)


def test_connection_refused_is_a_client_error():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with pytest.raises(ClientError, match="cannot connect") as caught:
        Client("127.0.0.1", port, timeout=5)
    assert isinstance(caught.value, PyzdbError)


def test_close_and_context_manager(gateway):
    client = Client("127.0.0.1", gateway.port, timeout=10)
    client.put("k", 1.0, 1)
    client.close()
    client.close()
    with pytest.raises(ClientError, match="closed"):
        client.get("k")
    with Client("127.0.0.1", gateway.port, timeout=10) as other:
        assert other.get("k") == {"k": [(1, 1.0)]}
    with pytest.raises(ClientError, match="closed"):
        other.get("k")
