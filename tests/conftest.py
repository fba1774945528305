"""Fixtures shared by the tests: real server processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from helpers import ServerProcess
from pyzdb.client import Connection


@pytest.fixture
def server(tmp_path):
    """A running read-write server on a fresh store; stopped (by PID) after the test."""
    proc = ServerProcess(tmp_path / "db.pkl").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[ServerProcess]:
    """One server for a module's tests that reset the store themselves (saves start-up time)."""
    proc = ServerProcess(tmp_path_factory.mktemp("shared") / "db.pkl").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def zmq_context() -> Iterator[zmq.Context]:
    """One ZeroMQ context for a module's raw sockets."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def conn(server):
    """A client connection to ``server`` with a short timeout."""
    with Connection(server.write_uri, timeout=10) as connection:
        yield connection


@pytest.fixture
def db(conn):
    """The root reference of ``conn``."""
    return conn.db


@pytest.fixture
def report(request):
    """Write a line to the test run's output (shown even when the test passes)."""
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")

    def write(line: str) -> None:
        if reporter is None:
            return
        with capture.global_and_fixture_disabled():  # past pytest's output capture
            reporter.write_line(f"[{request.node.name}] {line}")

    return write
