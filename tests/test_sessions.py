"""The write-dedup table: the window, its bounds, its snapshot form (no I/O)."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from pyzdb import errors, protocol
from pyzdb.protocol import Request
from pyzdb.server.sessions import ENTRY_OVERHEAD, KEEP_REPLY_BYTES, Sessions


def write(client: str, seq: int) -> Request:
    """A write request of ``client`` numbered ``seq``."""
    return Request("set", ("x",), None, (seq,), {}, seq, client, seq)


def reply_for(client: str, seq: int, size: int = 0) -> bytes:
    """A distinct reply for the write, padded to at least ``size`` bytes."""
    return protocol.ok_reply(seq, f"{client}:{seq}".ljust(size, "."))


def error_type(reply: bytes) -> type | None:
    """The error class a reply carries, or None for a success."""
    try:
        protocol.decode_reply(reply)
    except errors.PyzdbError as exc:
        return type(exc)
    return None


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# a client's writes: increasing seqs with gaps (its reads use seqs too), then resends of any seq
steps = st.lists(
    st.tuples(st.sampled_from("abc"), st.booleans(), st.integers(1, 5), st.integers(1, 120)),
    max_size=300,
)


@given(steps)
@settings(max_examples=150, deadline=None)
def test_the_table_matches_a_model_of_the_last_window_writes(actions) -> None:
    """New seqs are run; remembered ones replayed byte for byte; anything else below the newest refused."""
    window = 8
    table = Sessions(window=window)
    newest: dict[str, int] = {}
    kept: dict[str, dict[int, bytes]] = {}
    for client, is_new, gap, old in actions:
        if is_new:
            seq = newest.get(client, 0) + gap
            request = write(client, seq)
            assert table.replay(request) is None
            reply = reply_for(client, seq)
            table.remember(request, reply)
            newest[client] = seq
            remembered = kept.setdefault(client, {})
            remembered[seq] = reply
            for stale in sorted(remembered)[:-window]:
                del remembered[stale]
        else:
            seq = max(1, newest.get(client, 0) - old % 20)
            answer = table.replay(write(client, seq))
            if client not in newest:
                assert answer is None
            elif seq in kept[client]:
                assert answer == kept[client][seq]
            else:
                assert error_type(answer) is errors.ProtocolError


def test_a_large_reply_is_kept_as_its_size_and_a_resend_says_it_was_applied() -> None:
    """Replies over KEEP_REPLY_BYTES cost only ENTRY_OVERHEAD; their resend gets AlreadyAppliedError."""
    table = Sessions()
    table.remember(write("a", 1), reply_for("a", 1, KEEP_REPLY_BYTES * 10))
    assert table.bytes == ENTRY_OVERHEAD
    assert error_type(table.replay(write("a", 1))) is errors.AlreadyAppliedError


def test_the_byte_bound_forgets_the_least_recently_active_clients() -> None:
    """Past ``max_bytes`` whole clients go, oldest first; the newest stays."""
    table = Sessions(max_bytes=10 * (ENTRY_OVERHEAD + 200))
    for i in range(30):
        table.remember(write(f"c{i}", 1), reply_for(f"c{i}", 1, 200))
    assert table.bytes <= table.max_bytes
    assert table.replay(write("c29", 1)) is not None
    assert table.replay(write("c0", 1)) is None
    assert len(table) < 30


def test_idle_clients_expire() -> None:
    """A client silent for ``idle_seconds`` is forgotten; an active one is kept."""
    clock = Clock()
    table = Sessions(idle_seconds=60, clock=clock)
    table.remember(write("old", 1), reply_for("old", 1))
    clock.now += 50
    table.remember(write("new", 1), reply_for("new", 1))
    clock.now += 20
    assert table.expire() == 1
    assert table.replay(write("old", 1)) is None
    assert table.replay(write("new", 1)) == reply_for("new", 1)
    assert table.bytes == ENTRY_OVERHEAD + len(reply_for("new", 1))


def test_a_pickled_table_keeps_its_window_and_byte_count() -> None:
    """The snapshot form round-trips every remembered reply and the byte count."""
    table = Sessions()
    for seq in range(1, 80):
        table.remember(write("a", seq), reply_for("a", seq))
    loaded = pickle.loads(pickle.dumps(table))
    assert loaded.bytes == table.bytes
    assert loaded.replay(write("a", 79)) == reply_for("a", 79)
    assert loaded.replay(write("a", 16)) == reply_for("a", 16)
    assert error_type(loaded.replay(write("a", 15))) is errors.ProtocolError


def test_a_snapshot_of_the_one_reply_table_still_loads() -> None:
    """Stores saved before the window kept each client's newest (seq, reply): they load as a window of one."""
    table = Sessions.__new__(Sessions)
    table.__setstate__({"limit": 100_000, "last": {"a": (7, reply_for("a", 7))}})
    assert table.replay(write("a", 7)) == reply_for("a", 7)
    assert table.replay(write("a", 8)) is None
