"""Debian's headless Chromium for tests, driven by Playwright (no browser download).

As root it needs --no-sandbox; the background-networking flags keep it off the internet,
which this machine does not reach (PEERS.md)."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


async def launch(playwright):
    """A Chromium browser from ``async_playwright()``; close it when done."""
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


async def sign_in_at_provider_page(page, provider_issuer: str, back_to: str, user: str = "alice") -> None:
    """``page`` is at the test oidc-provider's login (after a navigation to a protected page):
    log in as ``user``, consent if asked, and wait until the browser is back at ``back_to``."""
    assert page.url.startswith(provider_issuer + "/interaction/"), page.url
    await page.fill('input[name="login"]', user)
    await page.fill('input[name="password"]', user)
    await page.click('button[type="submit"]')
    await page.wait_for_load_state()
    if page.url.startswith(provider_issuer):
        await page.click('button[type="submit"]')  # consent
    await page.wait_for_url(back_to)
