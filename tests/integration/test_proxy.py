"""The proxy core through a real authproxy process in front of a real upstream."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.support.exposition import valid_exposition
from tests.support.processes import ProxyProcess, free_port
from tests.support.raw import raw_request


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    dead_port = free_port()  # nothing listens here
    routes = [
        {"name": "api", "match": {"path_prefix": "/api/"}, "upstream": upstream.url, "strip_prefix": True, "auth": "public"},
        {"name": "based", "match": {"path_prefix": "/based"}, "upstream": upstream.url + "/base", "strip_prefix": True, "auth": "public"},
        {"name": "files", "match": {"path_prefix": "/files/"}, "upstream": upstream.url, "allow_encoded_slashes": True, "auth": "public"},
        {"name": "limited", "match": {"path_prefix": "/limited/"}, "upstream": upstream.url, "strip_prefix": True,
         "max_body": "1KiB", "auth": "public"},
        {"name": "keephost", "match": {"path_prefix": "/keephost/"}, "upstream": upstream.url, "preserve_host": True, "auth": "public"},
        {"name": "slow", "match": {"path_prefix": "/slowroute/"}, "upstream": upstream.url, "strip_prefix": True,
         "timeouts": {"connect": "1s", "read": "300ms"}, "auth": "public"},
        {"name": "dead", "match": {"path_prefix": "/dead/"}, "upstream": f"http://127.0.0.1:{dead_port}", "auth": "public"},
        {"name": "readonly", "match": {"path_prefix": "/readonly/", "methods": ["GET"]}, "upstream": upstream.url, "auth": "public"},
        {"name": "tenant", "match": {"host": "*.tenants.test"}, "upstream": upstream.url, "auth": "public"},
        {"name": "admin", "match": {"path_prefix": "/admin"}, "upstream": upstream.url, "auth": "public"},
        {"name": "root", "match": {"path_prefix": "/"}, "upstream": upstream.url, "auth": "public"},
    ]
    # The root catch-all exists only on host "www.test" so other hosts can see 404.
    routes[-1]["match"]["host"] = "www.test"
    server = ProxyProcess({"routes": routes}, tmp_path_factory.mktemp("proxy"))
    yield server
    server.stop()


async def get_json(session, url, **kwargs):
    async with session.get(url, **kwargs) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def header_map(echo):
    result = {}
    for name, value in echo["headers"]:
        result.setdefault(name.lower(), []).append(value)
    return result


async def test_forwards_with_strip_prefix_and_query(proxy):
    async with aiohttp.ClientSession() as session:
        echo = await get_json(session, proxy.url + "/api/items/7?sort=asc&token=abc")
    assert echo["path"] == "/items/7"
    assert echo["query"] == "sort=asc&token=abc"


async def test_base_path_of_upstream(proxy):
    async with aiohttp.ClientSession() as session:
        echo = await get_json(session, proxy.url + "/based/x")
    assert echo["path"] == "/base/x"


async def test_host_header_and_preserve_host(proxy, upstream):
    async with aiohttp.ClientSession() as session:
        plain = await get_json(session, proxy.url + "/api/x")
        kept = await get_json(session, proxy.url + "/keephost/x")
    assert header_map(plain)["host"] == [f"127.0.0.1:{upstream.port}"]
    assert header_map(kept)["host"] == [f"127.0.0.1:{proxy.port}"]


async def test_no_route_is_404_json_and_html(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + "/nowhere") as response:
            assert response.status == 404
            body = await response.json()
            assert body["error"] == "not_found" and body["request_id"] == response.headers["X-Request-Id"]
        async with session.get(proxy.url + "/nowhere", headers={"Accept": "text/html"}) as response:
            assert response.status == 404
            assert response.content_type == "text/html"
            assert "Not found" in await response.text()


async def test_method_rule(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + "/readonly/x") as response:
            assert response.status == 200
        async with session.head(proxy.url + "/readonly/x") as response:
            assert response.status == 200
        async with session.post(proxy.url + "/readonly/x", data=b"x") as response:
            assert response.status == 404


async def test_wildcard_host(proxy):
    async with aiohttp.ClientSession() as session:
        echo = await get_json(session, proxy.url + "/t", headers={"Host": "acme.tenants.test"})
        assert echo["path"] == "/t"
        async with session.get(proxy.url + "/t", headers={"Host": "tenants.test"}) as response:
            assert response.status == 404


@pytest.mark.parametrize(
    ("target", "status", "route", "upstream_path"),
    [
        ("/api/a/../../admin/secret", 200, "admin", "/admin/secret"),  # reaches only what /admin reaches
        ("/api/a/%2e%2e/%2E%2e/admin/secret", 200, "admin", "/admin/secret"),
        ("/api/%2e%2e/admin", 200, "admin", "/admin"),
        ("//admin//x", 200, "admin", "/admin/x"),
        ("/api/a%2F..%2F..%2Fadmin", 400, "api", None),  # encoded slash on a route that does not allow it
        ("/api/a%5c..%5cadmin", 400, "api", None),
        ("/files/a%2Fb", 200, "files", "/files/a%2Fb"),  # allowed on this route, forwarded still encoded
        ("/api/a\\..\\admin", 400, None, None),
        ("/api/%00", 400, None, None),
        ("/api/%zz", 400, None, None),
        ("/api/..;/admin", 400, None, None),  # Tomcat/Jetty would read "..;" as ".."
        ("/api/x%41y", 200, "api", "/xAy"),
        ("/based/..%2f..", 400, "based", None),
    ],
)
async def test_hostile_paths(proxy, target, status, route, upstream_path):
    request_id = f"hostile-{abs(hash(target))}"
    request = f"GET {target} HTTP/1.1\r\nHost: h.test\r\nX-Request-Id: {request_id}\r\nConnection: close\r\n\r\n"
    got_status, _, body = await raw_request(proxy.port, request.encode())
    assert got_status == status, body
    if upstream_path is not None:
        assert json.loads(body)["raw_path"] == upstream_path
    else:
        assert b"raw_path" not in body  # never reached the upstream
    # what was matched is what was forwarded: the access log names the route that served it
    assert (await proxy.access_record(request_id))["route"] == route


@pytest.mark.parametrize(
    "host", ["evil.test/x.tenants.test", "evil.test@x.tenants.test", "x.tenants.test:abc", "a b.tenants.test"]
)
async def test_malformed_host_header_rejected(proxy, host):
    request = f"GET /t HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    status, _, body = await raw_request(proxy.port, request)
    assert status == 400 and b"raw_path" not in body


async def test_absolute_form_target(proxy):
    request = b"GET http://h.test/api/abs?q=1 HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n"
    status, _, body = await raw_request(proxy.port, request)
    assert status == 200
    assert json.loads(body)["raw_path"] == "/abs?q=1"


async def test_hop_by_hop_request_headers_removed(proxy):
    request = (
        b"GET /api/h HTTP/1.1\r\nHost: h.test\r\nConnection: close, X-Drop-Me\r\nX-Drop-Me: 1\r\n"
        b"Keep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\nX-Keep: yes\r\n\r\n"
    )
    status, _, body = await raw_request(proxy.port, request)
    assert status == 200
    seen = header_map(json.loads(body))
    for name in ("x-drop-me", "keep-alive", "te", "proxy-authorization"):
        assert name not in seen
    assert seen["x-keep"] == ["yes"]


async def test_hop_by_hop_response_headers_removed(proxy):
    status, headers, body = await raw_request(proxy.port, b"GET /api/hop HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert status == 200 and body == b"hop"
    assert "x-secret-hop" not in headers and "keep-alive" not in headers
    assert headers["x-kept"] == "1"


async def test_forwarded_headers_from_untrusted_peer_replaced(proxy):
    async with aiohttp.ClientSession() as session:
        echo = await get_json(
            session,
            proxy.url + "/api/x",
            headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.test",
                     "Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6"},
        )
    seen = header_map(echo)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{proxy.port}"]
    assert "forwarded" not in seen and "x-real-ip" not in seen


async def test_forwarded_headers_from_trusted_peer_kept(upstream, tmp_path):
    trusting = ProxyProcess(
        {"trusted_proxies": ["127.0.0.0/8"], "routes": [{"name": "all", "upstream": upstream.url, "auth": "public"}]},
        tmp_path,
    )
    try:
        async with aiohttp.ClientSession() as session:
            echo = await get_json(
                session,
                trusting.url + "/x",
                headers={"X-Forwarded-For": "198.51.100.4", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.test"},
            )
        seen = header_map(echo)
        assert seen["x-forwarded-for"] == ["198.51.100.4, 127.0.0.1"]
        assert seen["x-forwarded-proto"] == ["https"]
        assert seen["x-forwarded-host"] == ["public.test"]
    finally:
        trusting.stop()
    access = [r for r in trusting.access_records() if r["path"] == "/x"]
    assert access and access[0]["client"] == "198.51.100.4"  # the original client, from the trusted chain


async def test_request_id_propagated_or_generated(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + "/api/x", headers={"X-Request-Id": "given-id-1"}) as response:
            echo = await response.json()
            assert response.headers["X-Request-Id"] == "given-id-1"
        assert header_map(echo)["x-request-id"] == ["given-id-1"]
        async with session.get(proxy.url + "/api/x") as response:
            generated = response.headers["X-Request-Id"]
            echo = await response.json()
        assert len(generated) == 32 and header_map(echo)["x-request-id"] == [generated]


async def test_head_and_empty_statuses(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.head(proxy.url + "/api/download/12345") as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == "12345"
            assert await response.read() == b""
        for code in (204, 304):
            async with session.get(proxy.url + f"/api/status/{code}") as response:
                assert response.status == code
                assert response.headers["ETag"] == '"v1"'
                assert await response.read() == b""
        async with session.get(proxy.url + "/api/status/418") as response:
            assert response.status == 418 and await response.text() == "status 418"
    # on one keep-alive connection, a 304 and a HEAD must not desynchronise the stream
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"HEAD /api/download/99 HTTP/1.1\r\nHost: h\r\n\r\nGET /api/status/304 HTTP/1.1\r\nHost: h\r\n\r\n"
                 b"GET /api/status/201 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.count(b"HTTP/1.1 ") == 3
    assert data.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 304" in data and b"HTTP/1.1 201" in data
    assert data.rstrip().endswith(b"status 201")


async def test_chunked_request_and_response(proxy):
    async def body():
        for _ in range(10):
            yield b"y" * 1000

    async with aiohttp.ClientSession() as session:
        async with session.post(proxy.url + "/api/upload", data=body()) as response:
            assert (await response.json())["received"] == 10000
        async with session.get(proxy.url + "/api/download/300000?chunked=1") as response:
            assert response.headers.get("Transfer-Encoding") == "chunked"
            assert len(await response.read()) == 300000


async def test_expect_100_continue(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /api/upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"hello")
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert b"200 OK" in rest and b'"received": 5' in rest


async def test_expect_refused_before_body_when_too_large(proxy):
    request = b"POST /limited/upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    status, _, body = await raw_request(proxy.port, request)
    assert status == 413
    assert b"limit" in body


async def test_max_body(proxy):
    async def chunks(n):
        for _ in range(n):
            yield b"z" * 512

    async with aiohttp.ClientSession() as session:
        async with session.post(proxy.url + "/limited/upload", data=b"a" * 1024) as response:
            assert response.status == 200
        async with session.post(proxy.url + "/limited/upload", data=b"a" * 1025) as response:
            assert response.status == 413
            assert (await response.json())["error"] == "payload_too_large"
        async with session.post(proxy.url + "/limited/upload", data=chunks(4)) as response:
            assert response.status == 413  # chunked: counted while streaming


async def test_unknown_expectation(proxy):
    request = b"POST /api/upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: magic\r\nConnection: close\r\n\r\nx"
    status, _, _ = await raw_request(proxy.port, request)
    assert status == 417


async def test_upstream_refused_is_502(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + "/dead/x") as response:
            assert response.status == 502
            body = await response.json()
            assert body["error"] == "bad_gateway" and body["request_id"]
            assert "127.0.0.1" not in json.dumps(body)  # no internal addresses
        async with session.get(proxy.url + "/dead/x", headers={"Accept": "text/html,*/*"}) as response:
            assert response.status == 502 and response.content_type == "text/html"
            page = await response.text()
            assert "Traceback" not in page and "Service unavailable" in page


async def test_upstream_timeout_is_504(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + "/slowroute/slow/1500") as response:
            assert response.status == 504
            assert (await response.json())["error"] == "gateway_timeout"
        async with session.get(proxy.url + "/slowroute/slow/10") as response:
            assert response.status == 200


async def test_upstream_dies_mid_body_cuts_the_client(proxy):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.get(proxy.url + "/api/truncated", headers={"X-Request-Id": "truncated-1"}) as response:
                assert response.status == 200
                await response.read()
    record = await proxy.access_record("truncated-1")
    assert record["status"] == 502 and record["upstream_status"] == 200  # the upstream failed, not the client


async def test_oversized_header_rejected(proxy):
    request = b"GET /api/x HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 9000 + b"\r\nConnection: close\r\n\r\n"
    status, _, _ = await raw_request(proxy.port, request)
    assert status in (400, 431)


async def test_websocket_echo_both_ways(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(proxy.ws_url + "/api/ws", protocols=("superchat",), autoping=False) as ws:
            assert ws.protocol == "superchat"
            await ws.send_str("hello")
            assert (await ws.receive_str(timeout=5)) == "hello"
            payload = bytes(range(256)) * 1000
            await ws.send_bytes(payload)
            assert (await ws.receive_bytes(timeout=5)) == payload
            await ws.ping(b"p1")
            # the upstream saw our ping (it reports it) and answered with a pong that reached us
            kinds = {(await ws.receive(timeout=5)).type for _ in range(2)}
            assert kinds == {aiohttp.WSMsgType.PONG, aiohttp.WSMsgType.TEXT}
            await ws.send_str("headers")
            upstream_headers = json.loads(await ws.receive_str(timeout=5))
            assert upstream_headers["X-Forwarded-For"] == "127.0.0.1"
            await ws.send_str("close:4321")
            closing = await ws.receive(timeout=5)
            assert closing.type == aiohttp.WSMsgType.CLOSE
            assert closing.data == 4321


async def test_websocket_client_close_code_reaches_upstream(proxy):
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(proxy.ws_url + "/api/ws")
        await ws.send_str("x")
        assert await ws.receive_str(timeout=5) == "x"
        await ws.close(code=4000, message=b"done")
        assert ws.close_code == 4000  # the upstream echoed our code back through the proxy


async def test_malformed_websocket_handshake_is_400(proxy):
    request = (b"GET /api/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 13\r\nConnection: close\r\n\r\n")
    status, _, body = await raw_request(proxy.port, request)
    assert status == 400 and b"invalid WebSocket handshake" in body


async def test_client_aborting_a_download_is_logged_as_499(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /api/download/100000000 HTTP/1.1\r\nHost: h\r\nX-Request-Id: aborted-download\r\n\r\n")
    await writer.drain()
    await reader.readexactly(1024)
    writer.transport.abort()
    assert (await proxy.access_record("aborted-download"))["status"] == 499
    assert "Traceback" not in proxy.logs() and "Error handling request" not in proxy.logs()


async def test_websocket_refused_by_upstream(proxy):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(proxy.ws_url + "/api/ws-forbidden")
        assert caught.value.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(proxy.ws_url + "/dead/ws")
        assert caught.value.status == 502


async def test_no_upstream_errors_on_healthy_routes(proxy):
    await asyncio.sleep(0.1)
    # a desynchronised keep-alive connection (e.g. a body after HEAD) shows as invalid_response
    errors = [r for r in proxy.log_records() if r.get("event") == "upstream_error" and r["kind"] == "invalid_response"]
    assert errors == []


async def test_access_log_lines(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.get(
            proxy.url + "/api/logged?code=SECRETCODE&x=1",
            headers={"Cookie": "session=COOKIEVALUE", "Authorization": "Bearer TOKENVALUE", "X-Request-Id": "log-test-1"},
        ) as response:
            assert response.status == 200
    records = await proxy.access_lines(lambda r: r["request_id"] == "log-test-1")
    assert len(records) == 1
    record = records[0]
    assert record["path"] == "/api/logged?code=&x="
    assert record["method"] == "GET" and record["route"] == "api"
    assert record["status"] == 200 and record["upstream_status"] == 200
    assert record["duration_ms"] >= 0 and "time" in record and record["client"] == "127.0.0.1"
    text = proxy.logs()
    for secret in ("SECRETCODE", "COOKIEVALUE", "TOKENVALUE"):
        assert secret not in text


async def test_admin_endpoints(proxy):
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.admin_url + "/healthz") as response:
            assert response.status == 200
        async with session.get(proxy.admin_url + "/readyz") as response:
            assert response.status == 200 and (await response.json())["status"] == "ready"
        async with session.get(proxy.url + "/api/metrics-probe") as response:
            assert response.status == 200
        async with session.get(proxy.admin_url + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
    valid_exposition(text)
    assert 'authproxy_requests_total{code="200",method="GET",route="api"}' in text
    assert "authproxy_ready 1.0" in text
    assert 'authproxy_upstream_errors_total{kind="refused",route="dead"}' in text


async def test_websocket_upgrade_answered_like_a_plain_page_is_relayed_as_it_is(proxy):
    """Hardening item 5: an upstream that answers an upgrade without switching protocols
    (here the echo page: 200, JSON) has its answer relayed, status, headers and body; it
    is not a 502 and not an upstream error. Before: 502 and an invalid_response error."""
    errors = proxy.metric("authproxy_upstream_errors_total", route="api")
    handshake = ("GET /api/not-a-socket?q=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "X-Request-Id: ws-plain-page\r\n\r\n").encode()
    status, headers, body = await raw_request(proxy.port, handshake)
    assert status == 200 and headers["content-type"].startswith("application/json")
    echo = json.loads(body)
    assert echo["path"] == "/not-a-socket" and echo["query"] == "q=1"
    assert "upgrade" not in headers and headers.get("connection") == "close"
    async with aiohttp.ClientSession() as session:  # a WebSocket client sees the status, as from the app itself
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(proxy.ws_url + "/api/ws-forbidden")
        assert caught.value.status == 403
    # the app's own refusal page, not ours
    status, _, body = await raw_request(proxy.port, handshake.replace(b"/not-a-socket?q=1", b"/ws-forbidden"))
    assert status == 403 and body == b"no websockets for you"
    record = await proxy.access_record("ws-plain-page")
    assert record["status"] == 200 and record["upstream_status"] == 200
    assert proxy.metric("authproxy_upstream_errors_total", route="api") == errors
