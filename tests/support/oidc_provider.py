"""The real OpenID provider (npm oidc-provider) for tests, and a user signing in at it."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp

from tests.support.processes import ROOT, child_env, free_port, stop_process

CLIENT_ID = "authproxy"
CLIENT_SECRET = "authproxy-test-client-secret-0123456789"


class OidcProvider:
    def __init__(
        self, redirect_uris: list[str], post_logout_redirect_uris: list[str] | None = None, port: int | None = None, **options
    ):
        self.port = port or free_port()
        client = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": redirect_uris,
            "post_logout_redirect_uris": post_logout_redirect_uris or [],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }
        config = {"clients": [client], **options}
        self.events: list[str] = []
        self.tokens: list[str] = []  # every opaque access and refresh token issued
        self.process = subprocess.Popen(
            ["node", str(ROOT / "tests" / "peers" / "oidc_provider.mjs"), str(self.port), json.dumps(config)],
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read_output, args=(ready,), daemon=True)
        self._reader.start()
        if not ready.wait(30):
            self.stop()
            raise TimeoutError("oidc-provider did not start")

    def _read_output(self, ready: threading.Event) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("ready "):
                ready.set()
            elif line.startswith("event "):
                self.events.append(line[6:].strip())
            elif line.startswith("token "):
                self.tokens.append(line.split()[2])

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def grants(self, grant_type: str) -> int:
        return sum(1 for event in self.events if event == f"grant.success {grant_type}")

    async def settled_grants(self, grant_type: str, at_least: int, timeout: float = 5.0) -> int:
        """The grant count once it reached ``at_least`` (events arrive on a pipe), or after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.grants(grant_type) < at_least and loop.time() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # let any extra grant show up too
        return self.grants(grant_type)

    def stop(self) -> None:
        stop_process(self.process)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"', re.IGNORECASE)
_HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.IGNORECASE)


async def sign_in_at_provider(session: aiohttp.ClientSession, authorize_url: str, user: str, stop_at: str) -> str:
    """Follow the provider's development login and consent forms as ``user``; return the
    first URL that starts with ``stop_at`` (the redirect back to the relying party)."""
    url = authorize_url
    for _ in range(20):
        if url.startswith(stop_at):
            return url
        async with session.get(url, allow_redirects=False) as response:
            if response.status in (302, 303):
                url = urljoin(url, response.headers["Location"])
                continue
            page = await response.text()
            assert response.status == 200, page[:500]
        action = _FORM_ACTION.search(page)
        assert action, page[:500]
        form = dict(_HIDDEN.findall(page))
        if form.get("prompt") == "login" or 'name="login"' in page:
            form.update(login=user, password=user)
        async with session.post(urljoin(url, action.group(1)), data=form, allow_redirects=False) as response:
            assert response.status in (302, 303), await response.text()
            url = urljoin(url, response.headers["Location"])
    raise AssertionError("the provider's sign-in did not finish")


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}

