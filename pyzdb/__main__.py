"""``python -m pyzdb``: the interactive prompt (``python -m pyzdb server`` runs the server)."""

import sys

from pyzdb.cli import main_client, main_exec, main_server
from pyzdb.keys import main_keygen

COMMANDS = {"server": main_server, "exec": main_exec, "prompt": main_client, "keygen": main_keygen}


def main() -> int:
    """Dispatch ``python -m pyzdb [server|exec|prompt|keygen] ...``; the prompt by default."""
    argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return main_client(argv)


if __name__ == "__main__":
    sys.exit(main())
