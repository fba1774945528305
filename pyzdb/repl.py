"""The interactive prompts: ``client.py`` (Python with ``db``) and ``exec_client.py``.

Both read lines with ``input()`` (readline gives line editing and a history
kept in ``~/.pyzdb_history``, or ``$PYZDB_HISTORY``), print every error as
one line (``KeyError: 'nope'``), and leave cleanly on Ctrl-D or Ctrl-C.
"""

from __future__ import annotations

import builtins
import code
import codeop
import os
import sys
from typing import Any

from pyzdb.client import Connection
from pyzdb.errors import ServerError, display_name
from pyzdb.proxy import Ref

PROMPT = "> "
CONTINUATION = "... "
EXEC_PROMPT = ">>> "


def format_error(exc: BaseException) -> str:
    """One line for an error: ``KeyError: 'nope'``."""
    message = str(exc)
    if type(exc) is ServerError:  # an error type this client does not know: its name is in the message
        return message
    if isinstance(exc, SyntaxError):
        message = exc.msg
    return f"{display_name(exc)}: {message}" if message else display_name(exc)


class _Console(code.InteractiveConsole):
    """Shared line handling: prompts, one-line errors, clean exits."""

    prompt = PROMPT

    def showsyntaxerror(self, filename: str | None = None, **_: Any) -> None:
        """Print a syntax error as one line."""
        self.write(format_error(sys.exc_info()[1]) + "\n")

    def showtraceback(self) -> None:
        """Print the current error as one line."""
        self.write(format_error(sys.exc_info()[1]) + "\n")

    def write(self, data: str) -> None:
        """Errors go to stdout, in order with results."""
        sys.stdout.write(data)
        sys.stdout.flush()

    def loop(self) -> int:
        """Read and run lines until Ctrl-D or Ctrl-C."""
        more = False
        while True:
            try:
                line = input(CONTINUATION if more else self.prompt)
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            try:
                more = self.push(line)
            except KeyboardInterrupt:
                self.resetbuffer()
                more = False
                print("KeyboardInterrupt")


class Prompt(_Console):
    """Python with ``db`` bound to the store; references are fetched when shown."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(locals={"db": conn.db, "conn": conn}, filename="<pyzdb>")

    def runcode(self, code_object: Any) -> None:
        """Run one statement, showing expression values like Python's REPL."""
        saved, sys.displayhook = sys.displayhook, show
        try:
            exec(code_object, self.locals)  # noqa: S102 - the user's own input, run locally
        except SystemExit:
            raise
        except Exception:
            self.showtraceback()
        finally:
            sys.displayhook = saved


def show(value: Any) -> None:
    """Display hook: fetch a reference, then print it as Python's REPL would."""
    if isinstance(value, Ref):
        value = value._run()
    if value is None:
        return
    builtins._ = value
    print(repr(value))


class ExecPrompt(_Console):
    """Each complete statement is sent to the server and run there."""

    prompt = EXEC_PROMPT

    def __init__(self, conn: Connection) -> None:
        super().__init__(filename="<exec>")
        self.conn = conn

    def runsource(self, source: str, filename: str = "<exec>", symbol: str = "single") -> bool:
        """Send ``source`` once it is complete; True while more lines are needed."""
        try:
            # "single", as Python's own prompt: a block is complete only after an empty line
            if codeop.compile_command(source, filename, symbol) is None:
                return True
        except (SyntaxError, ValueError, OverflowError):
            self.showsyntaxerror()
            return False
        try:
            self.write(self.conn.call("exec", args=(source,)))
        except Exception:
            self.showtraceback()
        return False


def _history_file() -> str:
    return os.environ.get("PYZDB_HISTORY") or os.path.expanduser("~/.pyzdb_history")


def _with_history(console: _Console) -> int:
    try:
        import readline
    except ImportError:  # no line editing on this platform: still usable
        return console.loop()
    history = _history_file()
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    try:
        return console.loop()
    finally:
        try:
            readline.write_history_file(history)
        except OSError:
            pass


def run_prompt(write_uri: str, read_uri: str | None, timeout: float, **keys: str | None) -> int:
    """Run the ``client.py`` prompt until the user leaves (``keys``: ``server_key``, ``client_key``)."""
    with Connection(write_uri, read_uri, timeout, **keys) as conn:
        return _with_history(Prompt(conn))


def run_exec_prompt(uri: str, timeout: float, **keys: str | None) -> int:
    """Run the ``exec_client.py`` prompt until the user leaves (``keys``: ``server_key``, ``client_key``)."""
    with Connection(uri, timeout=timeout, **keys) as conn:
        return _with_history(ExecPrompt(conn))
