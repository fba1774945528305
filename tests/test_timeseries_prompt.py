"""docs/timeseries.md is true: its prompt transcripts replay exactly in ``python client.py`` (SPEC §8)."""

from __future__ import annotations

import re

from test_repl import history, parse_session, prompt, type_line  # noqa: F401 - fixtures and helpers reused

from helpers import ROOT

DOC = ROOT / "docs" / "timeseries.md"


def transcript() -> str:
    """Every ```text block of the doc that is a prompt session, in order, as one session."""
    blocks = re.findall(r"^```text\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    return "".join(block for block in blocks if block.startswith("> "))


def test_doc_transcript_prints_exactly_what_the_doc_shows(prompt):  # noqa: F811 - the fixture
    steps = parse_session(transcript())
    assert len(steps) > 40
    for line, expected in steps:
        assert type_line(prompt, line) == (expected, "> "), line
