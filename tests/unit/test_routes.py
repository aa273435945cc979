"""The route matching table: first match wins, host/path/method rules, strip_prefix."""

import pytest

from authproxy.config import parse_config
from authproxy.policy.paths import normalise_path
from authproxy.policy.routes import Origin, RouteTable, request_host, valid_host_header

CONFIG = """
routes:
  - {name: admin, match: {host: admin.example.com}, upstream: "http://127.0.0.1:9001", auth: public}
  - {name: tenants, match: {host: "*.tenants.example.com", path_prefix: /app}, upstream: "http://127.0.0.1:9002", auth: public}
  - {name: api-a, match: {path_prefix: /api/a/, methods: [GET, POST]}, upstream: "http://127.0.0.1:9003/v1", strip_prefix: true, auth: public}
  - {name: api-b, match: {path_prefix: /api/b}, upstream: "http://127.0.0.1:9004", auth: public}
  - {name: versioned, match: {path_regex: "/v[0-9]+/"}, upstream: "http://127.0.0.1:9005", strip_prefix: true, auth: public}
  - {name: writes, match: {methods: [DELETE]}, upstream: "http://127.0.0.1:9006", auth: public}
  - {name: root, match: {path_prefix: /, host: www.example.com}, upstream: "http://127.0.0.1:9007", auth: public}
"""

TABLE = RouteTable(parse_config(CONFIG, "t.yaml", {}).routes)


@pytest.mark.parametrize(
    ("host", "raw_path", "method", "route", "forwarded"),
    [
        ("admin.example.com", "/anything", "GET", "admin", "/anything"),
        ("ADMIN.example.com", "/x", "PUT", "admin", "/x"),
        ("a.tenants.example.com", "/app/x", "GET", "tenants", "/app/x"),
        ("a.b.tenants.example.com", "/app", "GET", "tenants", "/app"),
        ("tenants.example.com", "/app/x", "GET", None, None),  # wildcard needs a label before the suffix
        ("x.tenants.example.com", "/apple", "GET", None, None),  # segment-wise prefix
        ("any", "/api/a/items/1", "GET", "api-a", "/v1/items/1"),
        ("any", "/api/a", "GET", "api-a", "/v1/"),
        ("any", "/api/a/items", "HEAD", "api-a", "/v1/items"),  # GET admits HEAD
        ("any", "/api/a/items", "PUT", None, None),
        ("any", "/api/ab", "GET", None, None),
        ("any", "/api/b/x/y", "PUT", "api-b", "/api/b/x/y"),
        ("any", "/api/a/../b/z", "GET", "api-b", "/api/b/z"),  # normalised before matching
        ("any", "/api/a/%2e%2e/b/z", "GET", "api-b", "/api/b/z"),
        ("any", "//api//b", "GET", "api-b", "/api/b"),
        ("any", "/v2/things", "GET", "versioned", "/things"),
        ("any", "/x/v2/things", "GET", None, None),  # regex anchored at the start
        ("any", "/whatever", "DELETE", "writes", "/whatever"),
        ("www.example.com", "/", "GET", "root", "/"),
        ("other.example.com", "/", "GET", None, None),
    ],
)
def test_matching(host, raw_path, method, route, forwarded):
    path = normalise_path(raw_path).path
    found = TABLE.match(request_host(host), path, method)
    if route is None:
        assert found is None
        return
    assert found is not None
    matched_route, matched = found
    assert matched_route.name == route
    assert matched_route.upstream_path(path, matched) == forwarded


def test_regex_strip_cannot_climb_above_the_base_path():
    table = RouteTable(
        parse_config(
            'routes: [{name: v, match: {path_regex: "/v1"}, upstream: "http://u/base", strip_prefix: true, auth: public}]',
            "t.yaml",
            {},
        ).routes
    )
    route, matched = table.match("h", "/v1../x", "GET")
    assert route.upstream_path("/v1../x", matched) == "/base/x"
    route, matched = table.match("h", "/v1/y", "GET")
    assert route.upstream_path("/v1/y", matched) == "/base/y"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("app.example.com", True), ("app.example.com:8080", True), ("[::1]:80", True), ("127.0.0.1", True),
        ("", True), ("a_b.internal", True),
        ("evil.com/x.example.com", False), ("evil.com@x.example.com", False), ("a b.example.com", False),
        ("x.example.com:abc", False), ("x.example.com:123456", False), ("x\r\ny", False),
    ],
)
def test_host_header_validation(value, valid):
    assert valid_host_header(value) is valid


def test_first_match_wins():
    table = RouteTable(
        parse_config(
            """
routes:
  - {name: first, match: {path_prefix: /a}, upstream: "http://127.0.0.1:1", auth: public}
  - {name: second, match: {path_prefix: /a/b}, upstream: "http://127.0.0.1:2", auth: public}
""",
            "t.yaml",
            {},
        ).routes
    )
    assert table.match("h", "/a/b/c", "GET")[0].name == "first"


@pytest.mark.parametrize(
    ("header", "host"),
    [("Example.COM:8080", "example.com"), ("example.com.", "example.com"), ("[::1]:80", "[::1]"), ("", ""), (None, "")],
)
def test_request_host(header, host):
    assert request_host(header) == host


def test_upstream_host_header_keeps_non_default_port():
    table = RouteTable(
        parse_config(
            'routes: [{name: a, upstream: "https://svc.internal", auth: public}, {name: b, upstream: "http://svc:8080", auth: public}]',
            "t.yaml",
            {},
        ).routes
    )
    assert table.routes[0].upstream.host_header == "svc.internal"
    assert table.routes[0].upstream.origin == Origin("https", "svc.internal", 443)
    assert table.routes[1].upstream.origin == Origin("http", "svc", 8080)
    assert table.routes[1].upstream.host_header == "svc:8080"
