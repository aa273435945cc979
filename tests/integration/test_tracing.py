"""OpenTelemetry traces end to end: two real authproxy replicas sharing a DynamoDB table
(moto_server), the real oidc-provider, the test upstream (its echo shows the trace context
it received) and a real OTLP/HTTP receiver decoding what the replicas export.

Replica A trusts no proxy (the test client is an untrusted caller) and sets every
``tracing:`` key itself; replica B trusts 127.0.0.1 and takes its tracing settings from
the OTEL_* environment variables alone.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.support.moto import MotoServer
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, query_of, sign_in_at_provider
from tests.support.otlp import CLIENT, INTERNAL, SERVER, STATUS_ERROR, OtlpReceiver, Span
from tests.support.processes import ProxyProcess, free_port

SESSION_SECRET = "tracing-session-secret-0123456789-abcdefgh"
COLLECTOR_KEY = "collector-key-0123456789"
ACCESS_TOKEN_TTL = 4  # seconds: with refresh_before_expiry 1 s, a refresh is due 3 s after sign-in
TABLE = "traced-sessions"


@pytest.fixture(scope="module")
def setup(upstream, tmp_path_factory):
    receiver = OtlpReceiver()
    moto = MotoServer()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"], accessTokenTtl=ACCESS_TOKEN_TTL)
    workdir = tmp_path_factory.mktemp("tracing")

    def settings(**extra):
        return {
            "public_url": public,
            "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                     "scopes": ["openid", "email", "profile", "groups", "offline_access"],
                     "authorize_params": {"prompt": "consent"}},
            "session": {"secrets": [SESSION_SECRET], "refresh_before_expiry": "1s"},
            "store": {"backend": "dynamodb",
                      "dynamodb": {"table": TABLE, "region": "eu-west-1", "endpoint_url": moto.url,
                                   "create_table": True}},
            "routes": [{"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream.url, "auth": "login",
                        "inject": {"X-User-Email": "{claims.email}", "Authorization": "Bearer {access_token}"}},
                       {"name": "open", "match": {"path_prefix": "/open"}, "upstream": upstream.url,
                        "auth": "public"},
                       {"name": "sockets", "match": {"path_prefix": "/sock"}, "upstream": upstream.url,
                        "auth": "public", "strip_prefix": True}],
            **extra,
        }

    quick = {"OTEL_BSP_SCHEDULE_DELAY": "50"}  # ms between exports: the test waits less
    replica_a = ProxyProcess(
        settings(tracing={"endpoint": receiver.url, "sampling_ratio": 1, "service_name": "authproxy-a",
                          "headers": {"X-Collector-Key": COLLECTOR_KEY}}),
        workdir, name="a", port=port,
        # the config's keys win over these
        env={**quick, "OTEL_SERVICE_NAME": "not-this-name",
             "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/x"},
    )
    replica_b = ProxyProcess(
        settings(tracing={}, trusted_proxies=["127.0.0.1/32"]), workdir, name="b",
        env={**quick, "OTEL_SERVICE_NAME": "authproxy-b", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
             "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test"},
    )
    yield replica_a, replica_b, provider, receiver
    for process in (replica_a, replica_b, provider, moto, receiver):
        process.stop()


def browser():
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"})


async def sign_in(session: aiohttp.ClientSession, proxy: ProxyProcess, user: str) -> str:
    """Signed in through ``proxy``; the callback URL it was sent back to (with code and state)."""
    async with session.get(proxy.url + "/oauth2/start", params={"rd": "/app/"}, allow_redirects=False) as response:
        assert response.status == 302
        authorize = response.headers["Location"]
    callback = await sign_in_at_provider(session, authorize, user, proxy.url + "/oauth2/callback")
    async with session.get(callback, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
    return callback


def traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def ours(value: str) -> tuple[str, str, bool]:
    """A traceparent we sent as (trace id, parent id, sampled). For a new root a recent SDK also
    sets Trace Context Level 2's random-trace-id flag (0x02): only the sampled bit is compared."""
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00"
    return trace_id, span_id, bool(int(flags, 16) & 1)


async def get_echo(session: aiohttp.ClientSession, url: str, **headers: str) -> dict[str, list[str]]:
    """The upstream's echo of the request it received: header name (lower case) -> values."""
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        echo = await response.json()
    seen: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


def one(spans: list[Span], **where) -> Span:
    found = [span for span in spans if all(_matches(span, key, value) for key, value in where.items())]
    assert len(found) == 1, (where, [(s.name, s.attributes) for s in found])
    return found[0]


def _matches(span: Span, key: str, value) -> bool:
    if key in ("name", "kind", "trace_id", "parent_span_id", "service"):
        return getattr(span, key) == value
    return span.get(key.replace("__", ".")) == value


def request_span(request_id: str):
    return lambda spans: any(s.kind == SERVER and s.get("authproxy.request_id") == request_id for s in spans)


def trace_with(request_id: str, *names: str):
    """A predicate: the request's server span arrived, and spans named ``names`` in its trace."""
    def ready(spans: list[Span]) -> bool:
        servers = [s for s in spans if s.kind == SERVER and s.get("authproxy.request_id") == request_id]
        if not servers:
            return False
        present = {s.name for s in spans if s.trace_id == servers[0].trace_id}
        return all(name in present for name in names)
    return ready


def assert_parents_within(trace: list[Span], root: Span) -> None:
    """Every span of the trace hangs, through parents in the trace, from ``root``."""
    by_id = {span.span_id: span for span in trace}
    for span in trace:
        hops = 0
        while span is not root:
            assert span.parent_span_id in by_id, f"{span.name}'s parent {span.parent_span_id} is not in the trace"
            span = by_id[span.parent_span_id]
            hops += 1
            assert hops < 20


async def test_a_signed_in_request_through_a_trusted_proxy_is_one_trace(setup):
    """Sign in on A; the next request reaches B (another replica: its session cache is cold,
    so the session is read from DynamoDB) from a trusted proxy that sends its traceparent."""
    replica_a, replica_b, _, receiver = setup
    their_trace, their_span = secrets.token_hex(16), secrets.token_hex(8)
    request_id = "trusted-" + secrets.token_hex(6)
    async with browser() as session:
        await sign_in(session, replica_a, "tracy-" + secrets.token_hex(3))
        seen = await get_echo(session, replica_b.url + "/app/one?page=2", **{
            "traceparent": traceparent(their_trace, their_span), "tracestate": "upstreamvendor=abc",
            "X-Request-Id": request_id})
    spans = await receiver.wait_for(trace_with(request_id, "authproxy.identify", "authproxy.store get", "GET"))
    server = one(spans, kind=SERVER, **{"authproxy__request_id": request_id})
    trace = [span for span in spans if span.trace_id == server.trace_id]
    # continued: their trace, their span as our parent
    assert server.trace_id == their_trace and server.parent_span_id == their_span and not server.links
    assert server.service == "authproxy-b"  # OTEL_SERVICE_NAME
    assert server.resource["deployment.environment.name"] == "test"  # OTEL_RESOURCE_ATTRIBUTES
    assert server.name == "GET"
    assert server.attributes | {"authproxy.request_id": ""} == {
        "http.request.method": "GET", "url.scheme": "http", "url.path": "/app/one", "url.query": "page=REDACTED",
        "authproxy.route": "app", "http.response.status_code": 200, "authproxy.outcome": "allowed",
        "authproxy.request_id": ""}
    identify = one(trace, name="authproxy.identify")
    assert identify.parent_span_id == server.span_id and identify.kind == INTERNAL
    assert identify.attributes == {"authproxy.route": "app", "authproxy.auth_mode": "login",
                                   "authproxy.via": "session", "authproxy.outcome": "identified"}
    read = one(trace, name="authproxy.store get")
    assert read.parent_span_id == identify.span_id and read.kind == CLIENT
    assert read.attributes == {"authproxy.store.backend": "dynamodb", "db.system.name": "aws.dynamodb",
                               "db.operation.name": "get", "authproxy.outcome": "ok"}
    call = one(trace, kind=CLIENT, name="GET")
    assert call.parent_span_id == server.span_id
    assert call["http.response.status_code"] == 200 and call["authproxy.route"] == "app"
    assert call["url.full"].endswith("/app/one?page=REDACTED") and call["server.address"] == "127.0.0.1"
    assert_parents_within(trace, server)  # a refresh (due 3 s after sign-in) may add spans: under it too
    # the upstream's parent is our upstream call, in their trace; their tracestate carried on
    assert seen["traceparent"] == [traceparent(their_trace, call.span_id)]
    assert seen["tracestate"] == ["upstreamvendor=abc"]


async def test_an_unsampled_trusted_parent_is_followed(setup):
    """A trusted proxy that did not sample: nothing recorded, the decision passed on."""
    _, replica_b, _, receiver = setup
    unsampled_trace, later_trace = secrets.token_hex(16), secrets.token_hex(16)
    async with aiohttp.ClientSession() as session:
        seen = await get_echo(session, replica_b.url + "/open/x",
                              traceparent=traceparent(unsampled_trace, secrets.token_hex(8), sampled=False))
        request_id = "later-" + secrets.token_hex(6)
        await get_echo(session, replica_b.url + "/open/y", traceparent=traceparent(later_trace, secrets.token_hex(8)),
                       **{"X-Request-Id": request_id})
    version, trace_id, span_id, flags = seen["traceparent"][0].split("-")
    assert (version, trace_id, flags) == ("00", unsampled_trace, "00") and len(span_id) == 16
    # Spans leave in the order they ended: once the later request's arrived, an earlier one would have too.
    spans = await receiver.wait_for(request_span(request_id))
    assert not [span for span in spans if span.trace_id == unsampled_trace]


async def test_an_untrusted_callers_trace_is_not_joined(setup):
    """A (no trusted proxies): a new trace with a link to the caller's, and the upstream sees ours."""
    replica_a, _, _, receiver = setup
    their_trace, their_span = secrets.token_hex(16), secrets.token_hex(8)
    request_id = "untrusted-" + secrets.token_hex(6)
    async with browser() as session:
        await sign_in(session, replica_a, "tracy-" + secrets.token_hex(3))
        seen = await get_echo(session, replica_a.url + "/app/two", **{
            "traceparent": traceparent(their_trace, their_span), "tracestate": "evil=1", "X-Request-Id": request_id})
        again = "untrusted-again-" + secrets.token_hex(6)  # a session already known: still its identify span
        await get_echo(session, replica_a.url + "/app/two", **{"X-Request-Id": again})
    await receiver.wait_for(trace_with(again, "authproxy.identify", "GET"))
    spans = await receiver.wait_for(trace_with(request_id, "authproxy.identify", "GET"))
    server = one(spans, kind=SERVER, **{"authproxy__request_id": request_id})
    assert server.trace_id != their_trace and server.parent_span_id == ""  # a new root
    assert [(link.trace_id, link.span_id) for link in server.links] == [(their_trace, their_span)]
    assert server.service == "authproxy-a"  # tracing.service_name wins over OTEL_SERVICE_NAME
    call = one(spans, kind=CLIENT, name="GET", trace_id=server.trace_id)
    assert call.parent_span_id == server.span_id
    assert [ours(value) for value in seen["traceparent"]] == [(server.trace_id, call.span_id, True)]
    assert "tracestate" not in seen  # theirs is not passed on, and ours is empty
    assert not [span for span in receiver.snapshot() if span.trace_id == their_trace]
    # the configured export headers (tracing.headers), and the configured endpoint, were used
    assert all(headers.get("x-collector-key") == COLLECTOR_KEY for headers, request in
               zip(receiver.headers, receiver.requests) if _service(request) == "authproxy-a")


async def test_a_websocket_upstream_sees_the_request_span_as_its_parent(setup):
    replica_a, _, _, receiver = setup
    their_trace = secrets.token_hex(16)
    request_id = "socket-" + secrets.token_hex(6)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(replica_a.ws_url + "/sock/ws", headers={
                "traceparent": traceparent(their_trace, secrets.token_hex(8)), "tracestate": "evil=1",
                "X-Request-Id": request_id}) as ws:
            await ws.send_str("headers")
            seen = {name.lower(): value for name, value in json.loads(await ws.receive_str(timeout=5)).items()}
    spans = await receiver.wait_for(request_span(request_id))
    server = one(spans, kind=SERVER, **{"authproxy__request_id": request_id})
    assert server["authproxy.route"] == "sockets" and server["http.response.status_code"] == 101
    assert server.trace_id != their_trace
    assert ours(seen["traceparent"]) == (server.trace_id, server.span_id, True)
    assert "tracestate" not in seen


def _service(request) -> str:
    for resource_spans in request.resource_spans:
        for pair in resource_spans.resource.attributes:
            if pair.key == "service.name":
                return pair.value.string_value
    return ""


async def test_the_callback_trace_and_no_secret_in_any_span(setup):
    """The sign-in callback: its IdP call and the session's creation in the store under it;
    and nowhere in anything exported a token, cookie, email, code or state value."""
    replica_a, _, provider, receiver = setup
    user = "tracy-" + secrets.token_hex(3)
    async with browser() as session:
        callback = await sign_in(session, replica_a, user)
        request_id = "after-" + secrets.token_hex(6)
        seen = await get_echo(session, replica_a.url + "/app/three?email=" + user + "%40example.com",
                              **{"X-Request-Id": request_id})
        cookies = [cookie.value for cookie in session.cookie_jar if len(cookie.value) >= 8]  # not the cleared ones
    assert seen["x-user-email"] == [f"{user}@example.com"]  # the upstream got it: spans must not
    query = query_of(callback)
    code, state = query["code"], query["state"]
    port = urlsplit(provider.issuer).port

    def callback_traced(spans: list[Span]) -> bool:
        servers = [s for s in spans if s.kind == SERVER and s.get("url.path") == "/oauth2/callback"
                   and s.service == "authproxy-a"]
        return any(s.parent_span_id == server.span_id and s.get("authproxy.peer") == "idp"
                   for server in servers for s in spans) and request_span(request_id)(spans)

    spans = await receiver.wait_for(callback_traced)
    callbacks = [s for s in spans if s.kind == SERVER and s.get("url.path") == "/oauth2/callback"]
    assert callbacks and all(s["authproxy.route"] == "(sign-in)" for s in callbacks)
    assert all("code=REDACTED" in s["url.query"] and "state=REDACTED" in s["url.query"] for s in callbacks)
    server = next(s for s in callbacks if any(c.parent_span_id == s.span_id and c.get("authproxy.peer") == "idp"
                                              for c in spans))
    trace = [s for s in spans if s.trace_id == server.trace_id]
    token_call = one(trace, kind=CLIENT, **{"authproxy__peer": "idp"})
    assert token_call.parent_span_id == server.span_id and token_call.name == "POST"
    assert token_call["url.full"] == f"http://127.0.0.1:{port}/token" and token_call["server.port"] == port
    assert token_call["http.response.status_code"] == 200
    create = one(trace, name="authproxy.store create")
    assert_parents_within(trace, server)
    assert create["authproxy.outcome"] == "ok"
    # The provider's discovery and keys, fetched at start-up: root spans of their own.
    assert any(s.get("authproxy.peer") == "idp" and s["url.full"].endswith("/jwks") for s in spans)

    exported = receiver.everything_received()
    raw = b"".join(receiver.raw)
    secrets_seen = {
        "code": code, "state": state, "email": f"{user}@example.com", "sub": user,
        "session secret": SESSION_SECRET, "client secret": CLIENT_SECRET, "collector key": COLLECTOR_KEY,
        **{f"cookie {index}": value for index, value in enumerate(cookies)},
        **{f"provider token {index}": token for index, token in enumerate(provider.tokens)},
    }
    assert cookies and provider.tokens
    for what, value in secrets_seen.items():
        assert value not in exported and value.encode() not in raw, f"the {what} is in an exported span"
    assert "eyJ" not in exported  # no JWT (ID tokens)


async def test_a_refresh_is_a_span_under_identify_with_its_idp_and_store_calls(setup):
    replica_a, _, _, receiver = setup
    async with browser() as session:
        await sign_in(session, replica_a, "tracy-" + secrets.token_hex(3))
        seen_ids: list[str] = []

        def refreshed(spans: list[Span]) -> bool:
            return any(s.name == "authproxy.refresh" and s.service == "authproxy-a"
                       and s.trace_id in traces_of(spans, seen_ids) for s in spans)

        # The access token is due 3 s after sign-in: requests until one refreshes it.
        for attempt in range(100):
            request_id = f"refresh-{attempt}-" + secrets.token_hex(4)
            seen_ids.append(request_id)
            await get_echo(session, replica_a.url + "/app/r", **{"X-Request-Id": request_id})
            try:
                spans = await receiver.wait_for(refreshed, timeout=0.2)
                break
            except AssertionError:
                continue
        else:
            raise AssertionError("no refresh span")
    refresh = next(s for s in spans if s.name == "authproxy.refresh" and s.trace_id in traces_of(spans, seen_ids))
    trace = [s for s in spans if s.trace_id == refresh.trace_id]
    identify = one(trace, name="authproxy.identify")
    assert refresh.parent_span_id == identify.span_id and refresh["authproxy.outcome"] == "new_tokens"
    token_call = one(trace, kind=CLIENT, **{"authproxy__peer": "idp"})
    assert token_call.parent_span_id == refresh.span_id and token_call["url.full"].endswith("/token")
    lease = one(trace, name="authproxy.store acquire_refresh_lease")
    write = one(trace, name="authproxy.store update")
    assert lease.parent_span_id == refresh.span_id and lease["authproxy.outcome"] == "acquired"
    assert write.parent_span_id == refresh.span_id and write["authproxy.outcome"] == "ok"
    assert all(s.status_code != STATUS_ERROR for s in trace)


def traces_of(spans: list[Span], request_ids: list[str]) -> set[str]:
    wanted = set(request_ids)
    return {s.trace_id for s in spans if s.kind == SERVER and s.get("authproxy.request_id") in wanted}
