"""The lock: one client's exclusive use of the read-write server, with a lease (no I/O).

Timeline::

    client A: lock() ──► token T, lease L seconds
    server:   stops reading the write queue; answers only the lock socket
    client A: requests with token T on the lock socket; each one renews the lease
    client B: its requests wait in the write queue (they are not refused)
    client A: unlock() ──► server reads the write queue again
    or A goes silent for L seconds ──► server logs it and releases the lock;
       A's next request with T gets LockError("... expired ...")
"""

from __future__ import annotations

import os
import time
from collections import deque

from pyzdb.errors import LockError


class Lock:
    """Who holds the lock, and until when."""

    def __init__(self, lease: float, clock=time.monotonic) -> None:
        self.lease = lease
        self._clock = clock
        self.token: str | None = None
        self.holder: str | None = None
        self._expires = 0.0
        self._expired: deque[str] = deque(maxlen=64)

    @property
    def held(self) -> bool:
        """True while some client holds the lock."""
        return self.token is not None

    def acquire(self, holder: str | None) -> str:
        """Grant the lock (only called while it is free) and return its token."""
        self.token = os.urandom(16).hex()
        self.holder = holder
        self.touch()
        return self.token

    def check(self, token: str | None) -> None:
        """Raise :class:`LockError` unless ``token`` is the current lock's."""
        if self.token is not None and token == self.token:
            return
        if token in self._expired:
            raise LockError("your lock expired: you were silent longer than the lease")
        raise LockError("you do not hold the lock")

    def touch(self) -> None:
        """Renew the lease (the holder just spoke)."""
        self._expires = self._clock() + self.lease

    def release(self) -> None:
        """Free the lock."""
        self.token = self.holder = None

    def seconds_left(self) -> float:
        """Seconds until the lease runs out (0 when it has)."""
        return max(0.0, self._expires - self._clock())

    def expire_if_silent(self) -> bool:
        """Release the lock if its lease ran out; True if it did."""
        if self.held and self.seconds_left() == 0.0:
            self._expired.append(self.token)
            self.release()
            return True
        return False
