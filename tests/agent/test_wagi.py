"""The WAGI ABI: environment in, CGI-style output out (pure)."""

from __future__ import annotations

import pytest

from gitopsd.agent.wagi import DEFAULT_CONTENT_TYPE, BadResponse, environment, parse_output


def test_environment_names() -> None:
    env = dict(
        environment(
            function="f",
            version="1.0.0",
            method="POST",
            path="/fn/f",
            query="a=1",
            body_length=3,
            headers=[("X-User-Id", "u1"), ("content-type", "text/plain")],
        )
    )
    assert env == {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/fn/f",
        "QUERY_STRING": "a=1",
        "CONTENT_LENGTH": "3",
        "X_GITOPSD_FUNCTION": "f",
        "X_GITOPSD_VERSION": "1.0.0",
        "HTTP_X_USER_ID": "u1",
        "HTTP_CONTENT_TYPE": "text/plain",
    }


def test_plain_output_is_the_body() -> None:
    response = parse_output(b"hello: world\n\nnot headers")
    assert (response.status, response.content_type) == (200, DEFAULT_CONTENT_TYPE)
    assert response.body == b"hello: world\n\nnot headers"


def test_cgi_header_block() -> None:
    response = parse_output(b"Content-Type: text/plain\r\nStatus: 404 Not Found\r\n\r\nnope")
    assert (response.status, response.content_type, response.body) == (404, "text/plain", b"nope")


def test_header_block_without_end_is_body() -> None:
    assert parse_output(b"status: 201").body == b"status: 201"


@pytest.mark.parametrize("status", [b"99 odd", b"600", b"abc", b"100 Continue", b"101"])
def test_a_status_that_is_not_a_final_http_status_is_an_error(status: bytes) -> None:
    # 1xx would tell the client to keep waiting, or (101) to switch protocols.
    with pytest.raises(BadResponse, match="invalid CGI status line"):
        parse_output(b"status: " + status + b"\n\nbody")


@pytest.mark.parametrize(
    ("status", "body"), [(204, b""), (304, b""), (205, b"kept"), (200, b"kept")]
)
def test_statuses_without_a_body_drop_what_follows_the_header_block(
    status: int, body: bytes
) -> None:
    response = parse_output(b"status: %d\n\nkept" % status)
    assert (response.status, response.body) == (status, body)


@pytest.mark.parametrize("value", [b"text/plain\x00", b"text/\x1bplain", b"a\x7fb"])
def test_control_characters_in_the_content_type_are_an_error(value: bytes) -> None:
    # They would end up in the answer's header block.
    with pytest.raises(BadResponse, match="control characters"):
        parse_output(b"content-type: " + value + b"\n\nbody")


def test_a_tab_in_the_content_type_is_kept() -> None:
    assert parse_output(b"content-type: text/plain;\tcharset=utf-8\n\nx").content_type == (
        "text/plain;\tcharset=utf-8"
    )
