"""The real nginx for tests (tests/support/nginx.py), and the shipped examples for running
authproxy behind nginx (deploy/nginx/authproxy.conf) and Traefik (deploy/traefik/dynamic.yml).

The nginx example runs here against a stand-in for authproxy's /oauth2/auth that keeps its
contract (200 with X-Auth-Request-* and injected headers, 401, 403), so the nginx side is
proven on its own; the real authproxy behind it is another test's business."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
import yaml
import yarl
from aiohttp import web

from authproxy.policy.inject import METHOD_OVERRIDE_NAMES
from authproxy.policy.original import HOST_HEADERS, METHOD_HEADERS, URI_HEADERS
from tests.support.nginx import DEPLOY_EXAMPLE, Nginx, NginxError, deploy_example
from tests.support.processes import ROOT, free_port


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"127.0.0.1:{port}"


async def echo(request: web.Request) -> web.Response:
    """The app: what it was asked, and with which headers."""
    return web.json_response(
        {"method": request.method, "path_qs": request.raw_path, "headers": {k.lower(): v for k, v in request.headers.items()}}
    )


@pytest.fixture
async def app() -> AsyncIterator[str]:
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", echo)
    runner, address = await serve(application)
    yield address
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_nginx_proxies_to_an_upstream(app, http):
    body = """
    server {
        listen 127.0.0.1:{port};
        location / { proxy_pass http://{app}; proxy_set_header X-Via nginx-test; }
    }
    """
    with Nginx(body, app=app) as nginx:
        async with http.get(nginx.url + "/hello?x=1", headers={"X-Client": "yes"}) as response:
            assert response.status == 200
            assert response.headers["Server"].startswith("nginx")
            seen = await response.json()
        assert seen["path_qs"] == "/hello?x=1"
        assert seen["headers"]["x-via"] == "nginx-test" and seen["headers"]["x-client"] == "yes"
        assert '"GET /hello?x=1 HTTP/1.1" 200' in await nginx.logged('"GET /hello?x=1 HTTP/1.1" 200')
        port, prefix = nginx.port, nginx.prefix
        assert (prefix / "nginx.pid").exists() and (prefix / "nginx.conf").read_text().startswith("daemon off;")
    assert refused(port) and not prefix.exists()
    assert nginx.process is not None and nginx.process.poll() is not None
    assert '"GET /hello?x=1 HTTP/1.1" 200' in nginx.access_log()  # still readable after stop()
    assert isinstance(nginx.error_log(), str)


async def test_a_bad_config_raises_with_nginx_message():
    with pytest.raises(NginxError, match='unknown directive "no_such_directive"'):
        Nginx("server { listen 127.0.0.1:{port}; no_such_directive on; }").stop()


async def test_the_port_must_be_free():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(NginxError, match="Address already in use"):
            Nginx("server { listen 127.0.0.1:{port}; return 204; }", port=taken).stop()  # never left running


async def test_the_shipped_nginx_example_passes_nginx_t():
    """Only its three addresses substituted (names like authproxy:8080 would not resolve here)."""
    nginx = Nginx(deploy_example(authproxy="http://127.0.0.1:4180", app="127.0.0.1:3000"), start=False)
    try:
        assert "syntax is ok" in nginx.test()
        assert "server 127.0.0.1:4180;" in nginx.config and "server 127.0.0.1:3000;" in nginx.config
        assert f"listen 127.0.0.1:{nginx.port};" in nginx.config
    finally:
        nginx.stop()


# --- the nginx example end to end, authproxy's forward-auth contract played by a stand-in ---

TOKEN = "Bearer access-token-for-alice"


@pytest.fixture
async def authproxy_stand_in() -> AsyncIterator[tuple[str, list[dict]]]:
    """/oauth2/auth: /public/* passes anyone with no identity; cookie session=alice passes
    (403 under /admin), session=bob is forbidden, no session is 401. /oauth2/start and /oauth2/callback echo what reached them."""
    calls: list[dict] = []

    async def auth(request: web.Request) -> web.Response:
        calls.append({"method": request.method, "headers": {k.lower(): v for k, v in request.headers.items()},
                      "body": await request.read()})
        if request.headers.get("X-Original-URI", "").startswith("/public/"):
            return web.Response()  # a public route: no identity, nothing injected
        session = request.cookies.get("session")
        if session is None:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="authproxy"'})
        if session == "bob" or request.headers.get("X-Original-URI", "").startswith("/admin"):
            return web.Response(status=403)
        return web.Response(headers={
            "X-Auth-Request-User": "alice", "X-Auth-Request-Email": "alice@example.com",
            "X-Auth-Request-Groups": "admins,dev", "Authorization": TOKEN,
        })

    application = web.Application()
    application.router.add_get("/oauth2/auth", auth)
    application.router.add_route("*", "/oauth2/{tail:.*}", echo)
    runner, address = await serve(application)
    yield address, calls
    await runner.cleanup()


@pytest.fixture
async def example(app, authproxy_stand_in) -> AsyncIterator[tuple[Nginx, list[dict]]]:
    authproxy, calls = authproxy_stand_in
    nginx = Nginx(deploy_example(authproxy=authproxy, app=app))
    yield nginx, calls
    nginx.stop()


async def test_example_signed_in_user_reaches_the_app_with_identity_headers(example, http):
    nginx, calls = example
    forged = {"X-User": "mallory", "X-Email": "m@evil.test", "Authorization": "Bearer forged", "Cookie": "session=alice"}
    url = yarl.URL(nginx.url + "/orders/7?a=1&b=%2F", encoded=True)  # sent as it is
    async with http.post(url, data=b"payload", headers=forged) as response:
        assert response.status == 200, await response.text()
        seen = await response.json()
    assert seen["method"] == "POST" and seen["path_qs"] == "/orders/7?a=1&b=%2F"
    headers = seen["headers"]
    assert headers["x-user"] == "alice" and headers["x-email"] == "alice@example.com"
    assert headers["x-groups"] == "admins,dev"
    assert headers["authorization"] == TOKEN
    assert headers["x-forwarded-host"] == f"127.0.0.1:{nginx.port}"
    # the subrequest: the original request described, no body, the client's credentials passed on
    (call,) = calls
    assert call["method"] == "GET" and call["body"] == b""
    sent = call["headers"]
    assert sent["x-original-uri"] == "/orders/7?a=1&b=%2F" and sent["x-original-method"] == "POST"
    assert sent["host"] == f"127.0.0.1:{nginx.port}" and sent["x-forwarded-proto"] == "http"
    assert sent["cookie"] == "session=alice" and sent["authorization"] == "Bearer forged"
    assert "content-length" not in sent or sent["content-length"] == "0"


async def test_example_identity_headers_cannot_be_forged_on_a_public_route(example, http):
    nginx, _ = example
    forged = {"X-User": "mallory", "X-Groups": "admins", "Authorization": "Bearer forged"}
    async with http.get(nginx.url + "/public/x", headers=forged) as response:
        assert response.status == 200
        headers = (await response.json())["headers"]
    assert "x-user" not in headers and "x-groups" not in headers and "authorization" not in headers


async def test_example_denied_user_gets_403(example, http):
    nginx, _ = example
    for cookie, path in (("session=bob", "/x"), ("session=alice", "/admin/x")):
        async with http.get(nginx.url + path, headers={"Cookie": cookie, "Accept": "text/html"},
                            allow_redirects=False) as response:
            assert response.status == 403


async def test_example_browser_without_session_goes_to_sign_in(example, http):
    nginx, _ = example
    async with http.get(nginx.url + "/page?x=1", headers={"Accept": "text/html,*/*"}, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == f"http://127.0.0.1:{nginx.port}/oauth2/start?rd=http://127.0.0.1:{nginx.port}/page?x=1"


async def test_example_api_client_without_session_gets_401(example, http):
    nginx, _ = example
    for method, accept in (("GET", "application/json"), ("POST", "text/html")):
        async with http.request(method, nginx.url + "/api", headers={"Accept": accept}, allow_redirects=False) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="authproxy"'


async def test_example_sign_in_endpoints_reach_authproxy_and_auth_is_internal(example, http):
    nginx, calls = example
    async with http.get(nginx.url + "/oauth2/start?rd=/page", allow_redirects=False) as response:
        seen = await response.json()
    assert seen["path_qs"] == "/oauth2/start?rd=/page"
    assert seen["headers"]["host"] == f"127.0.0.1:{nginx.port}" and seen["headers"]["x-forwarded-proto"] == "http"
    async with http.get(nginx.url + "/oauth2/callback?code=c&state=s", allow_redirects=False) as response:
        assert (await response.json())["path_qs"] == "/oauth2/callback?code=c&state=s"
    async with http.get(nginx.url + "/oauth2/auth", headers={"Cookie": "session=alice"}) as response:
        assert response.status == 404  # internal: only nginx's own subrequests reach it
    assert calls == []  # the sign-in endpoints are not behind auth_request


def test_shipped_example_documents_its_addresses():
    text = DEPLOY_EXAMPLE.read_text()
    header = text.split("\n\n", 1)[0]
    for line in ("server authproxy:8080;", "server app:3000;", "listen 80;"):
        assert line in header and text.count(line) == 2  # once documented, once used


def test_traefik_forward_auth_example():
    config = yaml.safe_load((ROOT / "deploy" / "traefik" / "dynamic.yml").read_text())["http"]
    forward = config["middlewares"]["authproxy"]["forwardAuth"]
    assert forward["address"] == "http://authproxy:8080/oauth2/auth?redirect=1"
    assert forward["trustForwardHeader"] is False  # Traefik describes the request; a client never does
    # none of the client's own descriptions of the request may reach authproxy beside Traefik's
    passed = {name.lower() for name in forward["authRequestHeaders"]}
    assert not passed & {name.lower() for name in URI_HEADERS + METHOD_HEADERS + HOST_HEADERS}
    assert {"cookie", "authorization", "accept"} <= passed  # what authproxy decides on
    assert forward["authResponseHeaders"] == ["X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups",
                                              "Authorization"]
    routers, services = config["routers"], config["services"]
    assert routers["app"]["middlewares"] == ["authproxy", "no-method-override"] and routers["app"]["service"] in services
    cleared = config["middlewares"]["no-method-override"]["headers"]["customRequestHeaders"]
    assert {name.lower() for name, value in cleared.items() if value == ""} == set(METHOD_OVERRIDE_NAMES)
    # the sign-in endpoints are reachable without the middleware, ahead of the app's router
    assert "middlewares" not in routers["authproxy"] and "PathPrefix(`/oauth2/`)" in routers["authproxy"]["rule"]
    assert "!Path(`/oauth2/auth`)" in routers["authproxy"]["rule"]  # forward-auth is for Traefik alone
    assert routers["authproxy"]["priority"] > len(routers["app"]["rule"])  # Traefik's default priority is the rule's length
    authproxy_url = services[routers["authproxy"]["service"]]["loadBalancer"]["servers"][0]["url"]
    assert forward["address"].startswith(authproxy_url + "/")
