"""The real OpenID provider (npm oidc-provider) for tests, and a user signing in at it.

Resource servers (RFC 8707 resource indicators) get RFC 9068 JWT access tokens (typ at+jwt,
aud = the resource, ``scope``, and for users ``email`` and ``groups``); everything asked for
without a ``resource`` keeps getting opaque access tokens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import subprocess
import threading
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import aiohttp

from tests.support.processes import ROOT, child_env, free_port, stop_process

CLIENT_ID = "authproxy"
CLIENT_SECRET = "authproxy-test-client-secret-0123456789"
MACHINE_CLIENT_ID = "machine"
MACHINE_CLIENT_SECRET = "machine-test-client-secret-0123456789"
# Registered for the ``authproxy`` client too, for user_tokens(): the helper stops at this URL
# and never connects to it (port 9 is discard).
HELPER_REDIRECT_URI = "http://127.0.0.1:9/token-helper/callback"
USER_SCOPES = "openid email profile groups"


class OidcProvider:
    """oidc-provider on a free 127.0.0.1 port with the ``authproxy`` client (CLIENT_ID/CLIENT_SECRET).

    ``resources``: resource indicator -> ``{"scope": "orders/read orders/write", "accessTokenTTL": 600,
    "alg": "RS256"|"ES256"}`` (a bare string is the scope). Asking for one of them gets a JWT
    access token for it.
    ``machine_clients``: client_credentials clients; each dict is merged over
    ``{"client_id": MACHINE_CLIENT_ID, "client_secret": MACHINE_CLIENT_SECRET,
    "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic"}``
    and may carry ``"resource_scopes": {resource: "scopes it may get"}`` (absent: everything).
    ``None`` (the default) means one such client with the defaults when ``resources`` is given,
    none otherwise; ``[]`` means none.
    ``backchannel_logout_uri``: turns on OpenID Connect Back-Channel Logout 1.0 and registers
    this URI for the ``authproxy`` client; ``backchannel_logout_session_required`` (default
    True) puts a ``sid`` in its ID and logout tokens. The logout tokens the provider sends are
    collected in ``logout_tokens``. Off by default: nothing changes without it.
    Other keyword options go to the peer as they are (accessTokenTtl, idTokenTtl,
    rotateRefreshToken, useGrantedResource, ``jwks={"keys": [private JWK, ...]}`` for the
    provider's signing keys, and ``tls={"cert": PATH, "key": PATH}`` to serve HTTPS: the
    issuer is then ``https://127.0.0.1:PORT``).
    """

    def __init__(
        self,
        redirect_uris: list[str],
        post_logout_redirect_uris: list[str] | None = None,
        port: int | None = None,
        *,
        resources: dict[str, dict | str] | None = None,
        machine_clients: list[dict] | None = None,
        backchannel_logout_uri: str | None = None,
        backchannel_logout_session_required: bool = True,
        **options,
    ):
        self.port = port or free_port()
        client = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [*redirect_uris, HELPER_REDIRECT_URI],
            "post_logout_redirect_uris": post_logout_redirect_uris or [],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }
        if backchannel_logout_uri is not None:
            client["backchannel_logout_uri"] = backchannel_logout_uri
            client["backchannel_logout_session_required"] = backchannel_logout_session_required
            options["backchannelLogout"] = True
        clients = [client]
        if machine_clients is None:
            machine_clients = [{}] if resources else []
        for machine in machine_clients:
            clients.append(
                {
                    "client_id": MACHINE_CLIENT_ID,
                    "client_secret": MACHINE_CLIENT_SECRET,
                    "redirect_uris": [],
                    "response_types": [],
                    "grant_types": ["client_credentials"],
                    "token_endpoint_auth_method": "client_secret_basic",
                    **machine,
                }
            )
        self.scheme = "https" if options.get("tls") else "http"
        config = {"clients": clients, **options}
        if resources:
            config["resources"] = {
                resource: {"scope": server} if isinstance(server, str) else server for resource, server in resources.items()
            }
        self.events: list[str] = []
        self.tokens: list[str] = []  # every opaque access and refresh token issued
        self.logout_tokens: list[str] = []  # every back-channel logout token sent
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
            elif line.startswith("logout_token "):
                self.logout_tokens.append(line.split()[1])

    @property
    def issuer(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def token_printed(self, value: str, timeout: float = 5.0) -> bool:
        """Whether the peer printed ``value`` as a token it saved (its lines arrive on a pipe,
        possibly after the HTTP answer that carried the token)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while value not in self.tokens and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return value in self.tokens

    async def end_session(self, browser: aiohttp.ClientSession) -> None:
        """Sign ``browser`` out at the provider (its /session/end page, "Yes, sign me out"):
        the provider ends its session and sends back-channel logout tokens, waiting for the
        answers before it answers itself (oidc-provider's end_session confirm)."""
        async with browser.get(f"{self.issuer}/session/end", allow_redirects=False) as response:
            page = await response.text()
            assert response.status == 200, page[:500]
        action = _FORM_ACTION.search(page)
        assert action, page[:500]
        form = {**dict(_HIDDEN.findall(page)), "logout": "yes"}
        async with browser.post(urljoin(f"{self.issuer}/session/end", action.group(1)), data=form,
                                allow_redirects=False) as response:
            assert response.status in (302, 303), await response.text()

    async def settled_events(self, event: str, at_least: int, timeout: float = 5.0) -> int:
        """How many ``event`` lines arrived, once at least ``at_least`` did (they arrive on a
        pipe, read by a thread: under load, after the answer they came before), or after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.events.count(event) < at_least and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.events.count(event)

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

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/jwks"

    async def client_credentials_token(
        self,
        http: aiohttp.ClientSession,
        resource: str | None,
        scope: str,
        client_id: str = MACHINE_CLIENT_ID,
        client_secret: str = MACHINE_CLIENT_SECRET,
    ) -> dict:
        """The token endpoint's JSON answer to a client_credentials grant (an error answer too:
        ``{"error": ...}``); with ``resource`` its access_token is a JWT for that resource."""
        form = {"grant_type": "client_credentials", "scope": scope}
        if resource is not None:
            form["resource"] = resource
        async with http.post(self.token_endpoint, data=form, headers=basic_auth(client_id, client_secret)) as response:
            return await response.json(content_type=None)

    async def user_tokens(
        self,
        http: aiohttp.ClientSession,
        user: str,
        resource: str | None = None,
        scope: str = "",
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
    ) -> dict:
        """The whole token response (access_token, id_token, refresh_token, scope, ...) of a real
        code flow (PKCE S256) for ``user`` through the provider's development login and consent,
        in a fresh cookie jar; ``resource`` is sent to /auth and /token, ``scope`` is added to
        ``USER_SCOPES``. Raises AssertionError if the token endpoint refuses."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        scopes = list(dict.fromkeys(f"{USER_SCOPES} {scope}".split()))
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": HELPER_REDIRECT_URI,
            "scope": " ".join(scopes),
            "state": state,
            "nonce": secrets.token_urlsafe(16),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "prompt": "consent",
        }
        if resource is not None:
            params["resource"] = resource
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}) as browser:
            back = await sign_in_at_provider(browser, f"{self.issuer}/auth?{urlencode(params)}", user, HELPER_REDIRECT_URI)
        query = query_of(back)
        assert query.get("state") == state and "code" in query, back
        form = {
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": HELPER_REDIRECT_URI,
            "code_verifier": verifier,
        }
        if resource is not None:
            form["resource"] = resource
        async with http.post(self.token_endpoint, data=form, headers=basic_auth(client_id, client_secret)) as response:
            body = await response.json(content_type=None)
            assert response.status == 200, body
        return body

    async def user_access_token(self, http: aiohttp.ClientSession, user: str, resource: str, scope: str) -> str:
        """A JWT access token for ``user`` (alice, bob, ...) for ``resource`` with ``scope``."""
        return (await self.user_tokens(http, user, resource, scope))["access_token"]

    async def user_id_token(self, http: aiohttp.ClientSession, user: str) -> str:
        """An ID token for ``user`` (aud = CLIENT_ID), e.g. to show it is refused as an access token."""
        return (await self.user_tokens(http, user))["id_token"]

    def stop(self) -> None:
        stop_process(self.process)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def basic_auth(client_id: str, client_secret: str) -> dict[str, str]:
    """client_secret_basic (RFC 6749 2.3.1: both parts form-urlencoded first)."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


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

