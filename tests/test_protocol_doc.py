"""docs/protocol.md is true: its examples replay against a real server, and it names every op and error.

Convention in the doc: a line starting with ``→`` (naming the socket: ``write
queue``, ``read queue`` or ``lock socket``) followed by a fenced block is a
request, sent as printed; blocks marked ``→ frame N`` after it are its extra
frames; the next fenced block, after a line starting with ``←``, is the reply,
compared byte for byte once re-serialised compactly.  A reply string
``"<name>"`` matches any value and remembers it; ``"<name>"`` in a later
request is replaced by that value.  The doc uses the default ports, mapped
here to the test server's.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import pytest
import zmq

from helpers import ROOT, ServerProcess
from pyzdb import errors, ops, protocol
from pyzdb.server import outbox, sessions

DOC = ROOT / "docs" / "protocol.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
DEFAULT_PORT_BASE = 5558
SOCKETS = {"lock socket": 0, "write queue": 1, "read queue": 3}
REPLY_TIMEOUT_MS = 5000
REPLICA_LAG = 3.0
"""Seconds a read-queue example may be resent while a read-only server loads a new snapshot."""
PLACEHOLDER = re.compile(r'"<([a-z_]+)>"')
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    """One fenced block of the doc and the marker line before it."""

    marker: str
    lang: str
    text: str
    line: int


@dataclass
class Exchange:
    """A request block, its extra frames and the reply block that follows them."""

    socket: str
    request: Block
    reply: Block
    frames: list[Block]


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block, with the last non-blank line before its opening fence."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        marker = next((line for line in reversed(lines[:index]) if line.strip()), "")
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        blocks.append(Block(marker.strip(), match.group(1), "\n".join(lines[index + 1 : end]), index + 1))
        index = end + 1
    return blocks


def exchanges(text: str) -> list[Exchange]:
    """The request/reply pairs of the doc, in order; fails on a JSON block outside a pair."""
    pairs: list[Exchange] = []
    pending: tuple[str, Block, list[Block]] | None = None
    for block in fenced_blocks(text):
        where = f"docs/protocol.md line {block.line}"
        target = block.marker.lstrip("→ ").strip()
        if block.marker.startswith("→") and target.startswith("frame "):
            assert pending is not None, f"{where}: a frame without a request"
            assert target == f"frame {len(pending[2]) + 1}", f"{where}: frames must be numbered 1, 2, ..."
            pending[2].append(block)
        elif block.marker.startswith("→"):
            assert pending is None, f"{where}: request after a request without a reply"
            assert target in SOCKETS, f"{where}: unknown socket {target!r}"
            pending = (target, block, [])
        elif block.marker.startswith("←"):
            assert pending is not None and block.lang == "json", f"{where}: reply without a request"
            pairs.append(Exchange(pending[0], pending[1], block, pending[2]))
            pending = None
        else:
            assert block.lang != "json", f"{where}: a json block must be a → request or a ← reply"
    assert pending is None, "the last request has no reply"
    return pairs


def with_ports(text: str, port_base: int) -> str:
    """Replace the doc's default ports by those of the test server."""
    for offset in range(5):
        text = text.replace(f"127.0.0.1:{DEFAULT_PORT_BASE + offset}", f"127.0.0.1:{port_base + offset}")
    return text


def fill(text: str, captured: dict[str, Any]) -> str:
    """Replace ``"<name>"`` placeholders in a request by remembered values."""
    return PLACEHOLDER.sub(lambda match: json.dumps(captured[match.group(1)]), text)


def capture(expected: Any, actual: Any, captured: dict[str, Any]) -> Any:
    """``expected`` with each placeholder replaced by the value at the same place in ``actual``."""
    if type(expected) is str and PLACEHOLDER.fullmatch(f'"{expected}"'):
        captured[expected[1:-1]] = actual
        return actual
    if type(expected) is dict and type(actual) is dict:
        return {key: capture(value, actual.get(key), captured) for key, value in expected.items()}
    if type(expected) is list and type(actual) is list and len(expected) == len(actual):
        return [capture(e, a, captured) for e, a in zip(expected, actual, strict=True)]
    return expected


def compact(value: Any) -> bytes:
    """The server's serialisation: compact, ASCII-only JSON."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def send(context: zmq.Context, uri: str, frames: list[bytes]) -> bytes:
    """One request on a fresh REQ socket; fails the test if no reply comes."""
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    try:
        sock.connect(uri)
        sock.send_multipart(frames)
        assert sock.poll(REPLY_TIMEOUT_MS), f"no reply from {uri} to {frames[0][:80]!r}"
        return sock.recv()
    finally:
        sock.close()


def run_exchange(context: zmq.Context, port_base: int, exchange: Exchange, captured: dict) -> None:
    """Send one request and assert the reply is the documented one."""
    uri = f"tcp://127.0.0.1:{port_base + SOCKETS[exchange.socket]}"
    raw = fill(with_ports(exchange.request.text, port_base), captured).encode()
    frames = [raw, *(frame.text.encode() for frame in exchange.frames)]
    documented = json.loads(with_ports(exchange.reply.text, port_base))
    deadline = time.monotonic() + (REPLICA_LAG if exchange.socket == "read queue" else 0.0)
    while True:
        reply = send(context, uri, frames)
        expected = compact(capture(documented, json.loads(reply), captured))
        if reply == expected or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    assert reply == expected, (
        f"docs/protocol.md line {exchange.request.line}: the server answered\n"
        f"  {reply.decode()}\nthe doc says\n  {expected.decode()}"
    )


@pytest.fixture
def servers(tmp_path):
    """A read-write server and one read-only server on a fresh store."""
    writer = ServerProcess(tmp_path / "db.pkl").start()
    reader = ServerProcess(tmp_path / "db.pkl", writer.port_base, read_only=True)
    try:
        reader.start()
        yield writer
    finally:
        reader.stop()
        writer.stop()


def test_every_example_exchange_is_what_a_real_server_answers(servers):
    pairs = exchanges(DOC.read_text(encoding="utf-8"))
    assert len(pairs) >= 50
    captured: dict[str, Any] = {}
    context = zmq.Context()
    try:
        for exchange in pairs:
            run_exchange(context, servers.port_base, exchange, captured)
    finally:
        context.term()


def test_examples_use_every_op_and_both_queues():
    pairs = exchanges(DOC.read_text(encoding="utf-8"))
    requests = [json.loads(p.request.text) for p in pairs if p.request.lang == "json"]
    ops_used = {request["op"] for request in requests}
    every_op = {*protocol.READ_OPS, *protocol.WRITE_OPS, *protocol.CONTROL_OPS, "call"}
    assert every_op <= ops_used, f"no example for {sorted(every_op - ops_used)}"
    assert {pair.socket for pair in pairs} == set(SOCKETS)


def test_doc_names_every_op_method_operator_and_error_type():
    doc = DOC.read_text(encoding="utf-8")
    names = {*protocol.READ_OPS, *protocol.WRITE_OPS, *protocol.CONTROL_OPS, "call"}
    names |= {*ops.READ_METHODS, *ops.WRITE_METHODS, *ops.INPLACE_OPERATORS}
    names |= set(errors._BY_WIRE_NAME)
    missing = sorted(name for name in names if not re.search(rf"`{name}[`(]", doc))
    assert not missing, f"docs/protocol.md does not name {missing}"


def test_doc_states_the_real_limits():
    doc = DOC.read_text(encoding="utf-8")
    assert f"{protocol.MAX_MESSAGE_BYTES} bytes" in doc
    assert f"at most {protocol.codec.MAX_DEPTH} levels" in doc
    assert f"at most {protocol.codec.MAX_INT_BITS:,} bits" in doc
    assert f"the limit of {protocol.codec.MAX_INT_BITS}" in doc
    assert f"at most {protocol.codec.MAX_KEYS_PER_HASH} distinct keys" in doc
    assert f"at most {ops.MAX_REPEAT:,} items" in doc and f"more than {ops.MAX_REPEAT} items" in doc
    assert f"`v` | integer | *(required)* | protocol version: always `{protocol.VERSION}`" in doc
    assert f"({outbox.QUEUED_LIMIT} bytes) of replies of {outbox.TRACK_FROM >> 10} KiB" in doc
    assert f"**{sessions.WINDOW} writes**" in doc and f"longer than {sessions.KEEP_REPLY_BYTES}" in doc


def test_architecture_module_map_lists_every_module():
    doc = ARCHITECTURE.read_text(encoding="utf-8")
    package = ROOT / "pyzdb"
    modules = sorted(
        str(path.relative_to(ROOT)) for path in package.rglob("*.py") if path.name != "__init__.py"
    )
    missing = [module for module in modules if f"`{module}`" not in doc]
    assert not missing, f"docs/architecture.md's module map misses {missing}"


def test_architecture_has_the_durability_and_device_sections():
    doc = ARCHITECTURE.read_text(encoding="utf-8")
    for heading in ("## Durability", "## Device choice"):
        assert heading in doc
    assert "operations.md" in doc
