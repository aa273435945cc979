"""`make demo` as a new user runs it, then the demo in real headless Chromium: alice signs
in and sees her token and claims arrive, opens the admins-only page, signs out; bob signs
in and is refused there; a machine token from the dev provider opens the bearer API."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import threading

import aiohttp
import pytest
from playwright.async_api import async_playwright

from authproxy.demo import idp
from tests.support.browser import launch
from tests.support.processes import ROOT, child_env, free_port


@pytest.fixture(scope="module")
def demo():
    ports = [free_port() for _ in range(4)]
    args = f"--port {ports[0]} --idp-port {ports[1]} --upstream-port {ports[2]} --admin-port {ports[3]}"
    process = subprocess.Popen(
        ["make", "--no-print-directory", "demo", f"DEMO_ARGS={args}"],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # Ctrl-C reaches make and the demo together, as in a terminal
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read():
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    url = None
    try:
        while url is None:
            line = lines.get(timeout=300)  # a fresh machine installs the venv and packages first
            found = re.fullmatch(r"Open (http://\S+)\n", line)
            url = found.group(1) if found else None
        yield {"url": url.rstrip("/"), "issuer": f"http://127.0.0.1:{ports[1]}", "output": output, "process": process}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
            process.wait(30)
        reader.join(10)
        process.stdout.close()
    # Ctrl-C stops it cleanly: make reports the interrupt, the demo leaves no traceback and
    # no process behind, and every port it held is free again.
    printed = "".join(output)
    assert "Traceback" not in printed and "Error" not in printed.replace("make: *** [Makefile", ""), printed[-3000:]
    assert subprocess.run(["pgrep", "-f", f"authproxy demo --port {ports[0]}"], check=False).returncode == 1
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


async def test_demo_in_chromium(demo):
    url, issuer = demo["url"], demo["issuer"]
    printed = "".join(demo["output"])
    assert "alice" in printed and "bob" in printed and "DEVELOPMENT" in printed
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            page = await browser.new_page()
            await page.goto(url + "/")
            assert page.url.startswith(issuer + "/oauth2/authorize")
            await page.click('button[value="alice"]')  # one click on her name
            await page.wait_for_url(url + "/")
            text = await page.inner_text("body")
            assert "Authorization" in text and "Bearer eyJ" in text
            assert '"username": "alice"' in text and '"token_use": "access"' in text  # her decoded access token
            assert "alice@example.com" in text and "admins" in text
            assert re.search(r"Expires .* \(\d+ s left\)", text)
            # what authproxy added comes first, then what the browser sent
            assert text.index("Added by authproxy") < text.index("Bearer eyJ") < text.index("From your browser")
            assert text.index("From your browser") < text.index("User-Agent")
            await page.click("text=Admins only")
            await page.wait_for_url(url + "/admin/")
            text = await page.inner_text("body")
            assert "X-Authproxy-Assertion" in text and '"aud": "admins"' in text
            await page.click("text=Sign out")
            await page.wait_for_url(re.compile(re.escape(issuer) + "/oauth2/authorize.*"))  # signed out, asked again
            # bob, with the username and password form this time
            await page.fill('input[name="username"]', "bob")
            await page.fill('input[name="password"]', "bob")
            await page.click('button:text-is("Sign in")')
            await page.wait_for_url(url + "/")
            assert "bob@example.com" in await page.inner_text("body")
            response = await page.goto(url + "/admin/")
            assert response.status == 403
            text = await page.inner_text("body")
            assert "Access denied" in text and "admins" in text
            assert "You are signed in as bob@example.com." in text  # and a way out:
            await page.click("text=Sign out, to use another account")
            await page.wait_for_url(re.compile(re.escape(issuer) + "/oauth2/authorize.*"))
        finally:
            await browser.close()


async def test_demo_bearer_api_with_a_machine_token(demo):
    url, issuer = demo["url"], demo["issuer"]
    async with aiohttp.ClientSession() as http:
        basic = aiohttp.encode_basic_auth(idp.DEFAULT_MACHINE_CLIENT_ID, idp.DEFAULT_MACHINE_CLIENT_SECRET)
        async with http.post(issuer + "/oauth2/token", data={"grant_type": "client_credentials", "scope": "demo-api/read"},
                             headers={"Authorization": basic}) as response:
            assert response.status == 200
            token = (await response.json())["access_token"]
        async with http.get(url + "/api/orders", headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            echo = await response.json()
        headers = {name.lower(): value for name, value in echo["headers"]}
        assert headers["x-client-id"] == idp.DEFAULT_MACHINE_CLIENT_ID and headers["x-scope"] == "demo-api/read"
        async with http.get(url + "/api/orders") as response:
            assert response.status == 401
