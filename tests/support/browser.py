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
