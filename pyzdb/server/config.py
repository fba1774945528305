"""Server settings, with the defaults SPEC §1 promises."""

from __future__ import annotations

from dataclasses import dataclass

from pyzdb.protocol import MAX_BATCH_OPS, MAX_MESSAGE_BYTES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT_BASE = 5558
FSYNC_POLICIES = ("always", "everysec", "no")


def tcp(host: str, port: int) -> str:
    """``tcp://host:port``."""
    return f"tcp://{host}:{port}"


@dataclass
class ServerConfig:
    """Everything a read-write or read-only server needs to know."""

    db: str = "db.pkl"
    write_client_uri: str = tcp(DEFAULT_HOST, DEFAULT_PORT_BASE + 1)
    write_server_uri: str = tcp(DEFAULT_HOST, DEFAULT_PORT_BASE + 2)
    read_client_uri: str = tcp(DEFAULT_HOST, DEFAULT_PORT_BASE + 3)
    read_server_uri: str = tcp(DEFAULT_HOST, DEFAULT_PORT_BASE + 4)
    lock_uri: str = tcp(DEFAULT_HOST, DEFAULT_PORT_BASE)
    read_only: bool = False
    allow_exec: bool = False
    lock_timeout: float = 30.0
    fsync: str = "everysec"
    undo_limit: int = 1000
    autosave_writes: int = 10_000
    autosave_seconds: float = 300.0
    max_message_size: int = MAX_MESSAGE_BYTES
    max_batch_ops: int = MAX_BATCH_OPS
    verbose: int = 0
    import_dirs: tuple[str, ...] = ()
    """Folders ``File("/path")`` may move files from (``--import-dir``, SPEC §4); none by default."""
    curve: str | None = None
    """Key folder (``--curve``): CURVE on every bound socket, keys checked by role (SPEC §11).

    A replica binds only ``read_bind``: with it, its clients are checked against the same folder.
    """
    server_key: str | None = None
    """Read-only server under CURVE: the server's public key file (``--server-key``)."""
    client_key: str | None = None
    """Read-only server under CURVE: its replica ``.key_secret`` file (``--client-key``)."""
    repl_uri: str | None = None
    """Where the read-write server binds its replication port (None: no replication)."""
    primary: str | None = None
    """A replica's writer (its replication port); None for a replica of the on-disk files."""
    read_bind: str | None = None
    """A replica's own read address, besides the writer's read queue."""
    repl_backlog_bytes: int = 64 << 20
    repl_backlog_seconds: float = 0.0
    """Journals covered by a snapshot are kept this long for the backlog (0: deleted at once)."""
    slowlog_ms: float = 100.0
    """Requests answered slower than this are logged (0: every request)."""
    metrics_port: int | None = None
    """Serve the statistics in Prometheus' text format on this port (None: off)."""
    metrics_host: str = DEFAULT_HOST

    @classmethod
    def from_port_base(cls, base: int, host: str = DEFAULT_HOST, **settings) -> ServerConfig:
        """Lock on ``base``, writes on ``base+1``/``+2``, read queue on ``+3``/``+4``, replication ``+5``."""
        return cls(
            lock_uri=tcp(host, base),
            write_client_uri=tcp(host, base + 1),
            write_server_uri=tcp(host, base + 2),
            read_client_uri=tcp(host, base + 3),
            read_server_uri=tcp(host, base + 4),
            repl_uri=tcp(host, base + 5),
            **settings,
        )


def is_loopback(uri: str) -> bool:
    """True if a bind address only listens on this machine (``tcp://127.x``, ``localhost``, ipc, inproc)."""
    if not uri.startswith("tcp://"):
        return True
    host = uri[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


def connectable(uri: str) -> str:
    """Turn a bind address (``tcp://*:5560``, ``tcp://0.0.0.0:5560``) into one to connect to."""
    for wildcard in ("//*:", "//0.0.0.0:"):
        uri = uri.replace(wildcard, f"//{DEFAULT_HOST}:")
    return uri
