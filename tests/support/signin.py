"""A proxy that signs users in at the real oidc-provider, and a browser signing in through it:
shared by the integration tests (no test module imports another)."""

from __future__ import annotations

import pytest

from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, sign_in_at_provider
from tests.support.processes import ProxyProcess, free_port

SESSION_SECRET = "test-session-secret-0123456789-abcdefghij"


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
                "scopes": ["openid", "email", "profile", "groups", "offline_access"],
                "authorize_params": {"prompt": "consent"},
            },
            "session": {"secrets": ["${TEST_SESSION_SECRET}"]},
            "routes": [
                {"name": "second", "match": {"host": "second.test"}, "upstream": upstream.url, "auth": "login"},
                {"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream.url, "auth": "login",
                 "skip_auth_preflight": True,
                 "inject": {"Authorization": "Bearer {access_token}", "X-User-Email": "{claims.email}",
                            "X-User-Groups": "{claims.groups}", "X-Missing": "{claims.nope}"}},
                {"name": "open", "match": {"path_prefix": "/open"}, "upstream": upstream.url, "auth": "public"},
            ],
        },
        tmp_path_factory.mktemp("signin"),
        port=port,
        env={"TEST_CLIENT_SECRET": CLIENT_SECRET, "TEST_SESSION_SECRET": SESSION_SECRET},
    )
    yield proxy, provider
    proxy.stop()
    provider.stop()


async def sign_in(session, proxy, user="alice", path="/app/page?x=1"):
    async with session.get(proxy.url + path, allow_redirects=False) as response:
        assert response.status == 302
        start = response.headers["Location"]
    assert start.startswith(proxy.url + "/oauth2/start?")
    async with session.get(start, allow_redirects=False) as response:
        assert response.status == 302
        authorize = response.headers["Location"]
    callback = await sign_in_at_provider(session, authorize, user, proxy.url + "/oauth2/callback")
    async with session.get(callback, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Location"] == path
    return callback
