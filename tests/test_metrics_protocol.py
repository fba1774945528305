"""The metrics text protocol without I/O: parsing requests, cutting streams, formatting replies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyzdb.metrics import protocol
from pyzdb.metrics.protocol import Get, Put, RequestDecoder, Wrong, format_points, parse_reply, parse_request


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"put serv.cpu 42.3 1150864247", Put("serv.cpu", 42.3, 1150864247)),
        (b"put serv.cpu 1024 1150864250", Put("serv.cpu", 1024.0, 1150864250)),
        (b"put a -0.5 -3", Put("a", -0.5, -3)),
        (b"put a 1e+20 0", Put("a", 1e20, 0)),
        (b"put a .5 7\r", Put("a", 0.5, 7)),
        ("put ядро.cpu 1 2".encode(), Put("ядро.cpu", 1.0, 2)),
        (b"get serv.cpu", Get("serv.cpu")),
        (b"get *", Get(None)),
        (b"get *\r", Get(None)),
    ],
)
def test_valid_requests(line, expected):
    assert parse_request(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"got serv.cpu",
        b"PUT serv.cpu 1 2",
        b"put serv.cpu 1",
        b"put serv.cpu",
        b"put serv.cpu 1 2 3",
        b"put serv.cpu abc 2",
        b"put serv.cpu 1 2.5",
        b"put serv.cpu 1 abc",
        b"put serv.cpu nan 2",
        b"put serv.cpu inf 2",
        b"put serv.cpu 1e999 2",
        b"put serv.cpu 1_0 2",
        b"put serv.cpu 1 1_0",
        b"put serv.cpu  1 2",
        b"put serv.cpu 1 2 ",
        b"put * 1 2",
        b"put a*b 1 2",
        b"put a\tb 1 2",
        b"put \xff 1 2",
        b"put " + b"k" * 256 + b" 1 2",
        b"get",
        b"get a b",
        b"get a*",
        b" get a",
    ],
)
def test_malformed_requests_are_wrong_commands(line):
    assert isinstance(parse_request(line), Wrong)


def test_decoder_joins_split_packets_and_splits_coalesced_ones():
    decoder = RequestDecoder()
    assert decoder.feed(b"put a 1") == []
    assert decoder.feed(b" 2\nget") == [Put("a", 1.0, 2)]
    get_a, get_all, bad, put_b = decoder.feed(b" a\nget *\nbad\nput b 3 4\n")
    assert (get_a, get_all, put_b) == (Get("a"), Get(None), Put("b", 3.0, 4))
    assert isinstance(bad, Wrong)


def test_overlong_line_is_one_wrong_command_and_the_stream_goes_on():
    decoder = RequestDecoder()
    first = decoder.feed(b"put a " + b"1" * protocol.MAX_LINE_BYTES)
    for _ in range(20):
        assert decoder.feed(b"1" * 65536) == []
        assert decoder.buffered <= protocol.MAX_LINE_BYTES  # a line without end costs no memory
    second = decoder.feed(b"1" * protocol.MAX_LINE_BYTES + b" 2\nget a\n")
    assert first == []
    assert len(second) == 2 and isinstance(second[0], Wrong) and second[1] == Get("a")


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_any_chunking_gives_the_same_requests(cuts):
    stream = b"put a 1.5 10\nget a\nput b 2 20\r\nnonsense\nget *\n" * 3
    whole = RequestDecoder().feed(stream)
    decoder, pieces, start = RequestDecoder(), [], 0
    for cut in cuts:
        pieces += decoder.feed(stream[start : start + cut])
        start += cut
    pieces += decoder.feed(stream[start:])
    assert pieces == whole and len(whole) == 15


def test_points_reply_is_byte_for_byte():
    series = {"palm.cpu": {1150864248: 4.0, 1150864247: 42.3}, "eardrum.memory": {1150864250: 1024.0}}
    assert format_points(series) == (
        b"ok\npalm.cpu 42.3 1150864247\npalm.cpu 4.0 1150864248\neardrum.memory 1024.0 1150864250\n\n"
    )
    assert format_points({}) == b"ok\n\n"


def test_client_request_lines():
    assert protocol.format_put("palm.cpu", 1024, 1150864250) == b"put palm.cpu 1024.0 1150864250\n"
    assert protocol.format_get("*") == b"get *\n"
    with pytest.raises(protocol.ProtocolError):
        protocol.format_put("two words", 1.0, 1)
    with pytest.raises(protocol.ProtocolError):
        protocol.format_get("new\nline")


def test_parse_reply():
    assert parse_reply(b"ok\n\n") == {}
    assert parse_reply(b"ok\nb 2.0 20\na 1.0 10\nb 1.0 5\n\n") == {
        "b": [(5, 1.0), (20, 2.0)],
        "a": [(10, 1.0)],
    }
    with pytest.raises(protocol.ErrorReply, match="wrong command"):
        parse_reply(protocol.WRONG_COMMAND)
    with pytest.raises(protocol.ErrorReply, match="storage failed"):
        parse_reply(protocol.STORAGE_FAILED)


@pytest.mark.parametrize(
    "reply",
    [b"\n\n", b"yes\n\n", b"ok\ngarbage\n\n", b"ok\na x 1\n\n", b"ok\na 1 x\n\n", b"error\n\n", b"\xff\n\n"],
)
def test_malformed_replies(reply):
    with pytest.raises(protocol.ProtocolError):
        parse_reply(reply)


def test_split_reply_takes_one_complete_reply_at_a_time():
    buffer = bytearray(b"ok\n\nok\na 1.0 2\n\nerr")
    assert protocol.split_reply(buffer) == b"ok\n\n"
    assert protocol.split_reply(buffer) == b"ok\na 1.0 2\n\n"
    assert protocol.split_reply(buffer) is None and buffer == b"err"


keys = st.text(
    st.characters(max_codepoint=0x2FF, blacklist_categories=("C", "Z"), blacklist_characters="*"),
    min_size=1,
    max_size=protocol.MAX_KEY_CHARS,
)
values = st.floats(allow_nan=False, allow_infinity=False)


@given(st.dictionaries(keys, st.dictionaries(st.integers(), values, min_size=1), max_size=5))
def test_points_survive_format_and_parse(series):
    expected = {key: sorted(points.items()) for key, points in series.items()}
    assert parse_reply(format_points(series)) == expected
