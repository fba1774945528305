"""Starting and stopping real pyzdb processes for tests.

Every process is started with ``subprocess.Popen`` on 127.0.0.1 with free
ports (or on the address and behind the command prefix a test gives, such as
``ip netns exec NAME``), and stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import zmq

from pyzdb import errors
from pyzdb.client import Connection

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 15.0
RAW_TIMEOUT = 5.0
_serial = itertools.count()
STOP_TIMEOUT = 15.0


def free_port_base(count: int = 6) -> int:
    """A base port such that ``base .. base+count-1`` are free on 127.0.0.1 right now."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of ports found")


def python_command(*args: str) -> list[str]:
    """``python -m pyzdb ...`` with this interpreter."""
    return [sys.executable, "-m", "pyzdb", *args]


class ManagedProcess:
    """A process a test started: its log file, its PID, and a bounded stop."""

    process: subprocess.Popen | None = None
    log_path: Path
    prefix: tuple[str, ...] = ()
    """Put in front of the command, e.g. ``ip netns exec NAME``; it must exec the command, so that
    the PID stays the process's own (``ip netns exec`` does)."""

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def spawn(self, command: list[str], cwd: Path, preexec_fn=None) -> None:
        """Start ``command`` with its output appended to the log file."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, *command],
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
                preexec_fn=preexec_fn,
            )

    def exited(self) -> bool:
        """True if the process has ended (and is reaped)."""
        return self.process.poll() is not None

    def log(self) -> str:
        """Everything the process printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, signum: int) -> None:
        """Send a signal to the process."""
        os.kill(self.process.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the process and return its exit code (SIGKILL if it does not exit in time)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.send_signal(signum)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
                raise
        return self.process.returncode

    def kill(self) -> int:
        """SIGKILL the process and reap it."""
        return self.stop(signal.SIGKILL)


class ServerProcess(ManagedProcess):
    """A pyzdb server (read-write by default) running as a separate process."""

    def __init__(
        self,
        db: Path,
        port_base: int | None = None,
        *extra: str,
        read_only: bool = False,
        preexec_fn=None,
        keys: dict | None = None,
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
    ) -> None:
        self.db = Path(db)
        self.host = host
        """The interface it binds (``--host``) and where clients reach it."""
        self.prefix = tuple(prefix)
        self.keys = keys or {}
        """``server_key`` / ``client_key`` for the readiness ping of a server started with ``--curve``."""
        self.preexec_fn = preexec_fn
        self.port_base = port_base or free_port_base()
        self.extra = list(extra)
        self.read_only = read_only
        kind = "ro" if read_only else "rw"
        self.log_path = self.db.with_name(f"{self.db.name}.{kind}-{self.port_base}-{next(_serial)}.log")

    @property
    def write_uri(self) -> str:
        """Where clients send writes."""
        return f"tcp://{self.host}:{self.port_base + 1}"

    @property
    def read_uri(self) -> str:
        """Where clients send reads meant for read-only servers."""
        return f"tcp://{self.host}:{self.port_base + 3}"

    def command(self) -> list[str]:
        """The command line that starts this server."""
        args = ["server", "--db", str(self.db), "--port-base", str(self.port_base), *self.extra]
        if self.host != "127.0.0.1":
            args += ["--host", self.host]
        if self.read_only:
            args.append("-ro")
        return python_command(*args)

    def start(self, wait: bool = True) -> ServerProcess:
        """Start the process and, unless ``wait`` is false, wait until it answers."""
        self.spawn(self.command(), self.db.parent, self.preexec_fn)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Block until the server answers a ping, or says it is ready (bounded).

        A read-only server, or one behind a ``prefix`` (maybe in another network
        namespace, out of this process's reach), is ready when its log says so.
        """
        if self.read_only or self.prefix:
            kind = "read-only" if self.read_only else "read-write"
            self._wait_logged(f"{kind} server ready", timeout)
            return
        deadline = time.monotonic() + timeout
        with Connection(self.write_uri, timeout=0.5, retry_interval=0.5, **self.keys) as conn:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
                try:
                    conn.call("ping")
                    return
                except errors.TimeoutError:
                    continue
        self.kill()
        raise RuntimeError(f"server did not answer within {timeout} s: {self.log()}")

    def _wait_logged(self, line: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line in self.log():
                time.sleep(0.1)  # connects (a replica's to the read queue) complete in the background
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"server did not log {line!r} within {timeout} s: {self.log()}")


def child_env() -> dict[str, str]:
    """The environment for a child process: this checkout first on ``PYTHONPATH``, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_clients(
    code: str, count: int, *args: str, timeout: float = 120.0, prefix: Sequence[str] = ()
) -> list[str]:
    """Run ``count`` copies of a Python snippet as separate processes; return their stdout.

    ``prefix`` goes in front of each command (e.g. ``ip netns exec NAME``).
    """
    processes = [
        subprocess.Popen(
            [*prefix, sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for _ in range(count)
    ]
    outputs = []
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if process.returncode != 0:
                raise AssertionError(f"client exited {process.returncode}: {err}")
            outputs.append(out)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(5)
    return outputs


def raw_request(
    context: zmq.Context, uri: str, frames: list[bytes], kind: int = zmq.REQ, wait: float = RAW_TIMEOUT
) -> list[bytes] | None:
    """Send ``frames`` on a fresh raw socket; return the reply frames, or None if none came in ``wait`` s."""
    sock = context.socket(kind)
    sock.linger = 0
    try:
        sock.connect(uri)
        sock.send_multipart(frames)
        if not sock.poll(wait * 1000):
            return None
        return sock.recv_multipart()
    finally:
        sock.close()


def wait_until(condition, timeout: float = 5.0, interval: float = 0.05) -> None:
    """Poll ``condition()`` until it is true; ``AssertionError`` after ``timeout`` seconds (bounded)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        if condition():
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
