"""The README's program example runs as written against a real server."""

import re

from helpers import ROOT


def test_readme_program_example_runs(server):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert "db, conn = client()" in code
    code = code.replace("client()", f"client({server.write_uri!r}, timeout=10)", 1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["odd_squares"] == [1, 9, 25, 49, 81]
    assert namespace["x"] == 3
