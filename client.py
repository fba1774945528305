#!/usr/bin/env python3
"""pyzdb prompt: ``python client.py [write_uri] [read_uri] [-v]`` (see --help)."""

import sys

from pyzdb.cli import main_client

if __name__ == "__main__":
    sys.exit(main_client())
