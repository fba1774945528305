"""A writer and a replica in two network namespaces joined by a veth pair (SPEC §12).

Unlike tests/test_replication.py, where both ends share 127.0.0.1, here the
writer binds 10.213.N.1 inside one namespace and the replica 10.213.N.2 inside
another, so every byte between them crosses a real (virtual) link that the
test can take down and up.  The addresses exist only inside the namespaces
this module creates, and the namespaces are removed in a ``finally``.

It needs root and iproute2's ``ip``, and is skipped with the reason otherwise.
The test process stays in its own namespace: clients run as short
``ip netns exec NS python -c ...`` processes that print JSON.  Every process
is stopped by its PID (``ip netns exec`` execs the command, so the PID is the
server's own) and every wait is bounded.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ServerProcess, free_port_base, run_clients, wait_until

IP_TIMEOUT = 10.0
SYNC_TIMEOUT = 15.0
CLIENT_TIMEOUT = SYNC_TIMEOUT + 15.0
LINK_LOST_TIMEOUT = 10.0
_serial = itertools.count()

CLIENT = r"""
import json, sys, time
from pyzdb.client import Connection

action, uri, *rest = sys.argv[1:]
with Connection(uri, timeout=5) as conn:
    if action == "ping":
        result = conn.call("ping")
    elif action == "root":
        result = conn.call("get", ())
    elif action == "write":
        prefix, count = rest[0], int(rest[1])
        for i in range(count):
            conn.db[f"{prefix}{i}"] = {"i": i, "tags": [prefix, i]}
        result = conn.call("get", ())
    elif action == "wait_for":
        expected, deadline = json.loads(rest[0]), time.monotonic() + float(rest[1])
        result = conn.call("get", ())
        while result != expected and time.monotonic() < deadline:
            time.sleep(0.05)
            result = conn.call("get", ())
    else:
        raise SystemExit(f"unknown action {action!r}")
print(json.dumps(result, default=repr))
"""
"""A client run inside a namespace: ``ACTION URI [ARGS]``; prints the result as JSON."""


IP = shutil.which("ip", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
"""iproute2's ``ip``, also where a PATH without the sbin folders would miss it."""


def ip(*args: str) -> None:
    """Run ``ip ARGS`` (bounded); ``CalledProcessError`` with its stderr if it fails."""
    subprocess.run([IP, *args], check=True, capture_output=True, text=True, timeout=IP_TIMEOUT)


@dataclass
class NamespacePair:
    """Two network namespaces, W (the writer's) and R (the replica's), joined by a veth pair."""

    writer_ns: str
    replica_ns: str
    subnet: str
    writer_veth: str = "veth-w"
    replica_veth: str = "veth-r"

    @classmethod
    def unique(cls) -> NamespacePair:
        """Names no other run uses: this process's PID, a counter and a random tag."""
        n, tag = next(_serial), secrets.token_hex(2)
        return cls(
            writer_ns=f"pyzdb-w-{os.getpid()}-{n}-{tag}",
            replica_ns=f"pyzdb-r-{os.getpid()}-{n}-{tag}",
            subnet=f"10.213.{n % 250 + 1}",  # seen only inside the pair, so it cannot clash outside
        )

    @property
    def writer_ip(self) -> str:
        """The writer's address, on its end of the veth pair."""
        return f"{self.subnet}.1"

    @property
    def replica_ip(self) -> str:
        """The replica's address, on its end of the veth pair."""
        return f"{self.subnet}.2"

    def create(self) -> None:
        """Make both namespaces, the veth pair between them, their addresses, and bring it all up."""
        ip("netns", "add", self.writer_ns)
        ip("netns", "add", self.replica_ns)
        # Made inside W with its peer in R: the names never appear in the root namespace.
        ip("-n", self.writer_ns, "link", "add", self.writer_veth, "type", "veth",
           "peer", "name", self.replica_veth, "netns", self.replica_ns)  # fmt: skip
        for namespace, veth, address in self._ends():
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", veth)
            ip("-n", namespace, "link", "set", "lo", "up")
            ip("-n", namespace, "link", "set", veth, "up")

    def remove(self) -> None:
        """Delete both namespaces (and with them the veth pair); never raises."""
        for namespace in (self.writer_ns, self.replica_ns):
            subprocess.run([IP, "netns", "del", namespace], capture_output=True, timeout=IP_TIMEOUT)

    def set_link(self, side: str, up: bool) -> None:
        """Bring the ``"writer"`` or ``"replica"`` end of the veth pair up or down."""
        namespace, veth, _ = self._ends()[0 if side == "writer" else 1]
        ip("-n", namespace, "link", "set", veth, "up" if up else "down")

    def _ends(self) -> list[tuple[str, str, str]]:
        return [
            (self.writer_ns, self.writer_veth, self.writer_ip),
            (self.replica_ns, self.replica_veth, self.replica_ip),
        ]


def in_namespace(namespace: str) -> list[str]:
    """The command prefix that runs a command inside ``namespace``."""
    return [IP, "netns", "exec", namespace]


def _why_namespaces_are_unavailable() -> str | None:
    """None if this machine lets us make a namespace pair and run Python inside it; else why not."""
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add)"
    if IP is None:
        return "network namespace tests need the ip command (Debian package iproute2)"
    probe = NamespacePair.unique()
    try:
        probe.create()
        command = [*in_namespace(probe.writer_ns), sys.executable, "-c", "pass"]
        subprocess.run(command, check=True, capture_output=True, timeout=IP_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").strip()
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
        return f"cannot make a network namespace pair here: {' '.join(exc.cmd)}: {detail}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot make a network namespace pair here: {exc}"
    finally:
        probe.remove()
    return None


_UNAVAILABLE = _why_namespaces_are_unavailable()
if _UNAVAILABLE:
    pytest.skip(_UNAVAILABLE, allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def client(namespace: str, action: str, uri: str, *args: str) -> object:
    """Run one :data:`CLIENT` action inside ``namespace`` and return what it printed (bounded)."""
    prefix = in_namespace(namespace)
    (out,) = run_clients(CLIENT, 1, action, uri, *args, timeout=CLIENT_TIMEOUT, prefix=prefix)
    return json.loads(out)


def direct_uri(replica: ServerProcess) -> str:
    """The replica's own read address (``--read-bind``), on its end of the veth pair."""
    return f"tcp://{replica.host}:{replica.port_base + 3}"


def replica_root(net: NamespacePair, replica: ServerProcess) -> object:
    """The whole store as the replica serves it now, read on its own address from inside R."""
    return client(net.replica_ns, "root", direct_uri(replica))


def write(net: NamespacePair, writer: ServerProcess, prefix: str, count: int) -> dict:
    """Write ``count`` keys through the writer (from inside W); return the writer's whole store after."""
    return client(net.writer_ns, "write", writer.write_uri, prefix, str(count))


def wait_replica_equals(net: NamespacePair, replica: ServerProcess, expected: object) -> None:
    """Wait (bounded) until the replica serves exactly ``expected``."""
    served = client(net.replica_ns, "wait_for", direct_uri(replica), json.dumps(expected), str(SYNC_TIMEOUT))
    assert served == expected, f"replica did not catch up in {SYNC_TIMEOUT} s:\n{replica.log()}"


@pytest.fixture
def net() -> Iterator[NamespacePair]:
    """A fresh namespace pair, removed in a ``finally`` even when the test fails."""
    pair = NamespacePair.unique()
    try:
        pair.create()
        yield pair
    finally:
        pair.remove()


@pytest.fixture
def writer(net: NamespacePair, tmp_path: Path) -> Iterator[ServerProcess]:
    """A read-write server inside W, bound to the writer's address; stopped by PID after the test."""
    folder = tmp_path / "writer"
    folder.mkdir()
    proc = ServerProcess(folder / "db.pkl", free_port_base(), "-v", host=net.writer_ip,
                         prefix=in_namespace(net.writer_ns))  # fmt: skip
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def replica(net: NamespacePair, writer: ServerProcess, tmp_path: Path) -> Iterator[ServerProcess]:
    """A replica of ``writer`` inside R, with its own store folder; stopped by PID after the test."""
    folder = tmp_path / "replica"
    folder.mkdir()
    base = writer.port_base  # R is an empty namespace: the same port numbers are free there
    proc = ServerProcess(
        folder / "replica.pkl",
        base,
        "--primary",
        f"tcp://{net.writer_ip}:{base + 5}",
        "--read-server-uri",
        f"tcp://{net.writer_ip}:{base + 4}",
        "--read-bind",
        f"tcp://{net.replica_ip}:{base + 3}",
        "-v",
        read_only=True,
        prefix=in_namespace(net.replica_ns),
    )
    proc.host = net.replica_ip  # where it answers; it binds only --read-bind, so no --host
    try:
        yield proc.start()
    finally:
        proc.stop()


def test_replica_on_another_address_gets_the_store_then_every_write(net, writer, replica):
    assert client(net.writer_ns, "ping", writer.write_uri)["pid"] == writer.pid  # ip netns exec execs
    assert client(net.replica_ns, "ping", direct_uri(replica))["pid"] == replica.pid
    wait_replica_equals(net, replica, write(net, writer, "one", 30))
    assert "sending a full copy" in writer.log()
    expected = write(net, writer, "two", 30)
    wait_replica_equals(net, replica, expected)
    assert replica_root(net, replica) == expected
    assert writer.log().count("sending a full copy") == 1, "the writes after the copy came as a stream"
    assert f"link to tcp://{net.writer_ip}:{writer.port_base + 5} up, at record" in replica.log()


@pytest.mark.parametrize("side", ["replica", "writer"])
def test_link_down_and_up_resumes_the_stream(net, writer, replica, side):
    before = write(net, writer, "before", 20)
    wait_replica_equals(net, replica, before)
    net.set_link(side, up=False)
    try:
        during = write(net, writer, "during", 20)  # the writer goes on acknowledging
        assert during["during19"] == {"i": 19, "tags": ["during", 19]}
        wait_until(lambda: "lost (silent for" in replica.log(), LINK_LOST_TIMEOUT, 0.1)
        assert replica_root(net, replica) == before, "it keeps serving its last state"
    finally:
        net.set_link(side, up=True)
    wait_replica_equals(net, replica, during)
    after = write(net, writer, "after", 10)
    wait_replica_equals(net, replica, after)
    assert writer.log().count("sending a full copy") == 1, "the heal resumed the stream, no second copy"
    assert replica.log().count("up, at record") >= 2
    assert "up, at record 20" in replica.log()  # resumed from where the link dropped


def test_read_through_the_writers_read_queue_is_served_by_the_replica(net, writer, replica):
    expected = write(net, writer, "k", 10)
    wait_replica_equals(net, replica, expected)
    assert client(net.writer_ns, "ping", writer.read_uri)["pid"] == replica.pid
    assert client(net.writer_ns, "root", writer.read_uri) == expected


def test_an_outage_long_enough_for_the_writer_to_forget_the_replica_still_resumes(net, writer, replica):
    before = write(net, writer, "before", 20)
    wait_replica_equals(net, replica, before)
    net.set_link("replica", up=False)
    try:
        during = write(net, writer, "during", 20)
        wait_until(lambda: "link lost (silent for" in writer.log(), 15.0, 0.1)  # the writer forgot it
        assert replica_root(net, replica) == before
    finally:
        net.set_link("replica", up=True)
    wait_replica_equals(net, replica, during)
    assert writer.log().count("sending a full copy") == 1, "resumed from the backlog, no second copy"
    assert "up, at record 20" in replica.log()
