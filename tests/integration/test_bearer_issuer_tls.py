"""A bearer issuer's own CA bundle (bearer_issuers[].ca_file), through a real authproxy
process: issuers served over real TLS by certificates of two private CAs, while oidc.ca_file
names the first. An issuer with a ca_file trusts only that bundle for its discovery and keys;
one without takes the provider's trust, as it did before the key existed.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.local_issuer import serve_issuers
from tests.support.oidc_provider import CLIENT_ID, OidcProvider
from tests.support.processes import ProxyProcess, free_port
from tests.support.tls import TestCA

API = "https://orders.example.test"


@pytest.mark.timeout(60)
async def test_each_bearer_issuer_trusts_its_own_ca_file_or_else_the_providers(upstream, tmp_path):
    first, second = TestCA(tmp_path / "pki-first", "first CA"), TestCA(tmp_path / "pki-second", "second CA")
    inside, inside_issuers = await serve_issuers(["internal"], first)
    outside, outside_issuers = await serve_issuers(["partners", "vendors"], second)
    issuers = {**inside_issuers, **outside_issuers}
    provider = OidcProvider([f"http://127.0.0.1:{free_port()}/oauth2/callback"])
    proxy = None
    try:
        proxy = await asyncio.to_thread(ProxyProcess, {
            # the provider's trust is the first CA only (its own calls are plain HTTP here)
            "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": "unused-secret",
                     "ca_file": "pki-first/ca.pem"},
            "bearer_issuers": [
                {"name": "internal", "issuer": issuers["internal"].iss, "audiences": [API]},  # the provider's: first CA
                {"name": "partners", "issuer": issuers["partners"].iss, "audiences": [API],
                 "ca_file": "pki-second/ca.pem"},  # its own: second CA
                {"name": "vendors", "issuer": issuers["vendors"].iss, "audiences": [API]},  # the provider's: untrusted
            ],
            "routes": [{"name": name, "match": {"path_prefix": f"/{name}"}, "upstream": upstream.url, "auth": "bearer",
                        "bearer_issuers": [name], "inject": {"X-Iss": "{iss}"}} for name in issuers],
        }, tmp_path)
        async with aiohttp.ClientSession() as http:
            async def call(name: str) -> tuple[int, str]:
                headers = {"Authorization": f"Bearer {issuers[name].access_token(API)}", "Accept": "application/json"}
                async with http.get(f"{proxy.url}/{name}/x", headers=headers) as response:
                    return response.status, await response.text()

            status, body = await call("internal")
            assert status == 200 and issuers["internal"].iss in body, body  # oidc.ca_file applies, as before
            status, body = await call("partners")
            assert status == 200 and issuers["partners"].iss in body, body  # its own bundle
            status, body = await call("vendors")
            assert status == 503 and "idp_unavailable" in body, body  # the first CA does not know the second's
        assert issuers["internal"].fetches == 1 and issuers["partners"].fetches == 1
        assert issuers["vendors"].fetches == 0  # no TLS handshake got as far as a request
        assert "ClientConnectorCertificateError" in proxy.logs()
    finally:
        if proxy is not None:
            await asyncio.to_thread(proxy.stop)
        provider.stop()
        await inside.cleanup()
        await outside.cleanup()
