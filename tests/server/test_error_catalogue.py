"""The error catalogue and the two wire shapes of an error."""

from __future__ import annotations

import msgpack
import pytest
from opgraph_server.errors import (
    BAD_REQUEST,
    CATALOGUE,
    SERVER_FAILURE,
    RpcError,
    error_from_wire,
    render_error,
)

STANDARD = {
    "parse_error": -32700, "invalid_request": -32600, "method_not_found": -32601,
    "invalid_params": -32602, "internal_error": -32603, "not_initialized": -32002,
    "request_cancelled": -32800, "content_modified": -32801,
}
OPGRAPH = ["unknown_graph", "unknown_node", "unknown_op", "op_failed", "limit_exceeded",
           "unauthorized", "graph_exists", "not_a_leaf", "bad_file", "bad_expression"]


def test_standard_codes_are_lsp_codes() -> None:
    for name, code in STANDARD.items():
        assert CATALOGUE[name].code == code


def test_opgraph_codes_live_in_their_range() -> None:
    for name in OPGRAPH:
        assert -32099 <= CATALOGUE[name].code <= -32010, name
    assert set(CATALOGUE) == set(STANDARD) | set(OPGRAPH)


def test_names_and_codes_are_unique_and_kinds_valid() -> None:
    codes = [spec.code for spec in CATALOGUE.values()]
    assert len(set(codes)) == len(codes)
    assert all(name == spec.name for name, spec in CATALOGUE.items())
    assert all(spec.kind in (SERVER_FAILURE, BAD_REQUEST) for spec in CATALOGUE.values())
    assert all(spec.summary for spec in CATALOGUE.values())
    assert CATALOGUE["internal_error"].kind == SERVER_FAILURE
    assert CATALOGUE["invalid_params"].kind == BAD_REQUEST


def test_rpc_error_fields() -> None:
    err = RpcError("unknown_op", "no op named 'sofplus'; did you mean 'softplus'?", {"op": "x"})
    assert (err.name, err.code, err.kind, err.data) == ("unknown_op", -32012, 1, {"op": "x"})
    assert str(err) == "unknown_op: no op named 'sofplus'; did you mean 'softplus'?"
    assert isinstance(err, Exception)
    assert "unknown_op" in repr(err)


def test_unknown_error_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown error name"):
        RpcError("no_such_error", "x")


def test_default_shape_is_what_neovim_shows() -> None:
    assert render_error(RpcError("unknown_graph", "no graph named 'g'")) == [
        1, "unknown_graph: no graph named 'g'"]
    assert render_error(RpcError("internal_error", "boom")) == [0, "internal_error: boom"]
    assert RpcError("internal_error", "boom").to_wire() == [0, "internal_error: boom"]


def test_structured_shape() -> None:
    err = RpcError("limit_exceeded", "too big", {"limit": "nodes", "max": 10})
    assert render_error(err, structured=True) == {
        "code": -32014, "name": "limit_exceeded", "message": "too big",
        "data": {"limit": "nodes", "max": 10}}
    assert render_error(RpcError("bad_file", "x"), True)["data"] is None
    assert err.to_wire(structured=True) == render_error(err, structured=True)


@pytest.mark.parametrize("structured", [False, True])
def test_error_from_wire_round_trips(structured: bool) -> None:
    err = RpcError("not_a_leaf", "node 3 is computed by 'add'", {"id": 3} if structured else None)
    wire = msgpack.unpackb(msgpack.packb(render_error(err, structured)))
    back = error_from_wire(wire)
    assert (back.name, back.code, back.message, back.data) == (
        err.name, err.code, err.message, err.data)


def test_error_from_wire_foreign_errors() -> None:
    assert error_from_wire({"code": -32601, "message": "nope"}).name == "method_not_found"
    for obj in ["plain text", [0, "weird: thing"], [-32601, "x"], 17, {"message": "m"}]:
        back = error_from_wire(obj)
        assert back.name == "internal_error"
        assert back.data == obj
    assert error_from_wire("plain text").message == "plain text"
    assert error_from_wire([0, "weird: thing"]).message == "weird: thing"
