"""Path normalisation: what is matched is what is forwarded."""

import pytest

from authproxy.errors import BadRequest
from authproxy.policy.paths import normalise_path, remove_dot_segments, split_target


@pytest.mark.parametrize(
    ("raw", "expected", "encoded_slash"),
    [
        ("/", "/", False),
        ("/api/a/x", "/api/a/x", False),
        ("/api/a/../admin", "/api/admin", False),
        ("/api/a/%2e%2e/admin", "/api/admin", False),
        ("/api/a/%2E%2E/%2e%2E/admin", "/admin", False),
        ("/api/a/.%2e/.%2E/admin", "/admin", False),
        ("/api/./a/./x", "/api/a/x", False),
        ("//admin", "/admin", False),
        ("/api//a///x", "/api/a/x", False),
        ("/api/a//../../admin", "/admin", False),
        ("/../../etc/passwd", "/etc/passwd", False),
        ("/a/b/..", "/a/", False),
        ("/a/b/.", "/a/b/", False),
        ("/a/%41%62c", "/a/Abc", False),
        ("/a/%7e%2d%5f", "/a/~-_", False),
        ("/a/%3f%3a", "/a/%3F%3A", False),  # reserved characters stay encoded, hex upper-cased
        ("/a/%252e%252e/x", "/a/%252e%252e/x", False),  # double encoding is data, not a dot
        ("/a/%2fb", "/a/%2Fb", True),
        ("/a/%2F..%2Fadmin", "/a/%2F..%2Fadmin", True),
        ("/a/%5cadmin", "/a/%5Cadmin", True),
        ("/a/b..c/.d", "/a/b..c/.d", False),
        ("/static/app.min.js", "/static/app.min.js", False),
    ],
)
def test_normalise(raw, expected, encoded_slash):
    result = normalise_path(raw)
    assert result.path == expected
    assert result.has_encoded_slash is encoded_slash
    assert normalise_path(result.path).path == result.path  # idempotent


@pytest.mark.parametrize(
    "raw",
    ["/a/%00b", "/a/%zz", "/a/%2", "/a\\..\\admin", "/a b", "/a\x01", "/a#frag", "relative", "*", "/caf\u00e9",
     "/a/..;/admin", "/a/.;x/b", "/a/%2e%2e;jsessionid=1/admin"],
)
def test_rejected(raw):
    with pytest.raises(BadRequest):
        normalise_path(raw)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/a/b?x=1&y=2", "/a/b", "x=1&y=2"),
        ("/a", "/a", ""),
        ("http://h.example/a/b?q", "/a/b", "q"),
        ("https://h.example", "/", ""),
        ("http://h.example?q=1", "/", "q=1"),
    ],
)
def test_split_target(target, path, query):
    assert split_target(target) == (path, query)


def test_split_target_rejects_other_forms():
    with pytest.raises(BadRequest):
        split_target("example.com:443")


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/a/b/c/./../../g", "/a/g"), ("/mid/content=5/../6", "/mid/6"), ("/..", "/"), ("/.", "/"), ("/a/..", "/")],
)
def test_rfc3986_examples(path, expected):
    assert remove_dot_segments(path) == expected
