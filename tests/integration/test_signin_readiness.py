"""/readyz stays 503 until the provider's discovery and keys are loaded, retried with backoff."""

from __future__ import annotations

import json
import time

from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider
from tests.support.processes import ProxyProcess, free_port, http_get


def test_not_ready_until_the_provider_answers(upstream, tmp_path):
    idp_port, port = free_port(), free_port()
    proxy = ProxyProcess(
        {
            "public_url": f"http://127.0.0.1:{port}",
            "oidc": {"issuer": f"http://127.0.0.1:{idp_port}", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            "session": {"secrets": ["r" * 40]},
            "routes": [{"name": "app", "upstream": upstream.url, "auth": "login"}],
        },
        tmp_path,
        port=port,
        wait=False,
    )
    provider = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                status, body = http_get(proxy.admin_url + "/readyz")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 503
        assert "identity_provider" in json.loads(body)["pending"]
        status, body = http_get(proxy.url + "/oauth2/start?rd=/")
        assert status == 503 and json.loads(body)["error"] == "not_ready"
        provider = OidcProvider([f"http://127.0.0.1:{port}/oauth2/callback"], port=idp_port)
        proxy.wait_ready(timeout=40)  # the retry loop found it
        assert any(r.get("event") == "identity_provider_unavailable" for r in proxy.log_records())
        assert any(r.get("event") == "identity_provider_loaded" for r in proxy.log_records())
    finally:
        proxy.stop()
        if provider is not None:
            provider.stop()
