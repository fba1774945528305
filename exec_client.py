#!/usr/bin/env python3
"""pyzdb debugging client: ``python exec_client.py [uri]``; the server needs --allow-exec."""

import sys

from pyzdb.cli import main_exec

if __name__ == "__main__":
    sys.exit(main_exec())
