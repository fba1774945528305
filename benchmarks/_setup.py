"""What the benchmark needs beyond pyzdb, installed when missing (or skipped with a message).

- Redis, the peer: Debian's ``redis-server`` (``apt-get install``, as root
  only) and redis-py.  Without them the Redis rows are skipped.
- matplotlib for the chart.  Without it the chart is skipped.

The Python packages go to :data:`PYDEPS` (``pip install --target``, in the
git-ignored ``benchmarks/results/``), never into the environment pyzdb runs
in: portalocker imports redis-py whenever it is importable, which would add
~0.15 s to every pyzdb server's start-up and so to the start-up figures.
Only the benchmark itself and its Redis clients put PYDEPS on their path.
``--no-install`` installs nothing at all.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

INSTALL_TIMEOUT = 600
PYDEPS = Path(__file__).resolve().parent / "results" / "pydeps"
"""Where redis-py and matplotlib are installed for the benchmark only."""


def say(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _run(command: list[str]) -> bool:
    say("running: " + " ".join(command))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=INSTALL_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"failed: {exc}")
        return False
    if done.returncode != 0:
        say(f"failed ({done.returncode}): {done.stderr.decode(errors='replace')[-500:]}")
    return done.returncode == 0


def use_pydeps() -> None:
    """Put :data:`PYDEPS` on this process's import path (first, so its versions win)."""
    if str(PYDEPS) not in sys.path:
        sys.path.insert(0, str(PYDEPS))


def python_package(module: str, requirement: str, install: bool) -> bool:
    """Import ``module`` (from :data:`PYDEPS` too), pip-installing ``requirement`` there if missing."""
    use_pydeps()
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        pass
    if not install:
        say(f"{module} is missing and will not be installed (--no-install)")
        return False
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(PYDEPS), requirement]
    if not _run(command):
        return False
    importlib.invalidate_caches()
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    say(f"installed {requirement} into {PYDEPS}")
    return True


def redis_server(install: bool) -> str | None:
    """Path of ``redis-server``, installing Debian's package as root if missing; None if unavailable."""
    found = shutil.which("redis-server")
    if found or not install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say("redis-server is missing and this is not a Debian root shell: the Redis rows are skipped")
        return None
    installed = _run(["apt-get", "install", "-y", "--no-install-recommends", "redis-server"])
    if not installed and _run(["apt-get", "update"]):
        installed = _run(["apt-get", "install", "-y", "--no-install-recommends", "redis-server"])
    found = shutil.which("redis-server")
    if found:
        say(f"installed Debian's redis-server: {found}")
    return found


def redis(install: bool) -> tuple[str | None, str]:
    """``(redis-server path, why not)``: the path is None when the Redis peer must be skipped."""
    binary = redis_server(install)
    if binary is None:
        return None, "redis-server not available"
    if not python_package("redis", "redis", install):
        return None, "redis-py not available"
    return binary, ""


def redis_version(binary: str) -> str:
    """``redis-server --version``'s version field."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    fields = [f for f in out.split() if f.startswith("v=")]
    return fields[0][2:] if fields else out.strip()
