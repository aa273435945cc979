"""Observability end to end: a real process with two workers and a shared store; a sign-in,
authenticated requests, a refresh, an upstream error and a sign-out; then the summed
metrics show each family with the expected counts, and nothing the process wrote holds a
token, a cookie value or a secret."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from tests.support.signin import sign_in
from tests.support.moto import MotoServer
from tests.support.polling import settled
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider
from tests.support.processes import ProxyProcess, free_port

SESSION_SECRET = "observability-session-secret-0123456789"
ACCESS_TOKEN_TTL = 5  # refresh due 4 s after sign-in: room for the sign-in and 4 requests on a loaded machine


@pytest.mark.timeout(120)
async def test_metrics_and_logs_after_real_traffic(upstream, tmp_path):
    moto = MotoServer()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"], accessTokenTtl=ACCESS_TOKEN_TTL)
    proxy = ProxyProcess(
        {
            "workers": 2,
            "public_url": public,
            "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": "${OBS_CLIENT_SECRET}",
                     "scopes": ["openid", "email", "groups", "offline_access"], "authorize_params": {"prompt": "consent"},
                     "audiences": ["https://obs.example.test"]},
            "session": {"secrets": ["${OBS_SESSION_SECRET}"], "refresh_before_expiry": "1s"},
            "store": {"backend": "dynamodb", "dynamodb": {"table": "obs", "region": "eu-west-1",
                                                          "endpoint_url": moto.url, "create_table": True}},
            "routes": [
                {"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream.url, "auth": "login"},
                {"name": "billing", "match": {"path_prefix": "/billing"}, "upstream": upstream.url, "auth": "login",
                 "allow": {"groups": ["billing"]}},
                {"name": "api", "match": {"path_prefix": "/api"}, "upstream": upstream.url, "auth": "bearer"},
                {"name": "broken", "match": {"path_prefix": "/broken"}, "upstream": f"http://127.0.0.1:{free_port()}",
                 "auth": "public"},
            ],
        },
        tmp_path,
        port=port,
        env={"OBS_CLIENT_SECRET": CLIENT_SECRET, "OBS_SESSION_SECRET": SESSION_SECRET},
    )
    cookie_values = []
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}) as browser:
            await sign_in(browser, proxy)  # one redirect to sign in
            cookie_values = [c.value for c in browser.cookie_jar if c.value]
            for _ in range(4):
                async with browser.get(proxy.url + "/app/more") as response:
                    assert response.status == 200
            await asyncio.sleep(ACCESS_TOKEN_TTL + 0.5)
            async with browser.get(proxy.url + "/app/after-expiry") as response:
                assert response.status == 200  # refreshed on the way
            async with browser.get(proxy.url + "/broken/x", headers={"Accept": "application/json"}) as response:
                assert response.status == 502
            async with browser.get(proxy.url + "/billing/x") as response:
                assert response.status == 403  # alice is not in billing
            async with browser.get(proxy.url + "/api/x", headers={"Authorization": "Bearer not-a-jwt"}) as response:
                assert response.status == 401
            proxy.signal(signal.SIGHUP)  # a reload of the same file: each worker counts one
            async with browser.get(proxy.url + "/oauth2/sign_out", headers={"Sec-Fetch-Site": "same-origin"},
                                   allow_redirects=False) as response:
                assert response.status == 302

        # Each worker sends its snapshot once a second, so every count is awaited, not only the last one.
        expected = {
            ("authproxy_logouts_total", ()): 1,
            ("authproxy_logins_total", (("result", "success"),)): 1,
            ("authproxy_token_refresh_total", (("result", "success"),)): 1,
            ("authproxy_token_refresh_duration_seconds_count", ()): 1,
            ("authproxy_auth_total", (("route", "app"), ("outcome", "redirected"))): 1,
            ("authproxy_auth_total", (("route", "app"), ("outcome", "session"))): 5,
            ("authproxy_auth_total", (("route", "broken"), ("outcome", "public"))): 1,
            ("authproxy_auth_total", (("route", "billing"), ("outcome", "forbidden"))): 1,
            ("authproxy_auth_total", (("route", "api"), ("outcome", "unauthorized"))): 1,
            ("authproxy_requests_total", (("route", "billing"), ("code", "403"))): 1,
            ("authproxy_config_reloads_total", (("result", "success"),)): 2,
            ("authproxy_upstream_errors_total", (("route", "broken"), ("kind", "refused"))): 1,
            ("authproxy_requests_total", (("route", "broken"), ("code", "502"))): 1,
            ("authproxy_requests_total", (("route", "app"), ("code", "200"))): 5,
            ("authproxy_idp_request_duration_seconds_count", (("endpoint", "token"),)): 2,  # code + refresh
            ("authproxy_store_operation_duration_seconds_count", (("backend", "dynamodb"), ("operation", "create"))): 1,
            ("authproxy_ready", ()): 1,
            ("authproxy_build_info", ()): 1,
        }

        def seen():
            return {key: proxy.metric(key[0], **dict(key[1])) for key in expected}

        assert await settled(seen, expected, interval=0.2) == expected  # each worker reports once a second
    finally:
        proxy.stop()
        provider.stop()
        moto.stop()

    written = proxy.logs()
    secrets = [SESSION_SECRET, CLIENT_SECRET, *provider.tokens, *cookie_values]
    assert provider.tokens and cookie_values
    assert [secret for secret in secrets if secret in written] == []
    assert "eyJ" not in written  # no ID token either
    events = {record.get("event") for record in proxy.log_records()}
    assert {"login_success", "refresh_success", "logout", "upstream_error", "config_reloaded"} <= events
    assert all(r.get("request_id") for r in proxy.log_records()
               if r.get("event") in ("login_success", "logout", "refresh_success", "upstream_error"))
