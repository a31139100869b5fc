"""The tunnel's frames (gitopsd/tunnel_frames.py): round trips, and what is never relayed."""

from __future__ import annotations

import pytest

from gitopsd.tunnel_frames import (
    MAX_FRAME_BYTES,
    MAX_HEADERS,
    FrameError,
    Request,
    Response,
    decode,
    encode,
    relayed_headers,
)


def test_a_request_and_an_answer_round_trip_with_their_bodies() -> None:
    request = Request(t="req", id=7, method="PUT", path="/modules/ab?x=1", headers={"A": "b"})
    frame = decode(encode(request, b"\x00wasm"))
    assert frame.header == request and frame.body == b"\x00wasm"
    answer = Response(t="res", id=7, status=304, headers={"ETag": '"g12"'})
    assert decode(encode(answer)).header == answer


def test_a_frame_over_the_cap_is_not_encoded() -> None:
    request = Request(t="req", id=1, method="PUT", path="/modules/x", headers={})
    with pytest.raises(FrameError, match="exceeds the cap"):
        encode(request, b"\x00" * MAX_FRAME_BYTES)


def test_hop_by_hop_and_encoding_headers_are_never_relayed() -> None:
    got = relayed_headers(
        {
            "Connection": "close",
            "Transfer-Encoding": "chunked",
            "Content-Length": "3",
            "Host": "evil",
            "Content-Encoding": "gzip",
            "ETag": '"g1"',
            "Authorization": "Bearer t",
        }
    )
    assert got == {"ETag": '"g1"', "Authorization": "Bearer t"}
    many = relayed_headers({f"X-{i}": "v" for i in range(MAX_HEADERS + 10)})
    assert len(many) == MAX_HEADERS
