"""Everything the bench runs against, started once per run and kept up while rounds interleave.

All on 127.0.0.1, free ports, stopped at the end (``Stack.stop``):
- nginx, the upstream: ``return 200`` with a 1 KiB body on every path, and ``.../check``
  answering with the identity headers it received (the start-up check of each target);
- dynalite (npm, DynamoDB-compatible) holding the session table;
- the test oidc-provider (tests/peers/oidc_provider.mjs) with a resource server whose JWT
  access tokens the bearer rows present;
- the minimal aiohttp pass-through (bench/minimal_proxy.py), N processes sharing the port;
- authproxy per worker count: one with the session cache as configured by default (30 s TTL)
  and, for the "store read per request" rows, one whose cache TTL is 1 ms (there is no knob that
  turns the cache off; ``store.cache.ttl`` must be positive);
- Apache httpd + mod_auth_openidc per worker count (bench/apache.py).

Sessions come from real sign-ins: through authproxy's /oauth2/start and the provider's login
and consent forms (one session for the cached rows, ``COLD_SESSIONS`` for the cold rows, used
in turn so concurrent requests rarely share one store read), and through mod_auth_openidc's
own code flow for Apache.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import apache as apache_peer  # noqa: E402
from tests.support.dynalite import Dynalite  # noqa: E402
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, sign_in_at_provider  # noqa: E402
from tests.support.tls import TestCA  # noqa: E402
from tests.support.processes import ProxyProcess, child_env, free_port, stop_process, wait_for_port  # noqa: E402

BODY = "x" * 1024  # a 1 KiB response, a typical small API answer
AUDIENCE = "https://api.bench.test"  # the bearer rows' resource (aud of the JWT access tokens)
SCOPE = "bench/read"
USER = "alice"  # alice@example.com, verified, groups [admins]
COLD_SESSIONS = 64
INJECT = {"Authorization": "Bearer {access_token}", "X-User-Email": "{claims.email}", "X-User-Groups": "{claims.groups}"}
CLAIM_HEADERS = {"X-User-Email": "{claims.email}", "X-User-Groups": "{claims.groups}"}

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location ~ /check$ {{
            default_type text/plain;
            return 200 "authorization=$http_authorization|email=$http_x_user_email|groups=$http_x_user_groups";
        }}
        location / {{ default_type text/plain; return 200 "{body}"; }}
    }}
    # The provider's JWKS over HTTPS, for mod_auth_openidc (OIDCOAuthVerifyJwksUri takes https only).
    server {{
        listen 127.0.0.1:{jwks_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location = /jwks {{ proxy_pass http://127.0.0.1:{provider_port}/jwks; }}
    }}
}}
"""


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx:
    def __init__(self, work: Path, provider_port: int):
        self.port, self.jwks_port = free_port(), free_port()
        work.mkdir(parents=True, exist_ok=True)
        cert, key, _ = TestCA(work / "tls").issue("jwks")
        (work / "nginx.conf").write_text(NGINX_CONF.format(work=work, port=self.port, body=BODY, jwks_port=self.jwks_port,
                                                           cert=cert, key=key, provider_port=provider_port))
        self.process = subprocess.Popen([nginx_binary(), "-c", str(work / "nginx.conf"), "-p", str(work)],
                                        stderr=subprocess.DEVNULL)
        wait_for_port(self.port, process=self.process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_uri(self) -> str:
        return f"https://127.0.0.1:{self.jwks_port}/jwks"

    def stop(self) -> None:
        stop_process(self.process)


class Minimal:
    """bench/minimal_proxy.py, ``workers`` processes sharing one port (SO_REUSEPORT)."""

    def __init__(self, workers: int, upstream: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.processes = [
            subprocess.Popen([sys.executable, str(HERE / "minimal_proxy.py"), str(self.port), upstream],
                             env=env or child_env(), stderr=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        wait_for_port(self.port, process=self.processes[0])
        time.sleep(0.3)  # every process bound

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)


def authproxy_config(public: str, workers: int, issuer: str, upstream: str, table_url: str, cache_ttl: str,
                     access_log: bool = True) -> dict:
    return {
        "public_url": public,
        "workers": workers,
        "log": {"access": access_log},
        "forward_auth": {"callers": ["127.0.0.1/32"]},
        "oidc": {"provider": "generic", "issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                 "scopes": ["openid", "email", "profile", "groups"], "audiences": [AUDIENCE]},
        "session": {"secrets": ["bench-session-secret-0123456789-0123456789"]},
        "store": {"backend": "dynamodb", "cache": {"ttl": cache_ttl},
                  "dynamodb": {"table": "bench", "region": "eu-west-1", "endpoint_url": table_url, "create_table": True}},
        "routes": [
            {"name": "public", "match": {"path_prefix": "/public/"}, "upstream": upstream, "auth": "public"},
            {"name": "login", "match": {"path_prefix": "/login/"}, "upstream": upstream, "auth": "login"},
            {"name": "inject", "match": {"path_prefix": "/inject/"}, "upstream": upstream, "auth": "login",
             "inject": INJECT},
            {"name": "bearer", "match": {"path_prefix": "/bearer/"}, "upstream": upstream, "auth": "bearer",
             "pass_authorization": True, "inject": CLAIM_HEADERS},
        ],
    }


def cookie_header(jar: aiohttp.CookieJar, url: str) -> str:
    return "; ".join(f"{name}={morsel.value}" for name, morsel in jar.filter_cookies(URL(url)).items())


async def authproxy_sign_in(public: str) -> str:
    """A real sign-in through authproxy; returns the Cookie header that carries the session."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"},
                                     timeout=aiohttp.ClientTimeout(total=60)) as browser:
        async with browser.get(public + "/login/home", allow_redirects=False) as response:
            assert response.status == 302, f"login route without a session: {response.status}"
            start = response.headers["Location"]
        async with browser.get(URL(public).join(URL(start)), allow_redirects=False) as response:
            assert response.status == 302, f"/oauth2/start: {response.status}"
            authorize = response.headers["Location"]
        callback = await sign_in_at_provider(browser, authorize, USER, public + "/oauth2/callback")
        async with browser.get(callback, allow_redirects=False) as response:
            assert response.status == 302, f"callback: {response.status} {(await response.text())[:300]}"
        cookies = cookie_header(browser.cookie_jar, public + "/login/")
        # the provider's own cookies share the host (cookies ignore ports): keep authproxy's only
        return "; ".join(part for part in cookies.split("; ") if part.startswith("authproxy"))


async def apache_sign_in(base: str) -> str:
    """A real code flow through mod_auth_openidc; returns the Cookie header of its session."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"},
                                     timeout=aiohttp.ClientTimeout(total=60)) as browser:
        async with browser.get(base + "/login/home", allow_redirects=False) as response:
            assert response.status == 302, f"Apache without a session: {response.status} {(await response.text())[:300]}"
            authorize = response.headers["Location"]
        port = urlsplit(base).port
        back = await sign_in_at_provider(browser, authorize, USER, apache_peer.redirect_uri(port))
        async with browser.get(back, allow_redirects=False) as response:
            assert response.status == 302, f"Apache redirect_uri: {response.status} {(await response.text())[:300]}"
        cookies = cookie_header(browser.cookie_jar, base + "/login/")
        assert "mod_auth_openidc_session" in cookies, cookies
        return "; ".join(part for part in cookies.split("; ") if part.startswith("mod_auth_openidc_session="))


@dataclass
class Stack:
    work: Path
    workers: list[int]
    want_apache: bool = True
    want_cold: bool = True
    access_log: bool = True
    nginx: Nginx | None = None
    table: Dynalite | None = None
    provider: OidcProvider | None = None
    minimal: dict[int, Minimal] = field(default_factory=dict)
    proxies: dict[int, ProxyProcess] = field(default_factory=dict)
    cold: dict[int, ProxyProcess] = field(default_factory=dict)
    apaches: dict[int, apache_peer.Apache] = field(default_factory=dict)
    session_cookie: str = ""
    cold_cookies: list[str] = field(default_factory=list)
    apache_cookies: dict[int, str] = field(default_factory=dict)
    bearer_token: str = ""

    def start(self) -> None:
        provider_port = free_port()
        self.nginx = Nginx(self.work / "nginx", provider_port)
        upstream = self.nginx.url
        self.table = Dynalite()
        ports = {(kind, w): free_port() for w in self.workers for kind in ("proxy", "cold", "apache")}
        publics = {key: f"http://127.0.0.1:{port}" for key, port in ports.items() if key[0] != "apache"}
        callbacks = [f"{public}/oauth2/callback" for public in publics.values()]
        callbacks += [apache_peer.redirect_uri(port) for (kind, _), port in ports.items() if kind == "apache"]
        self.provider = OidcProvider(callbacks, [f"{public}/" for public in publics.values()],
                                     resources={AUDIENCE: {"scope": SCOPE, "accessTokenTTL": 7200}},
                                     accessTokenTtl=7200, idTokenTtl=7200, port=provider_port)
        for w in self.workers:
            self.minimal[w] = Minimal(w, upstream)
        for w in self.workers:
            self.proxies[w] = ProxyProcess(
                authproxy_config(publics[("proxy", w)], w, self.provider.issuer, upstream, self.table.url, "30s",
                                 self.access_log),
                self.work, name=f"authproxy-{w}", port=ports[("proxy", w)])
            if self.want_cold:
                self.cold[w] = ProxyProcess(
                    authproxy_config(publics[("cold", w)], w, self.provider.issuer, upstream, self.table.url, "1ms",
                                     self.access_log),
                    self.work, name=f"authproxy-cold-{w}", port=ports[("cold", w)])
        if self.want_apache:
            for w in self.workers:
                self.apaches[w] = apache_peer.Apache(self.work / f"apache-{w}", ports[("apache", w)], w, self.nginx.port,
                                                     self.provider.issuer, self.nginx.jwks_uri, CLIENT_ID, CLIENT_SECRET,
                                                     AUDIENCE)
            for w, server in self.apaches.items():
                wait_for_port(server.port, process=server.process)
        asyncio.run(self.sign_in())

    async def sign_in(self) -> None:
        first = next(iter(self.proxies.values())).url
        self.session_cookie = await authproxy_sign_in(first)
        if self.want_cold:
            limit = asyncio.Semaphore(8)

            async def one() -> str:
                async with limit:
                    return await authproxy_sign_in(first)

            self.cold_cookies = list(await asyncio.gather(*(one() for _ in range(COLD_SESSIONS))))
        for w, server in self.apaches.items():
            try:
                self.apache_cookies[w] = await apache_sign_in(server.url)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{server.errors()}") from None
        async with aiohttp.ClientSession() as http:
            assert self.provider is not None
            self.bearer_token = await self.provider.user_access_token(http, USER, AUDIENCE, SCOPE)

    def stop(self) -> None:
        for group in (self.apaches, self.cold, self.proxies, self.minimal):
            for process in group.values():
                try:
                    process.stop()
                except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                    print(f"bench: stopping {process}: {exc}", file=sys.stderr)
        for process in (self.provider, self.table, self.nginx):
            if process is not None:
                process.stop()
