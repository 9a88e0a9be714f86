"""The MessagePack-RPC protocol layer, without sockets: bytes in, events out, and back."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opgraph_server.errors import RpcError
from opgraph_server.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_MSGID,
    NEED_DATA,
    ConnectionClosed,
    LocalProtocolError,
    Notification,
    Rejected,
    RemoteProtocolError,
    Request,
    Response,
    RpcProtocol,
    split_params,
)

REQ = Request(7, "node.get", ["g", [1, 2]])
NOTE = Notification("graph.changed", [{"graph": "g", "version": 3}])
RESP = Response(7, None, {"data": 1.5, "label": "x", "blob": b"\x00\xff"})
MESSAGES = [REQ, NOTE, RESP, Request(0, "", []), Response(MAX_MSGID, [1, "unknown_op: x"], None)]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def wire(*events: Request | Response | Notification) -> bytes:
    sender = RpcProtocol()
    return b"".join(sender.send(e) for e in events)


def drain(proto: RpcProtocol) -> list[Any]:
    return list(proto.events())


def receive(data: bytes, **kwargs: Any) -> list[Any]:
    proto = RpcProtocol(**kwargs)
    proto.receive_data(data)
    return drain(proto)


def remote_error(data: bytes, **kwargs: Any) -> RemoteProtocolError:
    proto = RpcProtocol(**kwargs)
    proto.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        drain(proto)
    return info.value


# -- round trips and framing ----------------------------------------------------------------------

def test_send_round_trips_every_event_kind() -> None:
    assert receive(wire(*MESSAGES)) == MESSAGES


def test_send_produces_the_msgpack_rpc_shapes() -> None:
    proto = RpcProtocol()
    assert msgpack.unpackb(proto.send(REQ)) == [0, 7, "node.get", ["g", [1, 2]]]
    assert msgpack.unpackb(proto.send(NOTE)) == [2, "graph.changed", [{"graph": "g", "version": 3}]]
    assert msgpack.unpackb(proto.send(Response(1, None, None))) == [1, 1, None, None]


def test_several_messages_in_one_chunk() -> None:
    data = wire(*MESSAGES) * 3
    assert receive(data) == MESSAGES * 3


@pytest.mark.parametrize("split", range(len(wire(*MESSAGES)) + 1))
def test_split_at_every_byte_boundary(split: int) -> None:
    data = wire(*MESSAGES)
    proto = RpcProtocol()
    events = []
    for chunk in (data[:split], data[split:]):
        if chunk:  # b"" would mean EOF
            proto.receive_data(chunk)
            events += drain(proto)
    assert events == MESSAGES
    assert proto.pending_bytes == 0


def test_one_byte_at_a_time() -> None:
    data = wire(*MESSAGES)
    proto = RpcProtocol()
    events = []
    for i in range(len(data)):
        proto.receive_data(data[i:i + 1])
        events += drain(proto)
    assert events == MESSAGES
    assert proto.pending_bytes == 0


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(
    allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
msgids = st.integers(0, MAX_MSGID)
methods = st.text(max_size=30)
events_st = st.one_of(
    st.builds(Request, msgids, methods, st.lists(values, max_size=4)),
    st.builds(Response, msgids, st.none(), values),
    st.builds(Response, msgids, values.filter(lambda v: v is not None), st.none()),
    st.builds(Notification, methods, st.lists(values, max_size=4)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(events_st, min_size=1, max_size=6), st.data())
def test_random_events_survive_random_splits(events: list[Any], data: st.DataObject) -> None:
    stream = wire(*events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    proto = RpcProtocol()
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if a == b:
            continue  # b"" would mean EOF
        proto.receive_data(stream[a:b])
        got += drain(proto)
    proto.receive_data(b"")
    got += drain(proto)
    assert got == [*events, ConnectionClosed()]


def test_need_data_until_a_message_is_complete() -> None:
    proto = RpcProtocol()
    assert proto.next_event() is NEED_DATA
    data = wire(REQ)
    proto.receive_data(data[:-1])
    assert proto.next_event() is NEED_DATA
    assert proto.pending_bytes == len(data) - 1
    proto.receive_data(data[-1:])
    assert proto.next_event() == REQ
    assert proto.next_event() is NEED_DATA
    assert proto.pending_bytes == 0


# -- method names, msgids ------------------------------------------------------------------------

def test_method_name_as_bin_is_decoded() -> None:
    # pynvim sends method names as bin; its first message is nvim_set_client_info.
    data = pack([2, b"nvim_set_client_info", ["python-client", {}, "remote", {}, {}]])
    data += pack([0, 1, b"node.get", ["g", [1]]])
    assert receive(data) == [
        Notification("nvim_set_client_info", ["python-client", {}, "remote", {}, {}]),
        Request(1, "node.get", ["g", [1]]),
    ]


def test_bin_method_that_is_not_utf8() -> None:
    err = remote_error(pack([0, 5, b"\xff\xfe", []]))
    assert err.error.name == "invalid_request"
    assert err.msgid == 5


@pytest.mark.parametrize("msgid", [0, 1, 2**31, MAX_MSGID])
def test_valid_msgids(msgid: int) -> None:
    assert receive(pack([0, msgid, "m", []])) == [Request(msgid, "m", [])]
    assert receive(pack([1, msgid, None, 1])) == [Response(msgid, None, 1)]


@pytest.mark.parametrize("msgid", [-1, 2**32, 2**64 - 1, 1.0, True, "1", None, [1]])
def test_invalid_msgids(msgid: Any) -> None:
    for tag in (0, 1):
        err = remote_error(pack([tag, msgid, "m", []]))
        assert err.error.name == "invalid_request"
        assert err.msgid is None
        assert "msgid" in err.error.message


# -- malformed messages ---------------------------------------------------------------------------

@pytest.mark.parametrize(("obj", "msgid", "words"), [
    (42, None, "non-empty array"),
    ("request", None, "non-empty array"),
    ({"type": 0}, None, "non-empty array"),
    ([], None, "non-empty array"),
    ([3, 1, "m", []], None, "unknown message type"),
    ([-1, 1, "m", []], None, "unknown message type"),
    ([True, 1, "m", []], None, "unknown message type"),
    (["0", 1, "m", []], None, "unknown message type"),
    ([0], None, "request must be"),
    ([0, 1, "m"], 1, "request must be"),
    ([0, 1, "m", [], None], 1, "request must be"),
    ([1, 1, None], None, "response must be"),
    ([1, 1, None, None, None], None, "response must be"),
    ([2, "m"], None, "notification must be"),
    ([2, "m", [], 1], None, "notification must be"),
    ([0, 1, "m", {"a": 1}], 1, "params must be an array"),
    ([0, 1, "m", "x"], 1, "params must be an array"),
    ([0, 1, "m", None], 1, "params must be an array"),
    ([2, "m", 1], None, "params must be an array"),
    ([0, 1, 17, []], 1, "method must be a string"),
    ([0, 1, None, []], 1, "method must be a string"),
    ([2, ["m"], []], None, "method must be a string"),
])
def test_malformed_shapes(obj: Any, msgid: int | None, words: str) -> None:
    err = remote_error(pack(obj))
    assert err.error.name == "invalid_request"
    assert err.error.code == -32600
    assert err.msgid == msgid
    assert words in err.error.message


@pytest.mark.parametrize("data", [
    b"\xc1",  # never used in MessagePack
    b"\x93\x00\x01\xc1",
    pack([0, 1, "m", []])[:-1] + b"\xc1",
])
def test_bytes_that_are_not_msgpack(data: bytes) -> None:
    err = remote_error(data)
    assert err.error.name == "parse_error"
    assert err.error.code == -32700
    assert err.msgid is None


def test_invalid_utf8_in_a_string_is_a_parse_error() -> None:
    data = pack([0, 1, "m", []])[:-1] + b"\x91\xa2\xff\xfe"  # params: ["\xff\xfe"]
    assert remote_error(data).error.name == "parse_error"


def test_map_keys_must_be_strings() -> None:
    assert remote_error(pack([0, 1, "m", [{1: 2}]])).error.name == "parse_error"
    # bin keys are allowed (they come as bytes)
    assert receive(pack([0, 1, "m", [{b"k": 2}]])) == [Request(1, "m", [{b"k": 2}])]


def test_ext_types_pass_through() -> None:
    data = pack([0, 1, "m", [msgpack.ExtType(1, b"\x01")]])
    assert receive(data) == [Request(1, "m", [msgpack.ExtType(1, b"\x01")])]


def test_five_thousand_levels_of_nesting() -> None:
    data = b"\x94\x00\x01\xa1m" + b"\x91" * 5000 + b"\xc0"
    err = remote_error(data)
    assert err.error.name == "parse_error"
    assert "1024" in err.error.message


def _peak_after(data: bytes, proto: RpcProtocol) -> int:
    tracemalloc.start()
    try:
        proto.receive_data(data)
        assert proto.next_event() is NEED_DATA
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("header", [
    b"\xdd" + struct.pack(">I", 2**31),  # array of 2**31 items
    b"\xdf" + struct.pack(">I", 2**31),  # map of 2**31 pairs
    b"\xdb" + struct.pack(">I", 2**32 - 1),  # str of 4 GiB
    b"\xc6" + struct.pack(">I", 2**32 - 1),  # bin of 4 GiB
    (b"\xdd" + struct.pack(">I", 60_000_000)) * 1000,  # nested claims
])
def test_huge_headers_allocate_nothing(header: bytes) -> None:
    proto = RpcProtocol()
    assert _peak_after(header + b"\x00" * 100, proto) < 256 * 1024
    assert proto.pending_bytes == len(header) + 100


@pytest.mark.parametrize("header", [
    b"\xdd" + struct.pack(">I", 2**31),
    b"\xdb" + struct.pack(">I", 2**32 - 1),
])
def test_huge_headers_fail_at_the_size_limit(header: bytes) -> None:
    proto = RpcProtocol(max_message_size=1000)
    proto.receive_data(header + b"\x00" * (999 - len(header)))
    assert proto.next_event() is NEED_DATA
    proto.receive_data(b"\x00")
    assert proto.next_event() is NEED_DATA  # exactly at the limit: may still complete
    proto.receive_data(b"\x00")
    with pytest.raises(RemoteProtocolError) as info:
        proto.next_event()
    assert info.value.error.name == "limit_exceeded"
    assert info.value.error.data == {"limit": "max_message_size", "max": 1000}


def test_a_4gib_string_stops_at_the_default_limit() -> None:
    proto = RpcProtocol()
    proto.receive_data(b"\xdb" + struct.pack(">I", 2**32 - 1))
    chunk = b"x" * (1 << 20)
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(DEFAULT_MAX_MESSAGE_SIZE // len(chunk) + 1):
            proto.receive_data(chunk)
            assert proto.next_event() is NEED_DATA
    assert info.value.error.name == "limit_exceeded"


def test_message_over_the_size_limit() -> None:
    data = pack([0, 9, "m", ["x" * 200]])
    err = remote_error(data, max_message_size=len(data) - 1)
    assert err.error.name == "limit_exceeded"
    assert err.msgid is None


def test_message_exactly_at_the_limit_then_more_in_the_same_chunk() -> None:
    big = pack([0, 1, "m", ["x" * 200]])
    small = pack([2, "n", []])
    proto = RpcProtocol(max_message_size=len(big))
    proto.receive_data(big[:10])
    assert drain(proto) == []
    proto.receive_data(big[10:] + small + big)  # more than the limit in one chunk is fine
    assert drain(proto) == [Request(1, "m", ["x" * 200]), Notification("n", []),
                            Request(1, "m", ["x" * 200])]


# -- depth limit -----------------------------------------------------------------------------------

def nested(levels: int) -> list[Any]:
    """Params nesting ``levels`` containers deep, the params array included."""
    obj: Any = 1
    for i in range(levels - 1):
        obj = [obj] if i % 2 else {"k": obj}
    return [obj]


def test_params_at_the_depth_limit_pass() -> None:
    params = nested(32)
    assert receive(pack([0, 1, "m", params])) == [Request(1, "m", params)]
    assert receive(pack([0, 1, "m", nested(5)]), max_depth=5)[0] == Request(1, "m", nested(5))


def test_params_over_the_depth_limit_are_rejected_not_fatal() -> None:
    proto = RpcProtocol(max_depth=5)
    proto.receive_data(pack([0, 4, "m", nested(6)]) + pack([2, "n", nested(6)])
                       + pack([0, 5, "ok", []]))
    first, second, third = drain(proto)
    assert isinstance(first, Rejected) and first.msgid == 4 and first.method == "m"
    assert first.error.name == "limit_exceeded"
    assert first.error.data == {"limit": "max_depth", "max": 5}
    assert first.response() == Response(4, [1, "limit_exceeded: m: params nested deeper "
                                            "than 5 levels"], None)
    assert isinstance(second, Rejected) and second.msgid is None and second.response() is None
    assert third == Request(5, "ok", [])


def test_depth_is_judged_by_structure_not_by_container_like_bytes() -> None:
    """Bytes that look like array and map headers inside strings, numbers and bin (the quick
    count before the real check) neither reject a shallow message nor hide a deep one."""
    lookalikes = "\u0080\u0090\u009f" * 50  # UTF-8 bytes 0xc2 0x80.., each a fixmap/fixarray
    shallow = [lookalikes, bytes(range(0x80, 0xA0)) * 4, [0xDC, 0xDD, 0xDE, 0xDF, -100]]
    assert receive(pack([0, 1, "m", shallow]), max_depth=3) == [Request(1, "m", shallow)]
    deep = nested(4)
    deep.append(lookalikes)
    (event,) = receive(pack([0, 2, "m", deep]), max_depth=3)
    assert isinstance(event, Rejected) and event.msgid == 2
    # Deep nesting made only of arrays and maps past 15 items (array 16 and map 16 headers,
    # 0xdc and 0xde), with no look-alike bytes anywhere: still found.
    wide: Any = 0
    for level in range(40):
        wide = [wide] + [1] * 15 if level % 2 else {f"k{i}": (wide if i == 0 else 1)
                                                    for i in range(16)}
    raw = pack([0, 3, "m", [wide]])
    assert sum(0x80 <= b < 0xA0 for b in raw) == 2  # the message and params arrays only
    (event,) = receive(raw, max_depth=32)
    assert isinstance(event, Rejected) and event.msgid == 3


def test_depth_limit_can_be_disabled() -> None:
    params = nested(500)
    assert receive(pack([0, 1, "m", params]), max_depth=None) == [Request(1, "m", params)]


def test_responses_are_not_depth_checked() -> None:
    result = nested(100)
    assert receive(pack([1, 1, None, result])) == [Response(1, None, result)]


# -- EOF and dead connections ----------------------------------------------------------------------

def test_clean_eof() -> None:
    proto = RpcProtocol()
    proto.receive_data(wire(REQ))
    proto.receive_data(b"")
    assert proto.next_event() == REQ
    assert proto.next_event() == ConnectionClosed()
    assert proto.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError):
        proto.receive_data(b"more")
    assert drain(proto) == [ConnectionClosed()]


def test_eof_in_the_middle_of_a_message() -> None:
    proto = RpcProtocol()
    proto.receive_data(wire(REQ)[:-2])
    assert proto.next_event() is NEED_DATA
    proto.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        proto.next_event()
    assert info.value.error.name == "parse_error"
    assert "middle of a message" in info.value.error.message


def test_dead_after_a_remote_error_but_send_still_works() -> None:
    proto = RpcProtocol()
    proto.receive_data(wire(REQ) + pack([0, 3, "m", 1]) + wire(REQ))
    assert proto.next_event() == REQ
    with pytest.raises(RemoteProtocolError) as info:
        proto.next_event()
    with pytest.raises(LocalProtocolError):
        proto.next_event()
    with pytest.raises(LocalProtocolError):
        proto.receive_data(wire(REQ))
    assert proto.pending_bytes == 0
    reply = info.value.response()
    assert reply == Response(3, [1, "invalid_request: params must be an array, got 1"], None)
    assert receive(proto.send(reply)) == [reply]
    structured = info.value.response(structured=True)
    assert structured is not None and structured.error["code"] == -32600


def test_remote_error_without_msgid_has_no_response() -> None:
    assert remote_error(b"\xc1").response() is None


# -- send ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("event", [
    Request(-1, "m", []),
    Request(2**32, "m", []),
    Request(True, "m", []),
    Request(1, b"m", []),  # type: ignore[arg-type]
    Request(1, "m", {"a": 1}),  # type: ignore[arg-type]
    Notification("m", "x"),  # type: ignore[arg-type]
    Notification(None, []),  # type: ignore[arg-type]
    Response(1, [1, "x"], 2),
    Response(1, RpcError("internal_error", "boom"), None),
    Response(1.0, None, 1),  # type: ignore[arg-type]
    Response(1, None, {1, 2}),  # not encodable
    Response(1, None, 2**70),  # not encodable
    ConnectionClosed(),
    Rejected(1, "m", RpcError("limit_exceeded", "x")),
])
def test_send_refuses_invalid_events(event: Any) -> None:
    proto = RpcProtocol()
    with pytest.raises(LocalProtocolError):
        proto.send(event)
    assert receive(proto.send(REQ)) == [REQ]  # the packer is still clean


def test_send_accepts_tuples_as_params() -> None:
    data = RpcProtocol().send(Request(1, "m", ("a", 1)))  # type: ignore[arg-type]
    assert receive(data) == [Request(1, "m", ["a", 1])]


def test_constructor_checks_limits() -> None:
    with pytest.raises(ValueError):
        RpcProtocol(max_message_size=0)
    with pytest.raises(ValueError):
        RpcProtocol(max_depth=0)


# -- split_params ---------------------------------------------------------------------------------

def invalid_params(*args: Any, **kwargs: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        split_params(*args, **kwargs)
    assert info.value.name == "invalid_params"
    return info.value


def test_split_params_positional_and_options() -> None:
    assert split_params("node.get", ["g", [1]], ["graph", "ids"]) == (["g", [1]], {})
    assert split_params("node.leaf", ["g", 2.0, {"label": "x"}], ["graph", "data"],
                        options=["label"]) == (["g", 2.0], {"label": "x"})
    assert split_params("graph.eval", ["g", "x+1"], ["graph", "expression"], ["bindings"]) == (
        ["g", "x+1", None], {})
    assert split_params("graph.eval", ["g", "x", {"x": 1}, {"label": "y"}],
                        ["graph", "expression"], ["bindings"]) == (
        ["g", "x", {"x": 1}], {"label": "y"})


def test_split_params_a_map_in_a_positional_slot_is_an_argument() -> None:
    assert split_params("graph.import", ["g", {"nodes": []}], ["graph", "data"]) == (
        ["g", {"nodes": []}], {})


@pytest.mark.parametrize("empty", [None, []])
def test_split_params_nil_or_empty_array_means_no_options(empty: Any) -> None:
    assert split_params("graph.list", [empty], []) == ([], {})


def test_split_params_bin_option_names_are_decoded() -> None:
    assert split_params("m", [{b"label": 1}], []) == ([], {"label": 1})


def test_split_params_errors_name_the_method_and_argument() -> None:
    err = invalid_params("node.get", ["g"], ["graph", "ids"])
    assert err.message == ("node.get: missing argument 'ids'; "
                           "expected node.get(graph, ids, [options])")
    assert err.data == {"method": "node.get", "argument": "ids"}
    err = invalid_params("node.get", ["g", [1], {}, {}], ["graph", "ids"])
    assert "too many arguments (4)" in err.message
    err = invalid_params("node.set", ["g", 1, 2, {}], ["graph", "id", "data"], options=False)
    assert err.message == ("node.set: too many arguments (4); expected node.set(graph, id, data)")
    err = invalid_params("node.get", ["g", [1], 5], ["graph", "ids"])
    assert err.message == "node.get: options must be a map, got 5"
    err = invalid_params("node.leaf", ["g", 1, {"lable": "x"}], ["graph", "data"],
                         options=["label", "source"])
    assert err.message == "node.leaf: unknown option 'lable'; did you mean 'label'?"
    assert err.data == {"method": "node.leaf", "argument": "lable"}
    err = invalid_params("node.leaf", ["g", 1, {"zzz": 1}], ["graph", "data"], options=["label"])
    assert err.message == "node.leaf: unknown option 'zzz'; known: label"
    err = invalid_params("m", [{b"\xff": 1}], [])
    assert "option names must be strings" in err.message
