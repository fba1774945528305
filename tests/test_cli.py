"""End-to-end tests of the command lines: --help, the original positional form, a busy port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ROOT, free_port_base
from pyzdb import errors
from pyzdb.client import Connection

WAIT = 15.0
SERVER_OPTIONS = ("--read-only", "--allow-exec", "--lock-timeout", "--fsync", "--undo-limit", "--port-base")


def env() -> dict[str, str]:
    """The environment of a child process: this checkout importable from any folder."""
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run a command to its end (bounded) and capture its output."""
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=WAIT)


def positional_uris() -> list[str]:
    """Write client, write server, read client, read server and lock URIs on free ports."""
    base = free_port_base()
    return [f"tcp://127.0.0.1:{base + i}" for i in range(5)]


def wait_answering(uri: str, process: subprocess.Popen) -> None:
    """Block until a server answers a ping on ``uri`` (bounded), failing early if it died."""
    deadline = time.monotonic() + WAIT
    with Connection(uri, timeout=0.5, retry_interval=0.5) as conn:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate(timeout=WAIT)
            try:
                conn.call("ping")
                return
            except errors.TimeoutError:
                continue
    raise AssertionError(f"no answer on {uri} within {WAIT} s")


def stop(process: subprocess.Popen) -> int:
    """SIGTERM by PID and reap (SIGKILL if it does not exit in time); return the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(WAIT)
    return process.returncode


@pytest.fixture
def positional_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, list[str]]]:
    """``server.py db.pkl A B C D E`` running in ``tmp_path``; stopped by PID after the test."""
    uris = positional_uris()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "db.pkl", *uris],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_answering(uris[0], process)
        yield process, uris
    finally:
        stop(process)


HELP_COMMANDS = {"server.py": ["server.py", "--help"], "-m pyzdb server": ["-m", "pyzdb", "server", "--help"]}


@pytest.mark.parametrize("args", list(HELP_COMMANDS.values()), ids=list(HELP_COMMANDS))
def test_server_help(args: list[str]) -> None:
    """--help exits 0 and names every server option users rely on."""
    result = run([sys.executable, *args])
    assert result.returncode == 0, result.stderr
    for option in SERVER_OPTIONS:
        assert option in result.stdout


@pytest.mark.parametrize("script", ["client.py", "exec_client.py"])
def test_client_help(script: str) -> None:
    """The prompt and the exec client answer --help without connecting anywhere."""
    result = run([sys.executable, script, "--help"])
    assert result.returncode == 0, result.stderr
    assert "--timeout" in result.stdout


def test_positional_form_starts_a_server(positional_server, tmp_path) -> None:
    """The original positional form serves on its write URI, binds its lock URI, stores in its file."""
    process, uris = positional_server
    with Connection(uris[0], timeout=10) as conn:
        conn.db["x"] = 3
        assert conn.db["x"]._run() == 3
        conn.lock()
        assert conn._lock.uri == uris[4]
        conn.db["x"] += 1  # through the lock socket
        conn.unlock()
    assert stop(process) == 0
    assert (tmp_path / "db.pkl").exists()


def test_second_server_on_the_same_ports_fails_in_one_line(positional_server, tmp_path) -> None:
    """Busy ports: exit code 1 and one line on stderr, no traceback; the first server is unharmed."""
    _, uris = positional_server
    other = tmp_path / "other"
    other.mkdir()
    result = run([sys.executable, str(ROOT / "server.py"), "db.pkl", *uris], cwd=other)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0], result.stderr
    with Connection(uris[0], timeout=10) as conn:
        assert conn.call("ping")["version"] == 1
