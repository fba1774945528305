"""Command lines: ``pyzdb-server``, ``pyzdb`` (the prompt) and ``pyzdb-exec``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pyzdb import __version__
from pyzdb.client import DEFAULT_WRITE_URI
from pyzdb.keys import SERVER_PUBLIC, client_keys
from pyzdb.server.config import DEFAULT_PORT_BASE, FSYNC_POLICIES, ServerConfig, tcp

_POSITIONAL_URIS = ("write_client_uri", "write_server_uri", "read_client_uri", "read_server_uri", "lock_uri")

PROMPT_TIMEOUT = 10.0
"""Seconds the prompts wait for a reply: a person at a keyboard should not wait a minute."""

SERVER_EPILOG = """\
The original positional form also works:
  server.py [db_filename] [write_client_uri] [write_server_uri] [read_client_uri]
            [read_server_uri] [lock_uri] [-ro] [-v]
write_server_uri (N+2, 5560) is accepted and unused: the read-write server's
request loop owns the clients' write socket itself, with no queue in between.

Every acknowledged write is journaled first: killing the server loses none.
--fsync decides what a power loss can take: always nothing, everysec about the
last second, no whatever the OS had not written (docs/operations.md).

examples:
  pyzdb-server                       store db.pkl, writes on 5559, reads on 5561, lock on 5558
  pyzdb-server -ro                   a read-only server behind the read queue (port 5562)
  pyzdb-server -ro --primary tcp://writer:5563 --db replica.pkl
                                     a replica on another machine, fed over ZeroMQ
  pyzdb-server data.pkl --port-base 6000
  server.py db.pkl tcp://127.0.0.1:5559 tcp://127.0.0.1:5560 tcp://127.0.0.1:5561 tcp://127.0.0.1:5562 tcp://127.0.0.1:5558

Every address is bound on 127.0.0.1 unless you name another interface.
Without --curve there is no authentication: anyone who reaches a port can read
and change everything, so listening beyond this machine without --curve logs a
warning. --curve KEYDIR (keys made by pyzdb-keygen) encrypts every port and
lets in only the keys in KEYDIR/clients/rw, KEYDIR/clients/ro (reads only) and
KEYDIR/replicas (read-only servers); SIGHUP reads them again
(docs/security.md).
  pyzdb-server --curve keys --host 0.0.0.0
  pyzdb-server -ro --curve keys --client-key keys/private/ro1.key_secret
  pyzdb-server -ro --primary tcp://writer:5563 --read-bind tcp://0.0.0.0:5561 \
      --curve keys --client-key keys/private/ro1.key_secret
                                     a replica under CURVE serving its own read port
"""


def server_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyzdb-server`` / ``server.py``."""
    parser = argparse.ArgumentParser(
        prog="pyzdb-server",
        description="Run the pyzdb read-write server (with its read queue), or a read-only server (-ro).",
        epilog=SERVER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("db_filename", nargs="?", help="store file (default: db.pkl)")
    for name in _POSITIONAL_URIS:
        parser.add_argument(name, nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--db", help="store file (default: db.pkl in the current folder)")
    parser.add_argument(
        "--port-base",
        type=int,
        default=DEFAULT_PORT_BASE,
        metavar="N",
        help="lock on N, writes on N+1 (N+2 reserved), "
        "read queue on N+3 (clients) and N+4 (read-only servers) (default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    for name in _POSITIONAL_URIS:
        flag = "--" + name.replace("_", "-")
        what = f"override the {name.replace('_', ' ')}"
        if name == "write_server_uri":
            what = "accepted for compatibility and unused (no queue sits in front of the writer)"
        parser.add_argument(flag, dest=f"opt_{name}", metavar="URI", help=what)
    parser.add_argument(
        "-ro", "--read-only", action="store_true", help="run a read-only server behind the read queue"
    )
    parser.add_argument(
        "--allow-exec",
        action="store_true",
        help="let pyzdb-exec run Python code in the server (unsafe; under --curve, read-write keys only)",
    )
    parser.add_argument(
        "--import-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="let File('/path/on/server') move files from DIR into the store (repeatable; "
        "real paths, symlinks resolved; default: none, only File.upload())",
    )
    parser.add_argument(
        "--curve",
        metavar="KEYDIR",
        help="CURVE keys and encryption on every port, keys from KEYDIR (see pyzdb-keygen); "
        "with -ro: the same as --server-key KEYDIR/server.key",
    )
    parser.add_argument(
        "--server-key",
        metavar="PATH",
        help="-ro under CURVE: the read-write server's public key file "
        "(with --curve KEYDIR: KEYDIR/server.key)",
    )
    parser.add_argument(
        "--client-key",
        metavar="PATH",
        help="-ro under CURVE: this read-only server's replica key "
        "(NAME.key_secret, from pyzdb-keygen --role replica)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="lock lease (default: %(default)s)",
    )
    parser.add_argument(
        "--fsync",
        choices=FSYNC_POLICIES,
        default="everysec",
        help="journal fsync policy (default: %(default)s)",
    )
    parser.add_argument(
        "--autosave-writes",
        type=int,
        default=10_000,
        metavar="N",
        help="write a snapshot after N journaled writes, 0 never (default: %(default)s)",
    )
    parser.add_argument(
        "--autosave-seconds",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="snapshot when writes are unsaved and the last snapshot is this old, 0 never "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--undo-limit", type=int, default=1000, metavar="N", help="undo steps kept (default: %(default)s)"
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=ServerConfig.max_message_size,
        metavar="BYTES",
        help="largest request accepted (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch-ops",
        type=int,
        default=ServerConfig.max_batch_ops,
        metavar="N",
        help="most operations in one batch request (default: %(default)s)",
    )
    _replication_options(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    parser.add_argument("--version", action="version", version=f"pyzdb {__version__}")
    return parser


def _replication_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("replication over ZeroMQ (docs/replication.md)")
    group.add_argument(
        "--repl-port",
        type=int,
        metavar="N",
        help="the writer's replication port (default: N+5 of --port-base, 5563; "
        "with the positional form, only when given)",
    )
    group.add_argument(
        "--repl-backlog-bytes",
        type=int,
        default=ServerConfig.repl_backlog_bytes,
        metavar="BYTES",
        help="journal records the writer keeps in memory for replicas that fall behind, from the first "
        "replica until an hour after the last; one further behind takes a full copy (default: %(default)s)",
    )
    group.add_argument(
        "--repl-backlog-seconds",
        type=float,
        default=ServerConfig.repl_backlog_seconds,
        metavar="SECONDS",
        help="keep the journals a snapshot covers this long (and within --repl-backlog-bytes), so that "
        "the backlog survives snapshots and restarts; 0 deletes them at once (default: %(default)s)",
    )
    group.add_argument(
        "--primary",
        metavar="URI",
        help="with -ro: a replica fed over ZeroMQ from this writer's replication port, "
        "keeping its own store file (--db)",
    )
    group.add_argument(
        "--read-bind",
        metavar="URI",
        help="with --primary: also serve reads directly on this address "
        "(under CURVE it needs --curve KEYDIR with the writer's server.key_secret, "
        "and checks its clients' keys)",
    )
    group.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve db.stats() in Prometheus' text format on this port (needs pyzdb[prometheus])",
    )
    group.add_argument(
        "--slowlog-ms",
        type=float,
        default=ServerConfig.slowlog_ms,
        metavar="MS",
        help="log requests that take longer to answer (op and path depth, no arguments) "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--metrics-host", default="127.0.0.1", help="interface of --metrics-port (default: %(default)s)"
    )


def _apply_replication(
    parser: argparse.ArgumentParser, args: argparse.Namespace, config: ServerConfig
) -> None:
    positional = any(getattr(args, name) for name in _POSITIONAL_URIS)
    if args.repl_port is not None:
        config.repl_uri = tcp(args.host, args.repl_port)
    elif positional:
        config.repl_uri = None  # the original command line binds only what it names
    if args.repl_backlog_bytes < 0:
        parser.error("--repl-backlog-bytes cannot be negative")
    config.repl_backlog_bytes = args.repl_backlog_bytes
    config.repl_backlog_seconds = args.repl_backlog_seconds
    if (args.primary or args.read_bind) and not args.read_only:
        parser.error("--primary and --read-bind are options of a replica: add -ro")
    if args.read_bind and not args.primary:
        parser.error("--read-bind needs --primary")
    if args.read_bind and args.client_key and not args.curve:
        parser.error(
            "--read-bind under CURVE needs --curve KEYDIR (a copy of the writer's key folder, with "
            "server.key_secret), so that its clients are checked as on the writer"
        )
    config.primary, config.read_bind = args.primary, args.read_bind
    if args.read_bind:
        config.curve = args.curve  # a replica's own read port is a server socket: CURVE it like the writer's
    config.metrics_port, config.metrics_host = args.metrics_port, args.metrics_host
    if args.slowlog_ms < 0:
        parser.error("--slowlog-ms cannot be negative")
    config.slowlog_ms = args.slowlog_ms
    if args.primary and not (args.opt_read_server_uri or args.read_server_uri):
        # SPEC 12: the replica joins the read queue of its primary's host
        host = args.primary.split("//", 1)[-1].rsplit(":", 1)[0]
        config.read_server_uri = tcp(host, args.port_base + 4)


def server_config(argv: list[str] | None = None) -> ServerConfig:
    """Parse a server command line into a :class:`ServerConfig`."""
    parser = server_parser()
    args = parser.parse_args(argv)
    if args.undo_limit < 0:
        parser.error("--undo-limit cannot be negative")
    if args.lock_timeout <= 0:
        parser.error("--lock-timeout must be positive")
    if args.max_batch_ops < 1:
        parser.error("--max-batch-ops must be at least 1")
    server_key, client_key = _server_keys(parser, args)
    config = ServerConfig.from_port_base(
        args.port_base,
        host=args.host,
        db=args.db or args.db_filename or "db.pkl",
        read_only=args.read_only,
        allow_exec=args.allow_exec,
        lock_timeout=args.lock_timeout,
        fsync=args.fsync,
        undo_limit=args.undo_limit,
        autosave_writes=args.autosave_writes,
        autosave_seconds=args.autosave_seconds,
        max_message_size=args.max_message_size,
        max_batch_ops=args.max_batch_ops,
        verbose=args.verbose,
        curve=None if args.read_only else args.curve,
        import_dirs=tuple(args.import_dir),
        server_key=server_key,
        client_key=client_key,
    )
    for name in _POSITIONAL_URIS:
        uri = getattr(args, f"opt_{name}") or getattr(args, name)
        if uri:
            setattr(config, name, uri)
    _apply_replication(parser, args, config)
    return config


def _server_keys(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The key files a read-only server connects with (none for the read-write server)."""
    if not args.read_only:
        if args.server_key or args.client_key:
            parser.error("--server-key/--client-key are for -ro; the read-write server takes --curve KEYDIR")
        return None, None
    server_key = args.server_key
    if args.curve and not server_key:
        server_key = os.path.join(args.curve, SERVER_PUBLIC)
    if (server_key is None) != (args.client_key is None):
        parser.error(
            "a read-only server under CURVE needs --client-key (its replica .key_secret) "
            "and --server-key or --curve KEYDIR"
        )
    return server_key, args.client_key


def add_key_options(parser: argparse.ArgumentParser, whose: str) -> None:
    """``--server-key`` / ``--client-key``: connect with CURVE to a server started with ``--curve``."""
    parser.add_argument(
        "--server-key",
        metavar="PATH",
        help="the server's public key file (KEYDIR/server.key), for a server started with --curve",
    )
    parser.add_argument(
        "--client-key", metavar="PATH", help=f"{whose} secret key file (NAME.key_secret from pyzdb-keygen)"
    )


def _client_keys(prog: str, args: argparse.Namespace) -> dict[str, str | None] | None:
    """The key options as ``Connection`` arguments, or None (after one line on stderr) if they are wrong."""
    try:
        client_keys(args.server_key, args.client_key)  # read them now: a clear line, not a traceback
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    return {"server_key": args.server_key, "client_key": args.client_key}


def setup_logging(verbose: int) -> None:
    """Log warnings by default, info with -v, debug with -vv."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr
    )


def main_server(argv: list[str] | None = None) -> int:
    """Entry point of ``pyzdb-server``."""
    config = server_config(argv)
    setup_logging(config.verbose)
    from pyzdb.server.readonly import ReadOnlyServer
    from pyzdb.server.replica import ReplicaServer
    from pyzdb.server.rw import ReadWriteServer

    try:
        if config.primary:
            server = ReplicaServer(config)
        else:
            server = ReadOnlyServer(config) if config.read_only else ReadWriteServer(config)
        server.bind()
    except startup_errors() as exc:  # one clear line, not a traceback
        print(f"pyzdb-server: cannot start: {exc}", file=sys.stderr)
        return 1
    return server.run()


def startup_errors() -> tuple[type[BaseException], ...]:
    """Failures at start-up that deserve one line: bad files, busy ports, a store in use."""
    import pickle

    import zmq

    from pyzdb.storage.durable import StoreInUseError
    from pyzdb.storage.journal import CorruptJournalError

    return (
        OSError,
        ValueError,
        EOFError,
        pickle.UnpicklingError,
        zmq.ZMQError,
        StoreInUseError,
        CorruptJournalError,
    )


def client_parser(prog: str, description: str, read_uri: bool) -> argparse.ArgumentParser:
    """The argument parser of the prompt and of the exec client."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "write_uri", nargs="?", default=DEFAULT_WRITE_URI, help="write queue (default: %(default)s)"
    )
    if read_uri:
        parser.add_argument(
            "read_uri",
            nargs="?",
            help="read queue of read-only servers (default: none, read from the writer)",
        )
    parser.add_argument(
        "--timeout",
        type=float,
        default=PROMPT_TIMEOUT,
        help="seconds to wait for a reply (default: %(default)s)",
    )
    add_key_options(parser, "your")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more")
    return parser


def main_client(argv: list[str] | None = None) -> int:
    """Entry point of ``pyzdb`` / ``client.py``: the interactive prompt."""
    args = client_parser("pyzdb", "The pyzdb prompt: type Python, `db` is the store.", True).parse_args(argv)
    setup_logging(args.verbose)
    from pyzdb.repl import run_prompt

    keys = _client_keys("pyzdb", args)
    if keys is None:
        return 1
    return run_prompt(args.write_uri, args.read_uri, args.timeout, **keys)


def main_exec(argv: list[str] | None = None) -> int:
    """Entry point of ``pyzdb-exec`` / ``exec_client.py``: run lines on the server."""
    parser = client_parser(
        "pyzdb-exec",
        "Debugging client: each line is executed inside the server (needs --allow-exec there).",
        False,
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    from pyzdb.repl import run_exec_prompt

    keys = _client_keys("pyzdb-exec", args)
    if keys is None:
        return 1
    return run_exec_prompt(args.write_uri, args.timeout, **keys)
