"""Who may open a WebSocket on a session route (cross-site WebSocket hijacking), and the
``websocket_origins`` key's validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from authproxy.config.schema import Route
from authproxy.oidc.redirects import RedirectPolicy
from authproxy.proxy.websocket import origin_allowed

OURS = RedirectPolicy(["app.example.com", "*.tenants.example.com"], ["elsewhere.example.org"]).is_own_host


@pytest.mark.parametrize(
    ("origin", "allowed", "request_host", "expected"),
    [
        (None, None, "app.example.com", True),  # no Origin: not a browser
        ("https://app.example.com", None, "app.example.com", True),
        ("https://app.example.com:8443", None, "other.example.com", True),  # our host, any port
        ("https://acme.tenants.example.com", None, "app.example.com", True),
        ("http://side.example.net", None, "side.example.net", True),  # the request's own host
        ("http://[::1]:8080", None, "[::1]", True),
        ("https://elsewhere.example.org", None, "app.example.com", False),  # a place to return to, not ours
        ("https://evil.example", None, "app.example.com", False),
        ("https://app.example.com.evil.example", None, "app.example.com", False),
        ("https://tenants.example.com", None, "app.example.com", False),
        ("null", None, "app.example.com", False),
        ("file://", None, "app.example.com", False),
        ("chrome-extension://abc", None, "app.example.com", False),
        ("https://user@app.example.com", None, "app.example.com", False),
        ("https://app.example.com:99999", None, "app.example.com", False),
        ("https://app.example.com/path", None, "app.example.com", False),
        ("https://partner.example", ["https://partner.example"], "app.example.com", True),
        ("https://partner.example:443", ["https://partner.example"], "app.example.com", True),
        ("https://partner.example:444", ["https://partner.example"], "app.example.com", False),
        ("http://partner.example", ["https://partner.example"], "app.example.com", False),
        ("https://a.b.partner.example", ["https://*.partner.example"], "app.example.com", True),
        ("https://app.example.com", ["https://partner.example"], "app.example.com", False),  # the list replaces ours
        ("https://app.example.com", [], "app.example.com", False),
    ],
)
def test_origin_allowed(origin, allowed, request_host, expected):
    assert origin_allowed(origin, allowed, request_host, OURS) is expected


def test_websocket_origins_are_validated_and_normalised():
    route = Route(name="r", upstream="http://127.0.0.1:9", auth="login",
                  websocket_origins=["HTTPS://Partner.Example/", "http://*.tenants.example:8080"])
    assert route.websocket_origins == ["https://partner.example", "http://*.tenants.example:8080"]
    for bad in ("partner.example", "ftp://partner.example", "https://partner.example/path", "https://*",
                "https://partner.example:0", "https://partner.example:x", "https://a_b.example", "null"):
        with pytest.raises(ValidationError, match="websocket_origins"):
            Route(name="r", upstream="http://127.0.0.1:9", auth="login", websocket_origins=[bad])
