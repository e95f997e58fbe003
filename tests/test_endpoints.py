"""Endpoint parsing: accepted forms, and errors that name the offending item."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eagle.endpoints import parse_endpoint, parse_endpoints


def test_accepted_forms() -> None:
    eps = parse_endpoints("10.0.0.1:2379, db.example.com:443,[::1]:50051,unix:/tmp/x.sock")
    assert [e.raw for e in eps] == [
        "10.0.0.1:2379",
        "db.example.com:443",
        "[::1]:50051",
        "unix:/tmp/x.sock",
    ]
    assert [e.target for e in eps] == [
        "10.0.0.1:2379",
        "db.example.com:443",
        "[::1]:50051",
        "unix:/tmp/x.sock",
    ]
    assert eps[0].ip_literal and not eps[1].ip_literal and eps[2].ip_literal
    assert eps[3].is_unix and eps[2].port == 50051


def test_sequence_form() -> None:
    assert [e.raw for e in parse_endpoints(["a:1", "b:2"])] == ["a:1", "b:2"]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("", "empty"),
        ([], "empty"),
        ("a:1,,b:2", "''"),
        ("a:1,a:1", "'a:1'"),
        ("a:1,A:1", "'A:1'"),
        ("hostonly", "'hostonly'"),
        ("host:99999", "'host:99999'"),
        ("host:0", "'host:0'"),
        ("host:http", "'host:http'"),
        ("::1:80", "'::1:80'"),
        ("[::1:80", "'[::1:80'"),
        ("[zz]:80", "'[zz]:80'"),
        ("1.2.3.999:80", "'1.2.3.999:80'"),
        ("bad_host!:80", "'bad_host!:80'"),
        ("unix:relative", "'unix:relative'"),
        ("http://a:80", "'http://a:80'"),
        ("a b:80", "'a b:80'"),
    ],
)
def test_bad_endpoints_name_the_item(spec: str | list[str], named: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_endpoints(spec)
    assert named in str(err.value)


def test_non_string_items() -> None:
    with pytest.raises(ValueError, match="expected a string"):
        parse_endpoints([1234])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="comma-separated"):
        parse_endpoints(42)  # type: ignore[arg-type]


@given(st.text(max_size=40))
def test_fuzz_single_endpoint_only_raises_value_error(text: str) -> None:
    try:
        ep = parse_endpoint(text)
    except ValueError as exc:
        assert "endpoint" in str(exc)
    else:
        assert ep.raw == text.strip()
        assert ep.is_unix or 1 <= ep.port <= 65535


@given(st.lists(st.text(alphabet="ab:[]1.,/unix", max_size=12), max_size=5))
def test_fuzz_lists_only_raise_value_error(items: list[str]) -> None:
    try:
        parsed = parse_endpoints(items)
    except ValueError:
        return
    assert len({e.target.lower() for e in parsed}) == len(parsed) == len(items)
