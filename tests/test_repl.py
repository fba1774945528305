"""End-to-end tests of the prompt: ``python client.py <uri>`` in a pseudo-terminal against a real server.

The terminal echoes what is typed, so the text between two prompts is the
typed line followed by the lines the prompt printed; the tests compare both
exactly.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from helpers import ROOT, ServerProcess
from pyzdb.client import Connection
from pyzdb.storage import snapshot

WAIT = 10
"""Seconds any single expectation may take."""

PROMPTS = ["> ", "... "]

# SPEC §2, verbatim: "> " lines are typed, the others are what the prompt prints.
SPEC_SESSION = """\
> db
{}
> db['x'] = 3
> db['x']
3
> db['l'] = range(10)
> db
{'x': 3, 'l': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
> db['l'][4] = ['a', 'b', 'c']
> db.undo()
> db
{'x': 3, 'l': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
> db.undo()
> db.redo()
> db.redo()
> db
{'x': 3, 'l': [0, 1, 2, 3, ['a', 'b', 'c'], 5, 6, 7, 8, 9]}
> [v for v in db['l'][4]]
['a', 'b', 'c']
> [k for k in db]
['x', 'l']
> db['l'][4].append('d')
> db.save()
"""


def parse_session(text: str) -> list[tuple[str, list[str]]]:
    """``[(typed line, [printed lines]), ...]`` from a transcript."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("> "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def spawn_prompt(uri: str, history: Path, *args: str) -> pexpect.spawn:
    """Start ``python client.py uri`` in a terminal, with its history file at ``history``."""
    env = dict(os.environ, TERM="dumb", INPUTRC="/dev/null", PYZDB_HISTORY=str(history), PYTHONPATH=str(ROOT))
    return pexpect.spawn(
        sys.executable,
        ["client.py", uri, *args],
        cwd=str(ROOT),
        env=env,
        timeout=WAIT,
        encoding="utf-8",
        dimensions=(24, 200),
    )


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """Where the prompt keeps its history in this test."""
    return tmp_path / "history"


@pytest.fixture
def prompt(server: ServerProcess, history: Path) -> Iterator[pexpect.spawn]:
    """A prompt connected to ``server``, waiting at its first "> "; killed after the test if still running."""
    child = spawn_prompt(server.write_uri, history)
    try:
        child.expect_exact("> ", timeout=WAIT)
        assert child.before == ""  # no banner, no warning
        yield child
    finally:
        child.close(force=True)


def type_line(child: pexpect.spawn, line: str) -> tuple[list[str], str]:
    """Type ``line`` and Enter; return the printed lines (without the echo) and the next prompt."""
    child.sendline(line)
    child.expect_exact(PROMPTS, timeout=WAIT)
    echo, *printed = child.before.split("\r\n")
    assert echo == line
    assert printed[-1] == ""  # the prompt starts a line
    return printed[:-1], child.after


def recall_previous_line(child: pexpect.spawn) -> list[str]:
    """Press up-arrow then Enter; return the lines shown before the next prompt (the recalled line first)."""
    child.send("\x1b[A")
    child.sendline("")
    child.expect_exact("> ", timeout=WAIT)
    return child.before.split("\r\n")


def finish(child: pexpect.spawn) -> int:
    """Wait for the prompt to exit; return its exit status."""
    child.expect(pexpect.EOF, timeout=WAIT)
    child.close()
    assert child.signalstatus is None
    return child.exitstatus


def test_spec_session_prints_exactly_what_the_spec_shows(prompt, server, tmp_path) -> None:
    """Every line of the SPEC §2 session prints exactly what the spec shows, then "> " again."""
    for line, expected in parse_session(SPEC_SESSION):
        assert type_line(prompt, line) == (expected, "> "), line
    state = snapshot.load(tmp_path / "db.pkl")  # db.save() wrote the snapshot
    assert state["root"] == {"x": 3, "l": [0, 1, 2, 3, ["a", "b", "c", "d"], 5, 6, 7, 8, 9]}
    prompt.sendeof()
    assert finish(prompt) == 0


def test_errors_print_one_line_and_the_prompt_goes_on(prompt) -> None:
    """Server errors, refusals, local errors and syntax errors: one line each, then the prompt."""
    cases = [
        ("db['nope']", ["KeyError: 'nope'"]),
        ("db['l'] = [1]", []),
        ("db['l'][5]", ["IndexError: list index out of range"]),
        ("db['l'].foo()", ["NotAllowedError: 'list' has no allowed operation 'foo' (allowed: "]),
        ("db['s'] = {1}", ["TypeError: cannot store a value of type set at "]),
        ("undefined_name", ["NameError: name 'undefined_name' is not defined"]),
        ("db]", ["SyntaxError: unmatched ']'"]),
        ("db.undo(); db.undo()", ["UndoError: "]),
        ("'l' in db", ["False"]),  # the first undo() ran, the failing second one ended the line
    ]
    for line, expected in cases:
        printed, next_prompt = type_line(prompt, line)
        assert next_prompt == "> " and len(printed) == len(expected), (line, printed)
        for got, start in zip(printed, expected, strict=True):
            assert got.startswith(start), (line, got)
    prompt.sendeof()
    assert finish(prompt) == 0


def test_unreachable_server_prints_a_timeout_line(server, history) -> None:
    """The server gone: one TimeoutError line after --timeout, and the prompt goes on."""
    child = spawn_prompt(server.write_uri, history, "--timeout", "1")
    try:
        child.expect_exact("> ", timeout=WAIT)
        assert type_line(child, "db['x'] = 1") == ([], "> ")
        assert server.stop() == 0
        printed, next_prompt = type_line(child, "db['x']")
        assert next_prompt == "> " and len(printed) == 1
        assert printed[0].startswith("TimeoutError: no reply from ")
        child.sendeof()
        assert finish(child) == 0
    finally:
        child.close(force=True)


def test_multi_line_for_loop(prompt) -> None:
    """A ``for`` block continues with "... " and runs on the empty line."""
    assert type_line(prompt, "db['l'] = ['a', 'b']") == ([], "> ")
    assert type_line(prompt, "for v in db['l']:") == ([], "... ")
    assert type_line(prompt, "    print(v * 2)") == ([], "... ")
    assert type_line(prompt, "") == (["aa", "bb"], "> ")


def test_ctrl_d_exits_with_status_0(prompt) -> None:
    """Ctrl-D at the prompt leaves with status 0."""
    prompt.sendeof()
    assert finish(prompt) == 0


def test_ctrl_c_exits_with_status_0(prompt) -> None:
    """Ctrl-C at the prompt leaves with status 0, not a traceback."""
    prompt.sendintr()
    prompt.expect(pexpect.EOF, timeout=WAIT)
    assert "Traceback" not in prompt.before
    prompt.close()
    assert (prompt.exitstatus, prompt.signalstatus) == (0, None)


def test_history_is_saved_and_recalled_with_up_arrow(server, prompt, history) -> None:
    """History is written on exit; up-arrow recalls the last line, in this session and in the next."""
    assert type_line(prompt, "db['n'] = 0") == ([], "> ")
    assert type_line(prompt, "db['n'] += 1") == ([], "> ")
    assert recall_previous_line(prompt) == ["db['n'] += 1", ""]
    prompt.sendeof()
    assert finish(prompt) == 0
    # readline keeps one copy of a line repeated at once
    assert history.read_text().splitlines() == ["db['n'] = 0", "db['n'] += 1"]
    child = spawn_prompt(server.write_uri, history)
    try:
        child.expect_exact("> ", timeout=WAIT)
        assert recall_previous_line(child) == ["db['n'] += 1", ""]
        child.sendintr()
        assert finish(child) == 0
    finally:
        child.close(force=True)
    with Connection(server.write_uri, timeout=10) as conn:
        assert conn.db["n"]._run() == 3  # typed once, recalled twice


def test_prompt_survives_sigterm_of_the_server_between_lines(server, prompt) -> None:
    """A restarted server is picked up by the same prompt (SPEC §3: the client object continues)."""
    assert type_line(prompt, "db['x'] = 1") == ([], "> ")
    assert server.stop(signal.SIGTERM) == 0
    server.start()
    assert type_line(prompt, "db['x']") == (["1"], "> ")
