"""The demo's echo upstream (authproxy.demo.echo): what arrived, JWTs decoded but not verified."""

from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from authproxy.demo.echo import NOT_VERIFIED, create_echo_app, prefers_html
from authproxy.demo.run import DemoPorts, demo_config, injected_headers

NOW = 1_800_000_000
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
HOSTILE = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)


def token(key: RSAKey, **claims) -> str:
    return jwt.encode({"alg": "RS256", "kid": "k1"}, {"iss": "http://idp.test", "exp": NOW + 90, **claims}, key)


@pytest.fixture
async def echo(aiohttp_client):
    app = create_echo_app(title="Demo upstream", links=[("Public", "/public"), ("Sign out", "/oauth2/sign_out?rd=/&x=<y>")],
                          clock=lambda: NOW, injected=["Authorization", "X-User-Email", "X-Authproxy-Assertion"])
    return await aiohttp_client(app)


async def test_json_shows_request_headers_and_decoded_tokens(echo, key):
    access = token(key, sub="alice-sub", token_use="access", scope="openid email")
    assertion = token(key, sub="alice-sub", email="alice@example.com", exp=NOW - 5)
    response = await echo.post(
        "/api/items?limit=2",
        data=b"12345",
        headers={"Authorization": f"Bearer {access}", "X-Authproxy-Assertion": assertion, "X-Forwarded-User": "alice"},
    )
    assert response.status == 200 and response.content_type == "application/json"
    report = await response.json()
    assert (report["method"], report["path"], report["query"], report["body_bytes"]) == ("POST", "/api/items", "limit=2", 5)
    headers = dict(report["headers"])
    assert headers["Authorization"] == f"Bearer {access}"  # in full: the demo shows what the proxy sends
    assert headers["X-Forwarded-User"] == "alice"
    tokens = {found["header"]: found for found in report["tokens"]}
    assert set(tokens) == {"Authorization", "X-Authproxy-Assertion"}
    assert tokens["Authorization"]["note"] == NOT_VERIFIED
    assert tokens["Authorization"]["claims"]["scope"] == "openid email"
    assert tokens["Authorization"]["jose_header"]["kid"] == "k1"
    assert tokens["Authorization"]["expiry"] == {"exp_utc": "2027-01-15T08:01:30Z", "seconds_left": 90}
    assert tokens["X-Authproxy-Assertion"]["claims"]["email"] == "alice@example.com"
    assert tokens["X-Authproxy-Assertion"]["expiry"]["seconds_left"] == -5


async def test_html_page_for_a_browser(echo, key):
    id_token = token(key, sub="alice-sub", **{"cognito:groups": ["admins"]})
    response = await echo.get("/app/page", headers={"Accept": BROWSER_ACCEPT, "X-Id-Token": id_token})
    assert response.status == 200 and response.content_type == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = await response.text()
    assert "<b>GET</b> <code>/app/page</code>" in page
    assert "X-Id-Token: JWT" in page and NOT_VERIFIED in page
    assert "&quot;cognito:groups&quot;" in page and "admins" in page
    assert "2027-01-15T08:01:30Z" in page and "90 s left" in page
    assert '<a href="/public">Public</a>' in page
    assert '<a href="/oauth2/sign_out?rd=/&amp;x=&lt;y&gt;">Sign out</a>' in page


async def test_hostile_header_values_are_escaped(echo, key):
    hostile_claims = token(key, name=HOSTILE)
    response = await echo.get(
        "/x", headers={"Accept": "text/html", "X-Evil": HOSTILE, "X-Id-Token": hostile_claims}
    )
    page = await response.text()
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.split("X-Id-Token: JWT")[1]  # in the decoded claims too


async def test_a_token_header_that_is_no_jwt_says_so(echo):
    response = await echo.get("/", headers={"X-Id-Token": "eyJ.not.base64!", "Authorization": "Basic dXNlcjpwYXNz"})
    report = await response.json()
    assert report["tokens"] == [{"header": "X-Id-Token", "note": NOT_VERIFIED, "error": "not a decodable JWT"}]


async def test_other_headers_are_only_decoded_when_they_hold_a_jwt(echo, key):
    response = await echo.get("/", headers={"X-Amzn-Oidc-Data": token(key, sub="s"), "X-Host-Like": "www.example.com"})
    tokens = (await response.json())["tokens"]
    assert [found["header"] for found in tokens] == ["X-Amzn-Oidc-Data"] and tokens[0]["claims"]["sub"] == "s"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("*/*", False),
        ("", False),
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.9, application/json;q=0.1", True),
        ("text/*", True),
        ("text/html;q=0", False),
    ],
)
def test_accept_negotiation(accept, html):
    assert prefers_html(accept) is html


async def test_the_page_leads_with_what_authproxy_added(echo, key):
    access = token(key, sub="alice-sub", token_use="access")
    response = await echo.get("/", headers={
        "Accept": BROWSER_ACCEPT, "User-Agent": "Chromium", "X-Forwarded-For": "127.0.0.1",
        "x-user-email": "alice@example.com", "Authorization": f"Bearer {access}", "X-Request-Id": "r1",
    })
    page = await response.text()
    added, browser = page.split("<h2>From your browser")
    assert "<h2>Added by authproxy (4)</h2>" in added
    # identity first, then the forwarding headers
    identity = [added.lower().index(f"<th>{name}</th>") for name in ("authorization", "x-user-email")]
    forwarding = [added.lower().index(f"<th>{name}</th>") for name in ("x-forwarded-for", "x-request-id")]
    assert max(identity) < min(forwarding)
    assert "Authorization: JWT" in added  # its decoded token right under it
    assert "<th>User-Agent</th>" in browser and "Authorization" not in browser
    report = await (await echo.get("/", headers={"X-User-Email": "a@b", "X-Forwarded-Proto": "http"})).json()
    assert report["added_by_proxy"] == ["X-User-Email", "X-Forwarded-Proto"]


async def test_nothing_added_says_so(echo):
    page = await (await echo.get("/", headers={"Accept": "text/html"})).text()
    assert "<h2>Added by authproxy (0)</h2><p>Nothing: this route adds no identity.</p>" in page


def test_the_demo_tells_the_echo_every_header_its_routes_add():
    config = demo_config(DemoPorts(), "http://127.0.0.1:8481", "http://127.0.0.1:8482")
    names = injected_headers(config)
    assert {"Authorization", "X-User-Email", "X-User-Groups", "X-User-Sub", "X-Client-Id", "X-Authproxy-Assertion"} <= set(names)
    assert len(names) == len(set(names))
