"""Header rules: hop-by-hop removal and X-Forwarded-* trust."""

import ipaddress

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from authproxy.proxy.headers import (
    TrustedProxies,
    client_address,
    effective_host,
    effective_scheme,
    request_id_from,
    copy_response_headers,
    response_headers,
    upstream_request_headers,
)

TRUSTED = TrustedProxies([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")])


def headers(*pairs):
    return CIMultiDictProxy(CIMultiDict(pairs))


def forward(inbound, peer="203.0.113.9", **kwargs):
    options = dict(
        peer=peer,
        peer_trusted=TRUSTED.contains(peer),
        scheme="http",
        host_header="app.example.com",
        upstream_host="svc:8001",
        request_id="rid-1",
    )
    options.update(kwargs)
    return upstream_request_headers(inbound, **options)


def test_hop_by_hop_and_connection_named_headers_removed():
    out = forward(
        headers(
            ("Connection", "keep-alive, X-Private"),
            ("Keep-Alive", "timeout=5"),
            ("X-Private", "secret-hop"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Trailer", "X-T"),
            ("Expect", "100-continue"),
            ("X-Normal", "1"),
            ("Cookie", "a=b"),
        )
    )
    names = {name.lower() for name in out}
    for gone in ("connection", "keep-alive", "x-private", "te", "transfer-encoding", "upgrade", "proxy-connection",
                 "proxy-authorization", "trailer", "expect"):
        assert gone not in names
    assert out["X-Normal"] == "1" and out["Cookie"] == "a=b"


def test_headers_that_redirect_routing_or_hide_behind_underscores_are_dropped():
    out = forward(
        headers(("X_Forwarded_For", "6.6.6.6"), ("X-Original-URL", "/admin"), ("X-Rewrite-URL", "/admin"),
                ("X-Forwarded-Prefix", "/evil"), ("X-Fine", "1"))
    )
    assert set(out) == {"X-Fine", "Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id"}
    assert out["X-Forwarded-For"] == "203.0.113.9"
    trusted = forward(headers(("X-Forwarded-Prefix", "/app")), peer="10.0.0.1")
    assert trusted["X-Forwarded-Prefix"] == "/app"


def test_untrusted_peer_cannot_set_forwarded_headers():
    out = forward(
        headers(
            ("Host", "app.example.com"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Port", "443"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Real-IP", "1.2.3.4"),
        )
    )
    assert out["X-Forwarded-For"] == "203.0.113.9"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "app.example.com"
    assert "X-Forwarded-Port" not in out and "Forwarded" not in out and "X-Real-IP" not in out
    assert out["Host"] == "svc:8001"
    assert out["X-Request-Id"] == "rid-1"


def test_trusted_peer_forwarded_headers_kept_and_appended():
    out = forward(
        headers(("X-Forwarded-For", "198.51.100.7, 10.1.1.1"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "public.example")),
        peer="10.2.2.2",
    )
    assert out["X-Forwarded-For"] == "198.51.100.7, 10.1.1.1, 10.2.2.2"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["X-Forwarded-Host"] == "public.example"


def test_preserve_host():
    out = forward(headers(("Host", "app.example.com")), upstream_host=None)
    assert out["Host"] == "app.example.com"


def test_response_headers():
    out = CIMultiDict()
    copy_response_headers(
        headers(("Connection", "close, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "x"), ("Transfer-Encoding", "chunked"),
                ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")),
        out,
        "rid",
    )
    assert out.getall("Set-Cookie") == ["a=1", "b=2"]
    assert "X-Hop" not in out and "Connection" not in out and "Transfer-Encoding" not in out
    assert out["X-Request-Id"] == "rid"
    assert out["Server"] == "authproxy"  # never aiohttp's name and version


@pytest.mark.parametrize("connection", ["keep-alive", "Keep-Alive", "close", "keep-alive, X-Hop", "X-Hop"])
def test_response_headers_for_the_express_lane(connection):
    upstream = headers(("Connection", connection), ("X-Hop", "1"), ("X-Request-Id", "theirs"), ("Server", "nginx"),
                       ("Content-Length", "2"))
    kept = response_headers(upstream, "ours", date=True)
    names = [name for name, _ in kept]
    assert ("X-Hop" in names) == ("X-Hop" not in connection)  # a name in Connection is hop-by-hop too
    assert "Connection" not in names and ("X-Request-Id", "theirs") in kept and ("Server", "nginx") in kept
    assert names.count("Date") == 1  # the upstream sent none: ours (RFC 9110 6.6.1)
    dated = response_headers(headers(("Date", "Mon, 30 Nov 2026 00:00:00 GMT"), ("Connection", "X-Request-Id, Date"),
                                     ("X-Request-Id", "theirs")), "ours", date=True)
    assert ("X-Request-Id", "ours") in dated and [name for name, _ in dated].count("Date") == 1
    assert "Date" not in [name for name, _ in response_headers(upstream, "ours")]  # aiohttp's writer adds it


def test_trust_matching():
    assert TRUSTED.contains("10.9.9.9")
    assert TRUSTED.contains("::ffff:10.0.0.1")  # IPv4-mapped
    assert TRUSTED.contains("fd12::1")
    assert not TRUSTED.contains("11.0.0.1")
    assert not TRUSTED.contains("not-an-ip")
    assert not TrustedProxies([]).contains("10.0.0.1")


def test_client_address():
    assert client_address("203.0.113.1", ["1.1.1.1"], TRUSTED) == "203.0.113.1"
    assert client_address("10.0.0.2", ["198.51.100.1, 10.0.0.5"], TRUSTED) == "198.51.100.1"
    assert client_address("10.0.0.2", [], TRUSTED) == "10.0.0.2"


def test_effective_host_and_scheme():
    inbound = headers(("Host", "inner"), ("X-Forwarded-Host", "outer.example"), ("X-Forwarded-Proto", "https"))
    assert effective_host(inbound, True) == "outer.example"
    assert effective_host(inbound, False) == "inner"
    assert effective_scheme(inbound, True, "http") == "https"
    assert effective_scheme(inbound, False, "http") == "http"
    assert effective_scheme(headers(("X-Forwarded-Proto", "gopher")), True, "http") == "http"


def test_request_id():
    assert request_id_from(headers(("X-Request-Id", "abc-123"))) == "abc-123"
    generated = request_id_from(headers(("X-Request-Id", "bad value\r\n")))
    assert len(generated) == 32 and generated != request_id_from(headers())


def test_cookie_headers_pass_through_the_cookie_filter_and_several_become_one():
    from authproxy.session.cookies import CookiePolicy, without_own_cookies

    policy = CookiePolicy.build(https=False, cookie_name=None, cookie_domain=None)
    own = f"{policy.session_name}=ticket"

    def filtered(value):
        return without_own_cookies(value, policy)

    out = forward(headers(("Cookie", f"a=1; {own}; b=2")), cookies=filtered)
    assert out.getall("Cookie") == ["a=1; b=2"]
    assert "Cookie" not in forward(headers(("Cookie", own)), cookies=filtered)  # only ours: no header at all
    out = forward(headers(("Cookie", "a=1"), ("Cookie", own), ("cookie", f"{own}; c=3")), cookies=filtered)
    assert out.getall("Cookie") == ["a=1; c=3"]  # RFC 6265 5.4: one header
    assert forward(headers(("Cookie", own)), cookies=None).getall("Cookie") == [own]  # no sign-in: untouched
