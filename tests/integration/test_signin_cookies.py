"""Sign-in cookies can never lock a browser out (hardening item 4).

Before: 25 parallel /oauth2/start (restored tabs) left 25 transaction cookies, a Cookie
header over the 8 KiB limit, and every later request, /oauth2/start included, answered 400
for ten minutes; three visits with a 2.5 KB ``rd`` did the same. Now the transaction
cookies have a few fixed names (slots, the oldest overwritten) and a bounded size, ``rd``
is short or "/", and the parser's refusal page clears the slots so the next try works.

The browser here is modelled by hand (``Jar``): parallel requests carry only the cookies
set before any of them left, exactly what a browser restoring tabs sends.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, sign_in_at_provider
from tests.support.processes import ProxyProcess, free_port
from tests.support.signin import SESSION_SECRET
from tests.support.browser import launch, sign_in_at_provider_page

HEADER_LIMIT = 8 * 1024  # limits.header_size's default


@pytest.fixture(scope="module")
def setup(upstream, tmp_path_factory):
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"])
    proxy = ProxyProcess(
        {
            "public_url": public,
            "oidc": {
                "provider": "generic",
                "issuer": provider.issuer,
                "client_id": CLIENT_ID,
                "client_secret": "${TEST_CLIENT_SECRET}",
                "scopes": ["openid", "email", "profile"],
            },
            "session": {"secrets": ["${TEST_SESSION_SECRET}"]},
            "routes": [
                {"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream.url, "auth": "login"},
                {"name": "open", "match": {"path_prefix": "/open"}, "upstream": upstream.url, "auth": "public"},
            ],
        },
        tmp_path_factory.mktemp("signin-cookies"),
        port=port,
        env={"TEST_CLIENT_SECRET": CLIENT_SECRET, "TEST_SESSION_SECRET": SESSION_SECRET},
    )
    yield proxy, provider
    proxy.stop()
    provider.stop()


class Jar:
    """A browser's cookies for one host: Set-Cookie applied in order, Max-Age=0 deletes."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def apply(self, response: aiohttp.ClientResponse) -> None:
        for line in response.headers.getall("Set-Cookie", []):
            pair, *attributes = [part.strip() for part in line.split(";")]
            name, _, value = pair.partition("=")
            if any(a.lower() == "max-age=0" for a in attributes) or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{n}={v}" for n, v in self.cookies.items())} if self.cookies else {}

    def transaction_bytes(self) -> int:
        return len("; ".join(f"{n}={v}" for n, v in self.cookies.items() if "-txn-" in n))


async def get(http, url, jar: Jar, **kwargs):
    async with http.get(url, headers={"Accept": "text/html", **jar.header()}, allow_redirects=False,
                        **kwargs) as response:
        await response.read()
        return response


async def parallel_starts(http, proxy, jar: Jar, count: int, rd: str = "/app/x") -> list[str]:
    """``count`` /oauth2/start sent at once with the jar as it is now; the jar then takes
    every answer's cookies in arrival order. The authorize URLs, in that order."""
    sent = jar.header()

    async def one() -> aiohttp.ClientResponse:
        async with http.get(proxy.url + "/oauth2/start", params={"rd": rd}, allow_redirects=False,
                            headers={"Accept": "text/html", **sent}) as response:
            await response.read()
            return response

    responses = await asyncio.gather(*(one() for _ in range(count)))
    for response in responses:
        assert response.status == 302
        jar.apply(response)
    return [response.headers["Location"] for response in responses]


async def test_parallel_sign_ins_leave_a_bounded_cookie_header(setup):
    proxy, provider = setup
    jar = Jar()
    store_calls = proxy.metric("authproxy_store_operation_duration_seconds_count")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for _ in range(3):  # a restored session of 25 tabs, three times over
            await parallel_starts(http, proxy, jar, 25)
            # nothing of a sign-in not yet completed is in the store: anonymous clients write nothing
            assert proxy.metric("authproxy_store_operation_duration_seconds_count") == store_calls
            for path in ("/open/x", "/oauth2/start?rd=/app/x", "/app/x"):
                response = await get(http, proxy.url + path, jar)  # before: 400, a 10.8 KB Cookie header
                assert response.status in (200, 302), (path, response.status, len(jar.header()["Cookie"]))
            assert len([n for n in jar.cookies if "-txn-" in n]) <= 3
            assert jar.transaction_bytes() < HEADER_LIMIT // 2
        # and a normal sign-in still completes in that browser
        authorize = (await parallel_starts(http, proxy, jar, 1))[0]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as at_provider:
            callback = await sign_in_at_provider(at_provider, authorize, "alice", proxy.url + "/oauth2/callback")
        response = await get(http, callback, jar)
        assert response.status == 302 and response.headers["Location"] == "/app/x"
        cleared = [line for line in response.headers.getall("Set-Cookie") if "-txn-" in line]
        assert len(cleared) == 1 and "Max-Age=0" in cleared[0]  # the used slot, and only it, is cleared
        jar.apply(response)
        assert cleared[0].split("=")[0] not in jar.cookies
        assert (await get(http, proxy.url + "/app/x", jar)).status == 200


async def test_long_rd_cannot_grow_the_cookie_header(setup):
    proxy, _ = setup
    jar = Jar()
    long_rd = "/app/" + "a" * 2500
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for _ in range(5):
            response = await get(http, proxy.url + "/oauth2/start", jar, params={"rd": long_rd})
            assert response.status == 302
            jar.apply(response)
        assert jar.transaction_bytes() < HEADER_LIMIT // 2
        assert (await get(http, proxy.url + "/open/x", jar)).status == 200
        # a protected page with a long query: the sign-in returns to "/" rather than grow a cookie
        response = await get(http, proxy.url + "/app/x?q=" + "b" * 2500, jar)
        assert response.status == 302
        assert response.headers["Location"].endswith("/oauth2/start?rd=%2F")


async def test_sign_ins_started_one_after_another_each_take_a_free_slot(setup):
    proxy, _ = setup
    jar = Jar()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        authorizes = []
        for target in ("/app/one", "/app/two", "/app/three"):
            authorizes += await parallel_starts(http, proxy, jar, 1, rd=target)
        assert len([n for n in jar.cookies if "-txn-" in n]) == 3
        for authorize, target in zip(authorizes, ("/app/one", "/app/two", "/app/three"), strict=True):
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as at_provider:
                callback = await sign_in_at_provider(at_provider, authorize, "alice", proxy.url + "/oauth2/callback")
            response = await get(http, callback, jar)
            assert response.status == 302 and response.headers["Location"] == target
            jar.apply(response)
        # a fourth overwrites the oldest: only the newest three can complete
        authorizes = []
        for target in ("/app/1", "/app/2", "/app/3", "/app/4"):
            authorizes += await parallel_starts(http, proxy, jar, 1, rd=target)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as at_provider:
            callbacks = [await sign_in_at_provider(at_provider, a, "alice", proxy.url + "/oauth2/callback")
                         for a in authorizes]
        statuses = []
        for callback in callbacks:
            response = await get(http, callback, jar)
            statuses.append(response.status)
            jar.apply(response)
        assert statuses == [400, 302, 302, 302]


async def test_an_oversized_cookie_header_is_recoverable(setup):
    """The refusal page clears the transaction slots by name, same attributes as set."""
    proxy, _ = setup
    jar = Jar()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        await parallel_starts(http, proxy, jar, 3)
        slots = sorted(n for n in jar.cookies if "-txn-" in n)
        assert len(slots) >= 1
        pad = {"pad": "p" * (HEADER_LIMIT - jar.transaction_bytes() + 100)}
        oversized = Jar()
        oversized.cookies = {**jar.cookies, **pad}
        response = await get(http, proxy.url + "/app/x", oversized)
        assert response.status == 400
        cleared = [line for line in response.headers.getall("Set-Cookie", []) if "Max-Age=0" in line]
        for name in slots:
            line = next(line for line in cleared if line.startswith(name + "="))
            assert "Path=/" in line and "HttpOnly" in line and "SameSite=Lax" in line
        oversized.apply(response)
        assert not any("-txn-" in n for n in oversized.cookies)
        assert "p" * 100 not in "".join(response.headers.getall("Set-Cookie", []))


@pytest.mark.timeout(180)
async def test_thirty_tabs_at_once_then_a_normal_sign_in_in_chromium(setup):
    from playwright.async_api import async_playwright

    proxy, provider = setup
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            context = await browser.new_context()
            tabs = [await context.new_page() for _ in range(30)]
            # a restored session: thirty deep links (a dashboard's query) open at once, each off to sign in
            query = "&".join(f"panel{i}=" + "v" * 30 for i in range(12))
            await asyncio.gather(*(tab.goto(f"{proxy.url}/app/tab-{i}?{query}") for i, tab in enumerate(tabs)))
            assert all(tab.url.startswith(provider.issuer + "/interaction/") for tab in tabs)
            ours = [c for c in await context.cookies(proxy.url) if "-txn-" in c["name"]]
            assert 1 <= len(ours) <= 3
            for tab in tabs:
                await tab.close()
            # then a normal sign-in in that browser
            page = await context.new_page()
            response = await page.goto(proxy.url + "/app/after-the-tabs?x=1")
            assert response is not None and response.status == 200  # the provider's login page, not our 400
            await sign_in_at_provider_page(page, provider.issuer, proxy.url + "/app/after-the-tabs?x=1")
            assert '"path": "/app/after-the-tabs"' in await page.inner_text("body")
            await page.goto(proxy.url + "/oauth2/userinfo")
            assert '"sub": "alice"' in await page.inner_text("body")
        finally:
            await browser.close()
