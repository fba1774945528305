"""End-to-end tests of the debugging client: ``python exec_client.py <uri>`` in a pseudo-terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from helpers import ROOT, ServerProcess
from pyzdb.client import Connection

WAIT = 10
"""Seconds any single expectation may take."""

PROMPT = ">>> "
CONTINUATION = "... "


def spawn_exec_client(uri: str, history: Path) -> pexpect.spawn:
    """Start ``python exec_client.py uri`` in a terminal, waiting at its first prompt."""
    env = dict(os.environ, TERM="dumb", INPUTRC="/dev/null", PYZDB_HISTORY=str(history), PYTHONPATH=str(ROOT))
    child = pexpect.spawn(
        sys.executable,
        ["exec_client.py", uri],
        cwd=str(ROOT),
        env=env,
        timeout=WAIT,
        encoding="utf-8",
        dimensions=(24, 200),
    )
    child.expect_exact(PROMPT, timeout=WAIT)
    return child


def type_line(child: pexpect.spawn, line: str, prompt: str = PROMPT) -> list[str]:
    """Type ``line`` and Enter; return the printed lines (without the echo) up to the next ``prompt``."""
    child.sendline(line)
    child.expect_exact(prompt, timeout=WAIT)
    echo, *printed = child.before.split("\r\n")
    assert echo == line and printed[-1] == ""
    return printed[:-1]


def leave(child: pexpect.spawn) -> int:
    """Ctrl-D, then the exit status."""
    child.sendeof()
    child.expect(pexpect.EOF, timeout=WAIT)
    child.close()
    return child.exitstatus


@pytest.fixture
def exec_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server started with --allow-exec."""
    proc = ServerProcess(tmp_path / "db.pkl", None, "--allow-exec").start()
    yield proc
    proc.stop()


def test_refused_without_allow_exec(server, tmp_path) -> None:
    """A server without --allow-exec refuses each line clearly; the prompt goes on and nothing runs."""
    child = spawn_exec_client(server.write_uri, tmp_path / "history")
    try:
        for line in ("db['z'] = 5", "print(len(db))"):
            printed = type_line(child, line)
            assert len(printed) == 1 and printed[0].startswith("ExecNotAllowedError: ")
            assert "--allow-exec" in printed[0]
        assert leave(child) == 0
    finally:
        child.close(force=True)
    with Connection(server.write_uri, timeout=10) as conn:
        assert conn.db._run() == {}
    assert "--allow-exec" not in server.log()


def test_runs_code_in_the_server_with_allow_exec(exec_server, tmp_path) -> None:
    """Statements run in the server, expressions print their repr, errors print one line, blocks wait."""
    assert "WARNING: --allow-exec" in exec_server.log()
    child = spawn_exec_client(exec_server.write_uri, tmp_path / "history")
    try:
        assert type_line(child, "print(len(db))") == ["0"]
        assert type_line(child, "db['z'] = 5") == []
        with Connection(exec_server.write_uri, timeout=10) as conn:
            assert conn.db["z"]._run() == 5  # a normal client sees it
        assert type_line(child, "db['z'] * 2, 'text'") == ["(10, 'text')"]
        assert type_line(child, "import os; os.getpid()") == [str(exec_server.pid)]
        assert type_line(child, "db['nope']") == ["ExecError: KeyError: 'nope'"]
        assert type_line(child, "1 +") == ["SyntaxError: invalid syntax"]
        assert type_line(child, "for k in db:", CONTINUATION) == []  # not sent until the block ends
        assert type_line(child, "    print(k, db[k])", CONTINUATION) == []
        assert type_line(child, "") == ["z 5"]
        assert leave(child) == 0
    finally:
        child.close(force=True)
