"""CURVE on the server's sockets, and the ZAP handler that decides who gets in (SPEC §11).

With ``--curve KEYDIR`` every socket a server binds is a CURVE server with a
ZAP domain: :data:`CLIENT_DOMAIN` on the ports clients use (write, lock, the
read queue's client side), :data:`REPLICA_DOMAIN` on the read queue's server
side.  :class:`ZapHandler` answers libzmq's ZAP requests from the keys in
KEYDIR (:class:`KeyRing`); the ``User-Id`` it gives a client connection is
the client's z85 public key, which the request loop looks up again for every
request (so a key removed on SIGHUP stops working on the write and lock
ports at once, and its role is always the current one).

Failing closed rests on two settings, both applied by :func:`secure`:
libzmq lets every CURVE key in when no ZAP handler answers, unless the
socket enforces its ZAP domain (``ZMQ_ZAP_ENFORCE_DOMAIN``); and the handler
here knows only its two domains, so a socket left without one (or any other
domain) is refused rather than matched by a wildcard.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.utils import z85

from pyzdb import keys

log = logging.getLogger("pyzdb.server")

CLIENT_DOMAIN = "pyzdb"
"""ZAP domain of the ports clients connect to: read-write and read-only keys."""
REPLICA_DOMAIN = "pyzdb-replica"
"""ZAP domain of the read queue's server side: replica keys only."""
RW, RO = "rw", "ro"
ZAP_URI = "inproc://zeromq.zap.01"
"""Where libzmq sends its ZAP requests (RFC 27), in the sockets' own context."""
_POLL_MS = 100


@dataclass(frozen=True)
class KeyRing:
    """The keys of one key folder: the server pair and each allowed public key's role."""

    server_public: bytes
    server_secret: bytes
    clients: dict[str, str] = field(default_factory=dict)
    """z85 public key -> ``"rw"`` or ``"ro"``."""
    replicas: frozenset[str] = frozenset()
    """z85 public keys of read-only servers and replicas."""

    @classmethod
    def load(cls, keydir: str | Path) -> KeyRing:
        """Read ``keydir`` (layout in ``pyzdb.keys``); ``KeyFileError`` naming the file that is wrong."""
        keydir = Path(keydir)
        public, secret = keys.load_pair(keydir / keys.SERVER_SECRET)
        found = {role: _public_keys(keydir / folder) for role, folder in keys.ROLE_FOLDERS.items()}
        both = found[RW].keys() & found[RO].keys()
        if both:
            key = next(iter(both))
            raise keys.KeyFileError(
                f"the same key is read-write ({found[RW][key]}) and read-only ({found[RO][key]}); keep one"
            )
        clients = {key: RW for key in found[RW]} | {key: RO for key in found[RO]}
        return cls(public, secret, clients, frozenset(found["replica"]))

    def role(self, user_id: str | None) -> str | None:
        """The role of a client connection's ``User-Id``, or None if its key is not allowed (any more)."""
        return self.clients.get(user_id)

    def counts(self) -> str:
        """``"2 read-write, 1 read-only, 1 replica key(s)"``."""
        rw = sum(role == RW for role in self.clients.values())
        return f"{rw} read-write, {len(self.clients) - rw} read-only, {len(self.replicas)} replica key(s)"


def _public_keys(folder: Path) -> dict[str, Path]:
    """The public keys of the ``*.key`` files in ``folder`` (none if it does not exist), by key."""
    if not folder.is_dir():
        return {}
    return {keys.load_public(path).decode(): path for path in sorted(folder.glob("*.key"))}


def secure(sock: zmq.Socket, ring: KeyRing, domain: str) -> None:
    """Make ``sock`` (before it binds) a CURVE server that only ZAP-approved keys of ``domain`` reach."""
    sock.curve_server = True
    sock.curve_secretkey = ring.server_secret
    sock.zap_domain = domain.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # without it, no ZAP answer means anyone gets in


class ZapHandler:
    """A thread answering libzmq's ZAP requests from the current :class:`KeyRing`."""

    def __init__(self, context: zmq.Context, keydir: str | Path) -> None:
        self.keydir = Path(keydir)
        self.ring = KeyRing.load(self.keydir)
        self._sock = context.socket(zmq.REP)
        self._sock.linger = 0
        self._sock.bind(ZAP_URI)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pyzdb-zap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                if self._sock.poll(_POLL_MS):
                    self._sock.send_multipart(self.answer(self._sock.recv_multipart()))
        except zmq.ContextTerminated:
            pass
        finally:
            self._sock.close(linger=0)

    def answer(self, msg: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request: 200 with the User-Id for an allowed key, else 400."""
        request_id = msg[1] if len(msg) > 1 else b""
        try:
            status, text, user_id = self._decide(msg)
        except Exception:  # a bug here must refuse the connection, never stop the thread
            log.exception("ZAP request not understood")
            status, text, user_id = b"500", b"internal error", b""
        if status != b"200":
            log.info("CURVE connection refused (%s): %s", text.decode(), _peer(msg))
        return [b"1.0", request_id, status, text, user_id, b""]

    def _decide(self, msg: list[bytes]) -> tuple[bytes, bytes, bytes]:
        if len(msg) != 7 or msg[0] != b"1.0" or msg[5] != b"CURVE" or len(msg[6]) != 32:
            return b"400", b"not a CURVE request", b""
        domain, key = msg[2].decode("utf8", "replace"), z85.encode(msg[6]).decode()
        ring = self.ring  # one read: a reload may swap it meanwhile
        if domain == CLIENT_DOMAIN and ring.role(key) is not None:
            return b"200", b"OK", key.encode()
        if domain == REPLICA_DOMAIN and key in ring.replicas:
            return b"200", b"OK", f"replica:{key}".encode()
        return b"400", b"key not allowed here", b""

    def reload(self) -> int | None:
        """Read the key folder again (SIGHUP); return how many keys went, None if it could not be read.

        On any error the current keys stay, and the log says why.
        """
        try:
            ring = KeyRing.load(self.keydir)
        except (OSError, ValueError) as exc:
            log.error("SIGHUP: keys not reloaded, keeping the previous ones: %s", exc)
            return None
        if ring.server_secret != self.ring.server_secret:
            log.warning("SIGHUP: the server key changed; restart the server to use it (keeping the old one)")
            ring = KeyRing(self.ring.server_public, self.ring.server_secret, ring.clients, ring.replicas)
        removed = (self.ring.clients.keys() - ring.clients.keys()) | (self.ring.replicas - ring.replicas)
        self.ring = ring
        log.warning(
            "SIGHUP: keys reloaded from %s: %s (%d removed)", self.keydir, ring.counts(), len(removed)
        )
        return len(removed)

    def stop(self) -> None:
        """Stop answering (before the context is terminated)."""
        self._stopping.set()
        self._thread.join(timeout=5)


def _peer(msg: list[bytes]) -> str:
    address = msg[3].decode("utf8", "replace") if len(msg) > 3 else "?"
    key = z85.encode(msg[6]).decode() if len(msg) == 7 and len(msg[6]) == 32 else "no key"
    domain = msg[2].decode("utf8", "replace") if len(msg) > 2 else "?"
    return f"address {address}, domain {domain!r}, key {key}"
