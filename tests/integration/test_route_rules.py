"""Route rules end to end: every auth mode, allow rule and placeholder through a real
authproxy process, with the real oidc-provider issuing sessions, JWT access tokens
(RFC 8707 resource indicators, RFC 9068) and machine tokens (client_credentials).

Untrusted callers connect from 127.0.0.2 (loopback too); only 127.0.0.1 is trusted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiohttp
import pytest
import yaml
from yarl import URL
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from tests.support.signin import SESSION_SECRET, sign_in
from tests.support.spoofing import SPOOFED
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, MACHINE_CLIENT_ID, MACHINE_CLIENT_SECRET, OidcProvider
from tests.support.processes import ROOT, ProxyProcess, free_port

API = "https://orders.example.test"
OTHER_API = "https://other.example.test"
ASSERTION_KEY = ECKey.generate_key("P-256").as_pem(private=True).decode()


@pytest.fixture(scope="module")
def setup(upstream, tmp_path_factory):
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider(
        [f"{public}/oauth2/callback"], [f"{public}/"],
        resources={API: {"scope": "orders/read orders/write", "accessTokenTTL": 600}, OTHER_API: "other/read"},
    )
    up = upstream.url
    proxy = ProxyProcess(
        {
            "public_url": public,
            "trusted_proxies": ["127.0.0.1/32"],
            "forward_auth": {"callers": ["127.0.0.1/32"]},
            "oidc": {
                "issuer": provider.issuer,
                "client_id": CLIENT_ID,
                "client_secret": "${TEST_CLIENT_SECRET}",
                "scopes": ["openid", "email", "profile", "groups", "offline_access"],
                "authorize_params": {"prompt": "consent"},
                "audiences": [API],
            },
            "session": {"secrets": ["${TEST_SESSION_SECRET}"]},
            "assertion": {"signing_keys": ["${TEST_ASSERTION_KEY}"]},
            "routes": [
                {"name": "public", "match": {"path_prefix": "/public"}, "upstream": up, "auth": "public"},
                {"name": "admins", "match": {"path_prefix": "/admins"}, "upstream": up, "auth": "login",
                 "allow": {"groups": ["admins"]},
                 "inject": {"X-User-Email": "{claims.email}", "X-User-Groups": "{claims.groups}"}},
                {"name": "domain", "match": {"path_prefix": "/domain"}, "upstream": up, "auth": "login",
                 "allow": {"email_domains": ["elsewhere.test"]}},
                {"name": "kinds", "match": {"path_prefix": "/kinds"}, "upstream": up, "auth": "login",
                 "allow": {"emails": ["Alice@Example.com"], "claims": {"groups": ["admins", "ops"]}},
                 "inject": {"X-Email": "{email}"}},
                {"name": "sock", "match": {"path_prefix": "/sock"}, "upstream": up, "auth": "login", "strip_prefix": True,
                 "inject": {"X-User": "{sub}", "Authorization": "Bearer {access_token}"}},
                {"name": "maybe", "match": {"path_prefix": "/maybe"}, "upstream": up, "auth": "optional",
                 "inject": {"X-User": "{sub}"}},
                {"name": "api", "match": {"path_prefix": "/api"}, "upstream": up, "auth": "bearer",
                 "allow": {"scopes": ["orders/read"]},
                 "inject": {"X-User-Email": "{claims.email}", "X-Sub": "{sub}", "X-Client": "{claims.client_id}"}},
                {"name": "api-write", "match": {"path_prefix": "/write"}, "upstream": up, "auth": "bearer",
                 "allow": {"scopes": ["orders/write"]}},
                {"name": "passing", "match": {"path_prefix": "/passing"}, "upstream": up, "auth": "bearer",
                 "pass_authorization": True},
                {"name": "either", "match": {"path_prefix": "/either"}, "upstream": up, "auth": "login_or_bearer",
                 "inject": {"X-Who": "{sub}"}},
                {"name": "asserted", "match": {"path_prefix": "/asserted"}, "upstream": up, "auth": "login",
                 "assertion": True},
                {"name": "svc", "match": {"path_prefix": "/svc"}, "upstream": up, "auth": "login",
                 "inject": {"X-User": "{sub}", "X-Id": "{id_token}"},
                 "service_token": {"scopes": ["orders/write"], "resource": API,
                                   "client_id": MACHINE_CLIENT_ID, "client_secret": "${TEST_MACHINE_SECRET}"}},
            ],
        },
        tmp_path_factory.mktemp("route-rules"),
        port=port,
        env={"TEST_CLIENT_SECRET": CLIENT_SECRET, "TEST_SESSION_SECRET": SESSION_SECRET,
             "TEST_ASSERTION_KEY": ASSERTION_KEY, "TEST_MACHINE_SECRET": MACHINE_CLIENT_SECRET},
    )
    yield proxy, provider
    proxy.stop()
    provider.stop()


def browser(local: str = "127.0.0.1"):
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        headers={"Accept": "text/html"},
        connector=aiohttp.TCPConnector(local_addr=(local, 0)),
    )


@pytest.fixture(scope="module")
def tokens(setup):
    """Access tokens from the provider: alice's for the API (read), a machine token (write)."""
    _, provider = setup

    async def fetch():
        async with aiohttp.ClientSession() as http:
            alice_read = await provider.user_access_token(http, "alice", API, "orders/read")
            machine = (await provider.client_credentials_token(http, API, "orders/write"))["access_token"]
            other = (await provider.client_credentials_token(http, OTHER_API, "other/read"))["access_token"]
            id_token = await provider.user_id_token(http, "alice")
        return {"alice_read": alice_read, "machine": machine, "other_audience": other, "id_token": id_token}

    return asyncio.run(fetch())


def header(echo, name):
    values = [value for key, value in echo["headers"] if key.lower() == name.lower()]
    return values[0] if values else None


def names(echo):
    return {key.lower() for key, _ in echo["headers"]}


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def get(session, url, **kwargs):
    async with session.get(url, allow_redirects=False, **kwargs) as response:
        body = await response.text()
        return response.status, response.headers, body


# --- bearer ---------------------------------------------------------------------------


async def test_bearer_access_token_passes_with_claims_from_the_access_token(setup, tokens):
    proxy, _ = setup
    async with aiohttp.ClientSession() as http:
        status, _, body = await get(http, proxy.url + "/api/orders",
                                    headers={"Authorization": f"Bearer {tokens['alice_read']}"})
    assert status == 200, body
    echo = json.loads(body)
    assert header(echo, "X-Sub") == "alice"
    assert header(echo, "X-User-Email") == "alice@example.com"  # from the access token: no ID token here
    assert header(echo, "Authorization") is None  # the client's own token stays with the proxy
    assert proxy.metric("authproxy_auth_total", route="api", outcome="bearer") >= 1


async def test_machine_token_passes_and_pass_authorization_forwards_it(setup, tokens):
    proxy, _ = setup
    async with aiohttp.ClientSession() as http:
        status, _, body = await get(http, proxy.url + "/write/x", headers={"Authorization": f"Bearer {tokens['machine']}"})
        assert status == 200, body
        status, _, body = await get(http, proxy.url + "/passing/x", headers={"Authorization": f"Bearer {tokens['machine']}"})
    assert status == 200 and header(json.loads(body), "Authorization") == f"Bearer {tokens['machine']}"


def forged(tokens, change):
    """alice's token with ``change`` applied: claims re-signed with a key the provider never had,
    or the original signature kept over altered claims."""
    head, payload, signature = tokens["alice_read"].split(".")
    return change(head, payload, signature)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


FOREIGN_KEY = RSAKey.generate_key(2048)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda t: t["id_token"], "wrong_type"),  # an ID token is never an access token (typ at+jwt)
        (lambda t: t["other_audience"], "wrong_audience"),
        (lambda t: "opaque-token-value", "malformed"),
        (lambda t: forged(t, lambda h, p, s: f"{h}.{_b64({**claims_of(t['alice_read']), 'sub': 'admin'})}.{s}"),
         "bad_signature"),
        (lambda t: jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": claims_of(t["alice_read"]).get("jti", "k")},
                              claims_of(t["alice_read"]), FOREIGN_KEY), "unknown_key"),
        (lambda t: forged(t, lambda h, p, s: f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{p}."),
         "unacceptable_algorithm_or_key"),
    ],
)
async def test_bearer_rejections_name_their_reason(setup, tokens, make, reason):
    proxy, _ = setup
    async with aiohttp.ClientSession() as http:
        status, headers, body = await get(http, proxy.url + "/api/x", headers={"Authorization": f"Bearer {make(tokens)}"})
    assert status == 401
    challenge = headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert f'error_description="{reason}"' in challenge, challenge
    assert json.loads(body)["error"] == "unauthorized"
    assert make(tokens) not in body  # the token is never echoed


# JOSE headers that made joserfc raise TypeError (a 500 and a traceback) before the header's
# shape was checked first; alice's real signature stays on, so only the header is hostile.
HOSTILE_HEADERS = [{"crit": value} for value in (5, None, True, [1], [None], [{}], [["x"]])] + [
    {"kid": 5}, {"kid": None}, {"typ": ["at+jwt"]}, {"alg": ["RS256"]},
]


@pytest.mark.parametrize("change", HOSTILE_HEADERS, ids=lambda change: json.dumps(change))
@pytest.mark.parametrize("where", ["/api/x", "/either/x", "/oauth2/auth"])
async def test_a_malformed_jose_header_is_an_invalid_token_never_a_500(setup, tokens, change, where):
    proxy, _ = setup
    header = {**json.loads(base64.urlsafe_b64decode(tokens["alice_read"].split(".")[0] + "==")), **change}
    token = forged(tokens, lambda h, p, s: f"{_b64(header)}.{p}.{s}")
    extra = {"X-Original-URI": "/api/x", "X-Original-Method": "GET"} if where == "/oauth2/auth" else {}
    async with aiohttp.ClientSession() as http:
        status, headers, body = await get(http, proxy.url + where,
                                          headers={"Authorization": f"Bearer {token}", "Accept": "application/json", **extra})
    assert status == 401, body
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert "Traceback" not in proxy.logs()


async def test_bearer_without_token_and_insufficient_scope(setup, tokens):
    proxy, _ = setup
    async with aiohttp.ClientSession() as http:
        status, headers, body = await get(http, proxy.url + "/api/x", headers={"Accept": "text/html"})
        assert status == 401 and json.loads(body)["error"] == "unauthorized"  # an API answer, whatever is accepted
        token = f"Bearer {tokens['alice_read']}"
        async with http.get(proxy.url + "/passing/x", headers=[("Authorization", token), ("Authorization", "Bearer forged")]) as response:
            assert response.status == 400  # a second, unchecked Authorization never reaches the upstream
        status, headers, _ = await get(http, proxy.url + "/api/x")
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="authproxy"'  # RFC 6750 3.1: no error
        status, headers, body = await get(http, proxy.url + "/api/x", headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert status == 401
        status, headers, body = await get(http, proxy.url + "/write/x",
                                          headers={"Authorization": f"Bearer {tokens['alice_read']}"})
    assert status == 403
    assert 'error="insufficient_scope"' in headers["WWW-Authenticate"] and 'scope="orders/write"' in headers["WWW-Authenticate"]
    assert "orders/write" in json.loads(body)["message"]
    assert proxy.metric("authproxy_auth_total", route="api-write", outcome="forbidden") >= 1
    assert proxy.metric("authproxy_auth_total", route="api", outcome="unauthorized") >= 2


# --- sessions, allow rules, optional, login_or_bearer -------------------------------------


async def test_allow_groups_admit_alice_and_refuse_bob_with_a_page_naming_the_group(setup):
    proxy, _ = setup
    async with browser() as alice:
        await sign_in(alice, proxy, "alice", "/admins/x")
        status, _, body = await get(alice, proxy.url + "/admins/x")
        assert status == 200
        echo = json.loads(body)
        assert header(echo, "X-User-Email") == "alice@example.com" and header(echo, "X-User-Groups") == "admins"
        status, _, body = await get(alice, proxy.url + "/domain/x")  # alice@example.com is not in elsewhere.test
        assert status == 403 and "elsewhere.test" in body
    async with browser() as bob:
        await sign_in(bob, proxy, "bob", "/admins/x")
        status, headers, body = await get(bob, proxy.url + "/admins/x")
        assert status == 403 and headers["Content-Type"].startswith("text/html")
        assert "admins" in body and "Access denied" in body
        # A way out: who is refused, a sign-out to try another account, the home page; no secrets.
        assert "You are signed in as <b>bob@example.com</b>." in body
        assert '<a href="/oauth2/sign_out">' in body and '<a href="/">' in body
        cookies = [cookie.value for cookie in bob.cookie_jar if len(cookie.value) >= 8]
        assert cookies and not any(value in body for value in cookies) and "eyJ" not in body
        status, headers, _ = await get(bob, proxy.url + "/oauth2/sign_out", headers={"Sec-Fetch-Site": "same-origin"})
        assert status == 302  # the link signs bob out (on to the provider's logout)
        status, headers, _ = await get(bob, proxy.url + "/admins/x")
        assert status == 302 and "/oauth2/start" in headers["Location"]  # and the next visit asks for a sign-in
        await sign_in(bob, proxy, "bob", "/admins/x")
        status, _, body = await get(bob, proxy.url + "/admins/x", headers={"Accept": "application/json"})
        assert status == 403 and json.loads(body)["error"] == "forbidden"
        assert "membership in one of: admins" in json.loads(body)["message"]
    assert proxy.metric("authproxy_auth_total", route="admins", outcome="forbidden") >= 2


async def test_allow_emails_and_claims_kinds_and_the_email_placeholder(setup):
    proxy, _ = setup
    async with browser() as alice:
        await sign_in(alice, proxy, "alice", "/kinds/x")
        status, _, body = await get(alice, proxy.url + "/kinds/x")
        assert status == 200 and header(json.loads(body), "X-Email") == "alice@example.com"
    async with browser() as bob:
        await sign_in(bob, proxy, "bob", "/kinds/x")
        status, _, body = await get(bob, proxy.url + "/kinds/x", headers={"Accept": "application/json"})
        assert status == 403 and "allowed email" in json.loads(body)["message"]
        assert "alice" not in body.lower()  # the rule's values are not shown to others
    records = await proxy.access_lines(lambda record: record.get("route") == "kinds" and record["status"] == 403)
    assert records and records[-1]["refusal"] == "allow_rules" and records[-1]["user"] == "bob"


async def test_optional_route_passes_everyone_and_identifies_whoever_is_signed_in(setup):
    proxy, _ = setup
    async with browser() as anonymous:
        status, _, body = await get(anonymous, proxy.url + "/maybe/x", headers={"X-User": "mallory"})
        assert status == 200 and header(json.loads(body), "X-User") is None
    async with browser() as alice:
        await sign_in(alice, proxy, "alice", "/admins/x")
        status, _, body = await get(alice, proxy.url + "/maybe/x", headers={"X-User": "mallory"})
        assert status == 200 and header(json.loads(body), "X-User") == "alice"
    assert proxy.metric("authproxy_auth_total", route="maybe", outcome="public") >= 1
    assert proxy.metric("authproxy_auth_total", route="maybe", outcome="session") >= 1


async def test_login_or_bearer_takes_either(setup, tokens):
    proxy, _ = setup
    async with browser() as anonymous:
        status, headers, _ = await get(anonymous, proxy.url + "/either/x")
        assert status == 302 and "/oauth2/start" in headers["Location"]  # a browser goes to sign in
        status, _, _ = await get(anonymous, proxy.url + "/either/x", headers={"Accept": "application/json"})
        assert status == 401
        status, _, body = await get(anonymous, proxy.url + "/either/x",
                                    headers={"Authorization": f"Bearer {tokens['alice_read']}"})
        assert status == 200 and header(json.loads(body), "X-Who") == "alice"
        status, headers, _ = await get(anonymous, proxy.url + "/either/x", headers={"Authorization": "Bearer nonsense"})
        assert status == 401 and "invalid_token" in headers["WWW-Authenticate"]  # a bad token is not a sign-in prompt
    async with browser() as alice:
        await sign_in(alice, proxy, "alice", "/either/x")
        status, _, body = await get(alice, proxy.url + "/either/x")
        assert status == 200 and header(json.loads(body), "X-Who") == "alice"


# --- assertion and service tokens ------------------------------------------------------------


async def test_assertion_verifies_with_the_proxys_published_keys(setup):
    proxy, _ = setup
    async with browser() as alice:
        await sign_in(alice, proxy, "alice", "/asserted/x")
        status, _, body = await get(alice, proxy.url + "/asserted/x", headers={"X-Authproxy-Assertion": "forged"})
        assert status == 200
        assertion = header(json.loads(body), "X-Authproxy-Assertion")
    # the upstream's side: fetch the JWKS from the proxy, verify, check issuer and audience
    async with aiohttp.ClientSession() as http, http.get(proxy.url + "/.well-known/authproxy/jwks.json") as response:
        assert response.status == 200
        keys = KeySet.import_key_set(await response.json())
    decoded = jwt.decode(assertion, keys, algorithms=["ES256"])
    claims = decoded.claims
    assert claims["iss"] == proxy.url and claims["aud"] == "asserted"
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com" and claims["groups"] == ["admins"]
    assert claims["exp"] - claims["iat"] <= 60 and abs(claims["iat"] - time.time()) < 30


async def test_service_token_is_fetched_once_and_sent_upstream(setup):
    proxy, provider = setup
    before = provider.grants("client_credentials")
    async with browser() as alice:
        await sign_in(alice, proxy, "alice", "/svc/x")

        async def one():
            status, _, body = await get(alice, proxy.url + "/svc/x")
            assert status == 200, body
            return json.loads(body)

        echoes = await asyncio.gather(*(one() for _ in range(12)))
    tokens_seen = {header(echo, "Authorization") for echo in echoes}
    assert len(tokens_seen) == 1
    machine = tokens_seen.pop().removeprefix("Bearer ")
    claims = claims_of(machine)
    assert claims["aud"] == API and claims["client_id"] == MACHINE_CLIENT_ID and "orders/write" in claims["scope"]
    assert header(echoes[0], "X-User") == "alice" and header(echoes[0], "X-Id").count(".") == 2
    assert await provider.settled_grants("client_credentials", before + 1) == before + 1


# --- forward-auth ---------------------------------------------------------------------------------


def _cookie_header(session, proxy):
    cookies = session.cookie_jar.filter_cookies(URL(proxy.url))
    return "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())


async def forward_auth(session, proxy, uri, **headers):
    async with session.get(proxy.url + "/oauth2/auth", allow_redirects=False,
                           headers={"X-Original-URI": uri, "X-Original-Method": "GET", **headers}) as response:
        await response.read()
        return response.status, response.headers


async def test_forward_auth_for_trusted_and_untrusted_callers(setup):
    proxy, _ = setup
    async with browser() as alice:
        await sign_in(alice, proxy, "alice", "/svc/x")
        status, headers = await forward_auth(alice, proxy, "/svc/x")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert headers["X-Auth-Request-User"] == "alice" and headers["X-Auth-Request-Email"] == "alice@example.com"
        assert headers["X-Auth-Request-Groups"] == "admins" and headers["X-User"] == "alice"
        assert headers["Authorization"].startswith("Bearer ") and "X-Id" in headers  # tokens for a trusted proxy
        status, headers = await forward_auth(alice, proxy, "/asserted/x")
        assert status == 200 and "X-Authproxy-Assertion" in headers
        status, headers = await forward_auth(alice, proxy, "/domain/x")
        assert status == 403 and headers["Cache-Control"] == "no-store"
        status, _ = await forward_auth(alice, proxy, "/nowhere")
        assert status == 403  # no route admits it
        status, _ = await forward_auth(alice, proxy, "/svc/%2e%2e/domain/x")  # normalised like a proxied request
        assert status == 403
        async with alice.get(proxy.url + "/oauth2/auth") as response:  # a caller must say what it asks about
            assert response.status == 400
        status, headers = await forward_auth(alice, proxy, "/svc/x", Cookie=f"{_cookie_header(alice, proxy)}; app=1")
        # the client's cookies minus ours (the provider's, on the same host, pass: cookies ignore ports)
        assert status == 200 and headers["X-Auth-Request-Cookie"].endswith("app=1")
        assert "authproxy" not in headers["X-Auth-Request-Cookie"]
        # the same browser from an address that is not a forward-auth caller: who it is, never a token
        cookie = _cookie_header(alice, proxy)
    async with browser("127.0.0.2") as untrusted:
        status, headers = await forward_auth(untrusted, proxy, "/svc/x", Cookie=cookie)
        assert status == 200 and headers["X-Auth-Request-User"] == "alice" and headers["Cache-Control"] == "no-store"
        assert not {"Authorization", "X-Id", "X-Authproxy-Assertion", "X-User", "X-Auth-Request-Cookie"} & set(headers)
        assert headers["Server"] == "authproxy"
        status, headers = await forward_auth(untrusted, proxy, "/asserted/x", Cookie=cookie)
        assert "X-Authproxy-Assertion" not in headers
    async with browser() as anonymous:
        status, headers = await forward_auth(anonymous, proxy, "/admins/x")
        assert status == 401 and headers["Cache-Control"] == "no-store"  # nginx turns this into the sign-in redirect
        status, _ = await forward_auth(anonymous, proxy, "/public/x")
        assert status == 200
        # Traefik's forwardAuth describes the request with X-Forwarded-*, and with ?redirect=1
        # a browser navigation gets the sign-in redirect (Traefik passes any answer on)
        traefik = {"X-Forwarded-Method": "GET", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.test",
                   "X-Forwarded-Uri": "/admins/x?a=1"}
        async with anonymous.get(proxy.url + "/oauth2/auth?redirect=1", headers=traefik, allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Cache-Control"] == "no-store"
            location = response.headers["Location"]
        assert location.startswith(proxy.url + "/oauth2/start?rd=")
        assert "https%3A%2F%2Fapp.example.test%2Fadmins%2Fx%3Fa%3D1" in location
        async with anonymous.get(proxy.url + "/oauth2/auth", headers=traefik, allow_redirects=False) as response:
            assert response.status == 401


def traefik_forward_auth_request(client_headers, method, host, uri, allowed):
    """The request Traefik's forwardAuth sends for a client's request, as its documentation
    describes it: the client's headers (only those in ``authRequestHeaders`` when that is
    set), then Traefik's own X-Forwarded-Method/-Proto/-Host/-Uri over them
    (``trustForwardHeader: false``)."""
    if allowed:
        wanted = {name.lower() for name in allowed}
        client_headers = {name: value for name, value in client_headers.items() if name.lower() in wanted}
    own = {"X-Forwarded-Method": method, "X-Forwarded-Proto": "https", "X-Forwarded-Host": host, "X-Forwarded-Uri": uri}
    kept = {name: value for name, value in client_headers.items() if name.lower() not in {k.lower() for k in own}}
    return {**kept, **own}


TRAEFIK_FORGED = [
    {"X-Original-URI": "/public/x"},
    {"X-Original-URI": "/public/x", "X-Original-Method": "GET"},
    {"X-Forwarded-Uri": "/public/x", "X-Original-URI": "/public/x"},
]


@pytest.mark.parametrize("forged", TRAEFIK_FORGED, ids=lambda forged: "+".join(forged))
async def test_traefik_example_lets_no_client_describe_another_request(setup, forged):
    """The shipped Traefik example's authRequestHeaders keeps a client's own description
    away from authproxy; and were the list missing, authproxy would refuse the two
    descriptions that disagree rather than check the client's."""
    proxy, _ = setup
    example = yaml.safe_load((ROOT / "deploy" / "traefik" / "dynamic.yml").read_text())
    allowed = example["http"]["middlewares"]["authproxy"]["forwardAuth"]["authRequestHeaders"]
    client = {"Accept": "application/json", **forged}
    async with aiohttp.ClientSession() as anonymous:
        for names, expected in ((allowed, 401), (None, 400)):
            sent = traefik_forward_auth_request(client, "GET", "app.example.test", "/admins/x", names)
            async with anonymous.get(proxy.url + "/oauth2/auth", headers=sent, allow_redirects=False) as response:
                assert response.status == expected, (names, await response.text())


# --- spoofing ----------------------------------------------------------------------------------------



@pytest.mark.parametrize("path", ["/admins/x", "/api/x", "/public/x", "/maybe/x", "/either/x"])
async def test_spoofed_identity_headers_never_reach_the_upstream(setup, tokens, path):
    proxy, _ = setup
    async with browser() as alice:
        await sign_in(alice, proxy, "alice", "/admins/x")
        headers = dict(SPOOFED)
        if path == "/api/x":
            headers["Authorization"] = f"Bearer {tokens['alice_read']}"
        elif path == "/either/x":
            del headers["Authorization"]  # here it would be a bearer attempt (401), not a spoof
        async with alice.get(proxy.url + path, headers={**headers, "Accept": "application/json"}) as response:
            assert response.status == 200, await response.text()
            echo = await response.json()
    seen = {(key.lower(), value) for key, value in echo["headers"]}
    for name, value in SPOOFED.items():
        assert (name.lower(), value) not in seen, (path, name)
    assert not any("_" in key for key, _ in echo["headers"])
    cookies = " ".join(value for key, value in echo["headers"] if key.lower() == "cookie")
    assert "authproxy" not in cookies  # the proxy's own cookies stay with the proxy


async def test_websocket_upgrades_get_the_same_identity_and_no_spoofed_headers(setup):
    proxy, _ = setup
    async with browser() as alice:
        await sign_in(alice, proxy, "alice", "/sock/ws")
        async with alice.ws_connect(proxy.url.replace("http", "ws") + "/sock/ws", headers=SPOOFED) as ws:
            await ws.send_str("headers")  # the upstream answers with the headers of its upgrade request
            seen = json.loads((await ws.receive()).data)
    received = {name.lower(): value for name, value in seen.items()}
    assert received["x-user"] == "alice" and received["authorization"].startswith("Bearer ")
    for name, value in SPOOFED.items():
        assert received.get(name.lower()) != value, name
    async with browser() as anonymous:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await anonymous.ws_connect(proxy.url.replace("http", "ws") + "/sock/ws", headers={"Accept": "application/json"})
        assert caught.value.status == 401  # no session, no upgrade
