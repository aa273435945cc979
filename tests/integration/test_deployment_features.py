"""What deployments need from the daemon, through real processes: secrets from files
(Kubernetes mounts Secrets as files), a custom CA bundle and HTTPS_PROXY for the provider
(oidc-provider served over HTTPS by a private CA, reached through a forward proxy), and the
TLS listener, whose certificate a reload renews."""

from __future__ import annotations

import asyncio
import signal
import ssl
import time

import aiohttp
import pytest

from tests.support.forward_proxy import ForwardProxy
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, sign_in_at_provider
from tests.support.processes import ProxyProcess, free_port, http_get, wait_for_port
from tests.support.tls import TestCA

SESSION_SECRET = "deployment-features-session-secret-0123456789"


async def peer_serial(port: int, context: ssl.SSLContext) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        return int(writer.get_extra_info("peercert")["serialNumber"], 16)
    finally:
        writer.close()


@pytest.mark.timeout(60)
async def test_tls_listener_with_workers_and_a_certificate_renewed_by_reload(upstream, tmp_path):
    ca = TestCA(tmp_path / "pki")
    _, _, first = ca.issue("leaf")
    # relative to the config file: each worker reads a copy kept elsewhere, and must still find them
    proxy = ProxyProcess(
        {"workers": 2, "tls": {"cert_file": "pki/leaf.pem", "key_file": "pki/leaf.key"},
         "routes": [{"name": "app", "upstream": upstream.url, "auth": "public"}]},
        tmp_path,
    )
    try:
        client = ssl.create_default_context(cafile=str(ca.ca_path))
        url = f"https://127.0.0.1:{proxy.port}/x"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as session:
            async with session.get(url) as response:
                assert response.status == 200
                headers = {name.lower(): value for name, value in (await response.json())["headers"]}
            assert headers["x-forwarded-proto"] == "https"
        async with aiohttp.ClientSession() as plain:  # the system's CAs do not know ours
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await plain.get(url)
        assert await peer_serial(proxy.port, client) == first
        _, _, second = ca.issue("leaf")  # renewed in place, as cert-manager does
        proxy.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        serials = set()
        while time.monotonic() < deadline:  # both workers take it up (the kernel spreads connections)
            serials = {await peer_serial(proxy.port, client) for _ in range(8)}
            if serials == {second}:
                break
            await asyncio.sleep(0.2)
        assert serials == {second}
    finally:
        assert proxy.stop() == 0


@pytest.fixture
def private_provider(tmp_path):
    ca = TestCA(tmp_path / "pki")
    cert, key, _ = ca.issue("provider")
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"], tls={"cert": str(cert), "key": str(key)})
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "client-secret").write_text(CLIENT_SECRET + "\n")  # as kubectl --from-file leaves it
    (tmp_path / "secrets" / "session-secret").write_text(SESSION_SECRET + "\n")
    yield ca, provider, port
    provider.stop()


def signin_settings(provider, port, upstream, **oidc):
    return {
        "public_url": f"http://127.0.0.1:{port}",
        "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": {"file": "secrets/client-secret"},
                 **oidc},
        "session": {"secrets": [{"file": "secrets/session-secret"}]},
        "routes": [{"name": "app", "upstream": upstream.url, "auth": "login",
                    "inject": {"Authorization": "Bearer {access_token}"}}],
    }


@pytest.mark.timeout(60)
async def test_secrets_from_files_a_private_ca_and_https_proxy_for_the_provider(private_provider, upstream, tmp_path):
    ca, provider, port = private_provider
    forward = await ForwardProxy().start(avoid=[port])  # the proxy's port is picked but not bound yet
    proxy = ProxyProcess(signin_settings(provider, port, upstream, ca_file="pki/ca.pem"), tmp_path, port=port,
                         env={"HTTPS_PROXY": forward.url, "NO_PROXY": ""}, wait=False)
    try:
        await asyncio.to_thread(proxy.wait_ready)  # ready means discovery and keys loaded over TLS
        assert f"127.0.0.1:{provider.port}" in forward.targets  # through the proxy (CONNECT)
        trusting = ssl.create_default_context(cafile=str(ca.ca_path))  # the browser trusts the provider too
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting),
                                         cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}) as browser:
            async with browser.get(proxy.url + "/app/x", allow_redirects=False) as response:
                start = response.headers["Location"]
            async with browser.get(start, allow_redirects=False) as response:
                authorize = response.headers["Location"]
            assert authorize.startswith(provider.issuer + "/auth?")
            callback = await sign_in_at_provider(browser, authorize, "alice", proxy.url + "/oauth2/callback")
            async with browser.get(callback, allow_redirects=False) as response:
                assert response.status == 302, await response.text()  # code exchanged with the file's secret
            async with browser.get(proxy.url + "/app/x") as response:
                assert response.status == 200
                headers = {name.lower(): value for name, value in (await response.json())["headers"]}
        assert headers["authorization"].startswith("Bearer ")
        assert await provider.settled_grants("authorization_code", 1) == 1
        secrets_seen = proxy.logs()
        assert CLIENT_SECRET not in secrets_seen and SESSION_SECRET not in secrets_seen
    finally:
        proxy.stop()
        await forward.close()


@pytest.mark.timeout(60)
async def test_without_the_ca_file_the_private_provider_is_not_trusted(private_provider, upstream, tmp_path):
    _, provider, port = private_provider
    proxy = ProxyProcess(signin_settings(provider, port, upstream), tmp_path, port=port, wait=False)
    try:
        await asyncio.to_thread(wait_for_port, proxy.admin_port)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # discovery is retried with backoff, and keeps failing
            status, body = await asyncio.to_thread(http_get, proxy.admin_url + "/readyz")
            assert status == 503, body
            await asyncio.sleep(0.25)
        assert "discovery: ClientConnectorCertificateError" in proxy.logs()
    finally:
        proxy.stop()
