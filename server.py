#!/usr/bin/env python3
"""pyzdb server: ``python server.py [db_filename] [uris...] [-ro] [-v]`` (see --help)."""

import sys

from pyzdb.cli import main_server

if __name__ == "__main__":
    sys.exit(main_server())
