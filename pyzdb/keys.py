"""CURVE key files: making them (``pyzdb-keygen``) and loading them (SPEC §11).

The files are pyzmq's certificate format (``zmq.auth.load_certificate``
reads them): ``NAME.key`` holds a public key, ``NAME.key_secret`` the pair.
A server's key folder::

    KEYDIR/server.key              the server's public key (give it to clients)
    KEYDIR/server.key_secret       the server's pair (0600, stays on the server)
    KEYDIR/clients/rw/NAME.key     public keys of read-write clients
    KEYDIR/clients/ro/NAME.key     public keys of read-only clients
    KEYDIR/replicas/NAME.key       public keys of read-only servers and replicas
    KEYDIR/private/NAME.key_secret secret pairs made by ``--client NAME`` (0600),
                                   to hand to that client and delete here

Secret files are created 0600 and never overwritten.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

ROLE_FOLDERS = {"rw": Path("clients", "rw"), "ro": Path("clients", "ro"), "replica": Path("replicas")}
"""Where each role's public keys live inside a key folder."""
SERVER_PUBLIC = "server.key"
SERVER_SECRET = "server.key_secret"
PRIVATE_FOLDER = "private"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or does not hold a valid CURVE key."""


def _checked(key: bytes | None, path: Path, what: str) -> bytes:
    """``key`` if it is a valid z85 CURVE key (40 characters, 32 bytes), else KeyFileError."""
    if key is None:
        raise KeyFileError(f"{path}: no {what} key in this file")
    try:
        if len(key) != 40 or len(z85.decode(key)) != 32:
            raise ValueError
    except ValueError:
        raise KeyFileError(f"{path}: the {what} key is not a 40-character z85 CURVE key") from None
    return key


def load_public(path: str | os.PathLike) -> bytes:
    """The z85 public key in a ``.key`` (or ``.key_secret``) file; ``KeyFileError`` if none."""
    path = Path(path)
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc}") from None
    return _checked(public, path, "public")


def load_pair(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """The z85 ``(public, secret)`` pair in a ``.key_secret`` file; ``KeyFileError`` if not one."""
    path = Path(path)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc}") from None
    if secret is None:
        raise KeyFileError(f"{path} holds no secret key: pass the .key_secret file, not the .key")
    return _checked(public, path, "public"), _checked(secret, path, "secret")


@dataclass(frozen=True)
class ClientKeys:
    """What a CURVE client needs: the server's public key and its own pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, server_key: str | os.PathLike, client_key: str | os.PathLike) -> ClientKeys:
        """Read ``server_key`` (the server's ``.key``) and ``client_key`` (this client's ``.key_secret``)."""
        server_public = load_public(server_key)
        public, secret = load_pair(client_key)
        return cls(server_public, public, secret)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the server (before it connects)."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def client_keys(server_key: str | None, client_key: str | None) -> ClientKeys | None:
    """Both paths given: the loaded keys; neither: None; only one: ``ValueError``."""
    if server_key is None and client_key is None:
        return None
    if server_key is None or client_key is None:
        raise ValueError("CURVE needs both server_key (the server's .key) and client_key (your .key_secret)")
    return ClientKeys.load(server_key, client_key)


# --- making keys -------------------------------------------------------------------

_HEADER = "#   ****  Generated on {now} by pyzdb-keygen  ****\n#   ZeroMQ CURVE {kind} Certificate\n"
_SECRET_WARNING = "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` with ``mode`` (never widening it first) and ``text``; refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf8") as out:
        out.write(text)


def _certificate(public: bytes, secret: bytes | None) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    kind = "**Secret**" if secret else "Public"
    lines = [_HEADER.format(now=now, kind=kind), _SECRET_WARNING if secret else "", "\nmetadata\ncurve\n"]
    lines.append(f'    public-key = "{public.decode()}"\n')
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"\n')
    return "".join(lines)


def write_pair(public_path: Path, secret_path: Path) -> None:
    """Make a new key pair: the public key in ``public_path``, the pair in ``secret_path`` (0600)."""
    for path in (public_path, secret_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it first to make a new key")
    public, secret = zmq.curve_keypair()
    _write_new(secret_path, _certificate(public, secret), 0o600)
    try:
        _write_new(public_path, _certificate(public, None), 0o644)
    except BaseException:
        secret_path.unlink()
        raise


def make_server_keys(keydir: Path) -> list[Path]:
    """Make the server pair and the role folders in ``keydir``; return the files made."""
    for path in (keydir / SERVER_PUBLIC, keydir / SERVER_SECRET):
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it first to make a new server key")
    keydir.mkdir(parents=True, exist_ok=True)
    for folder in ROLE_FOLDERS.values():
        (keydir / folder).mkdir(parents=True, exist_ok=True)
    write_pair(keydir / SERVER_PUBLIC, keydir / SERVER_SECRET)
    return [keydir / SERVER_PUBLIC, keydir / SERVER_SECRET]


def make_client_keys(keydir: Path, name: str, role: str) -> list[Path]:
    """Make a pair for client ``name``: its public key in the role's folder, its pair in ``private/``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad client name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    if role not in ROLE_FOLDERS:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLE_FOLDERS)}")
    if not (keydir / SERVER_SECRET).exists():
        raise FileNotFoundError(f"{keydir / SERVER_SECRET} not found: run 'pyzdb-keygen {keydir}' first")
    for other, folder in ROLE_FOLDERS.items():
        if (keydir / folder / f"{name}.key").exists():
            raise FileExistsError(f"a key named {name!r} already exists (role {other}); pick another name")
    (keydir / ROLE_FOLDERS[role]).mkdir(parents=True, exist_ok=True)
    private = keydir / PRIVATE_FOLDER
    private.mkdir(mode=0o700, exist_ok=True)
    public_path = keydir / ROLE_FOLDERS[role] / f"{name}.key"
    secret_path = private / f"{name}.key_secret"
    write_pair(public_path, secret_path)
    return [public_path, secret_path]


def keygen_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyzdb-keygen``."""
    parser = argparse.ArgumentParser(
        prog="pyzdb-keygen",
        description="Make CURVE keys for a pyzdb server started with --curve KEYDIR (docs/security.md).",
        epilog="examples:\n"
        "  pyzdb-keygen keys                              the server pair and the role folders\n"
        "  pyzdb-keygen keys --client alice --role rw     a read-write client\n"
        "  pyzdb-keygen keys --client bob --role ro       a read-only client\n"
        "  pyzdb-keygen keys --client ro1 --role replica  a read-only server (pyzdb-server -ro)\n"
        "A client's secret file goes to KEYDIR/private/NAME.key_secret (0600): move it to the client.\n"
        "Send SIGHUP to a running server to make it read the key folders again.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("keydir", help="the server's key folder")
    parser.add_argument(
        "--client", metavar="NAME", help="make a client pair named NAME instead of the server's"
    )
    parser.add_argument("--role", choices=list(ROLE_FOLDERS), help="the client's role (with --client)")
    return parser


def main_keygen(argv: list[str] | None = None) -> int:
    """Entry point of ``pyzdb-keygen``."""
    parser = keygen_parser()
    args = parser.parse_args(argv)
    if (args.client is None) != (args.role is None):
        parser.error("--client and --role go together")
    keydir = Path(args.keydir)
    try:
        if args.client is None:
            public, secret = make_server_keys(keydir)
            print(f"server public key: {public} (give it to clients as --server-key)")
            print(f"server secret key: {secret} (keep it on the server)")
        else:
            public, secret = make_client_keys(keydir, args.client, args.role)
            print(f"{args.role} public key: {public} (the server reads it at start and on SIGHUP)")
            print(f"secret key: {secret} (move it to the client, pass it as --client-key)")
    except (OSError, ValueError) as exc:
        print(f"pyzdb-keygen: {exc}", file=sys.stderr)
        return 1
    return 0
