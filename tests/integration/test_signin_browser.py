"""Sign-in in real headless Chromium (Debian's, driven by Playwright; no browser download)."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import async_playwright

from tests.support.signin import setup  # noqa: F401 - the same proxy and provider
from tests.support.browser import launch, sign_in_at_provider_page


@pytest.mark.timeout(120)
async def test_sign_in_and_out_in_chromium(setup):  # noqa: F811
    proxy, provider = setup
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            page = await browser.new_page()
            await page.goto(proxy.url + "/app/in-browser?from=chromium")
            # the provider's development login, then its consent page
            await sign_in_at_provider_page(page, provider.issuer, proxy.url + "/app/in-browser?from=chromium")
            echo = json.loads(await page.inner_text("body"))
            assert echo["path"] == "/app/in-browser"
            assert not any(name.lower() == "cookie" and "authproxy" in value for name, value in echo["headers"])
            await page.goto(proxy.url + "/oauth2/userinfo")
            assert json.loads(await page.inner_text("body"))["email"] == "alice@example.com"
            cookies = {cookie["name"]: cookie for cookie in await page.context.cookies(proxy.url)}
            assert cookies["authproxy"]["httpOnly"] and cookies["authproxy"]["sameSite"] == "Lax"
            # typing the sign-out address is a same-origin action (Sec-Fetch-Site: none)
            await page.goto(proxy.url + "/oauth2/sign_out")
            assert page.url.startswith(provider.issuer)  # on to the provider's own logout
            await page.goto(proxy.url + "/app/in-browser")
            assert page.url.startswith(provider.issuer + "/interaction/")  # signed out: sign in again
        finally:
            await browser.close()
