"""The identity provider over HTTP: discovery, JWKS, token endpoint, revocation.

I/O lives here and only here; decisions (endpoints, verification) are pure functions
in ``endpoints`` and ``verify``. Failures are split by type: ``IdpRejected`` (the
provider answered with an OAuth error such as invalid_grant: do not retry) and
``IdpUnavailable`` (network, timeout, 5xx: transient).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from joserfc.jwk import KeySet

from authproxy import metrics
from authproxy.errors import IdpError, IdpRejected, IdpUnavailable  # noqa: F401 - re-exported
from authproxy.oidc.endpoints import Endpoints
from authproxy.oidc.jwks import (  # noqa: F401 - JWKS_MIN_REFRESH_INTERVAL, verify_with_keys re-exported
    JWKS_MIN_REFRESH_INTERVAL,
    JwksCache,
    read_key_set,
    verify_with_keys,
)
from authproxy.oidc.verify import (
    TokenInvalid,
    TokenRules,
    UnknownSigningKey,
    check_header,
    unverified_issuer,
    verify_token,
)

@dataclass(frozen=True, slots=True)
class TokenResponse:
    access_token: str
    id_token: str | None
    refresh_token: str | None
    expires_in: int | None
    token_type: str
    scope: str | None

    def __repr__(self) -> str:  # tokens never reach logs through a repr
        return f"TokenResponse(token_type={self.token_type!r}, expires_in={self.expires_in!r}, scope={self.scope!r})"


class IdentityProviderClient:
    """One provider, one aiohttp session; built at start-up, closed at shutdown."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Endpoints,
        *,
        client_id: str,
        client_secret: str | None,
        client_auth: str,
        timeout: float = 10.0,
        provider: str = "generic",
    ):
        self._session = session
        self.endpoints = endpoints
        self._client_id = client_id
        self._client_secret = client_secret
        self._client_auth = client_auth
        self._cognito = provider == "cognito"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # One key set per JWKS URL; a Cognito pool's issuers each have theirs.
        self._key_sets: dict[str, JwksCache] = {}
        self._reported_keys: set[tuple[str, str, str]] = set()  # keys skipped and logged (jwks.read_key_set)
        self.jwks = self._keys_at(endpoints.jwks_uri)  # the configured issuer's: loaded at start-up

    def _keys_at(self, url: str) -> JwksCache:
        cache = self._key_sets.get(url)
        if cache is None:
            cache = self._key_sets[url] = JwksCache(lambda: self._fetch_jwks(url))
        return cache

    def key_set_for(self, iss: str) -> JwksCache | None:
        """The key set of ``iss`` when it is an issuer of this provider, else None."""
        url = self.endpoints.jwks_uri_for(iss)
        return self._keys_at(url) if url is not None else None

    def _keys_for(self, token: str) -> JwksCache:
        """The key set of the issuer the token names; ``wrong_issuer`` at once for an issuer
        that is not this provider's: nothing is fetched for it, and no later attempt could
        make it acceptable (a definite failure)."""
        iss = unverified_issuer(token)
        cache = self.key_set_for(iss) if iss is not None else None
        if cache is None:
            raise TokenInvalid("wrong_issuer")
        return cache

    async def verify(self, token: str, rules: TokenRules, now: int) -> dict[str, Any]:
        """Verify against the cached JWKS of the token's issuer; an unknown kid refetches it
        once (rate-limited). ``UnknownSigningKey``: the refetch was not allowed yet;
        ``KeyNotInJwks``: still unknown after a refetch (definite)."""
        rules = rules.for_provider(self.endpoints.issuers)
        check_header(token, rules.algorithms)
        return (await verify_with_keys(self._keys_for(token), token, rules, now)).claims

    def verify_cached(self, token: str, rules: TokenRules, now: int) -> dict[str, Any]:
        """``verify`` with the keys already loaded and no fetch (``UnknownSigningKey`` if none)."""
        rules = rules.for_provider(self.endpoints.issuers)
        check_header(token, rules.algorithms)
        keys = self._keys_for(token).keys
        if keys is None:
            raise UnknownSigningKey("unknown_key", "the issuer's keys are not loaded yet")
        return verify_token(token, keys, rules, now)

    async def exchange_code(self, code: str, code_verifier: str, redirect_uri: str) -> TokenResponse:
        """The authorization_code grant with PKCE (RFC 6749 4.1.3, RFC 7636 4.5)."""
        return await self._token_request(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": code_verifier}
        )

    async def refresh(self, refresh_token: str) -> TokenResponse:
        return await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def client_credentials(
        self, scopes: list[str], resource: str | None, client_id: str | None = None, client_secret: str | None = None
    ) -> TokenResponse:
        """A machine token (RFC 6749 4.4), with this client's credentials or another's."""
        form = {"grant_type": "client_credentials"}
        if scopes:
            form["scope"] = " ".join(scopes)
        if resource:
            form["resource"] = resource  # RFC 8707 2
        credentials = (client_id, client_secret) if client_id is not None else None
        return await self._token_request(form, credentials)

    async def revoke(self, token: str, hint: str = "refresh_token") -> bool:
        """RFC 7009: True once the provider confirmed it; False for a provider without a
        revocation endpoint. Every failure, a refusal (4xx) included, is counted in
        ``authproxy_idp_errors_total{endpoint="revocation"}`` and raised.

        Cognito documents only HTTP Basic for clients with a secret at ``/oauth2/revoke``
        (Developer Guide, "Revoke endpoint": ``Basic Base64Encode(client_id:client_secret)``;
        ``client_id`` in the body only for a client without a secret), so there the secret
        never goes in the body, whatever ``client_auth`` says; and it takes no
        ``token_type_hint`` (only refresh tokens can be revoked there).
        """
        if not self.endpoints.revocation:
            return False
        form = {"token": token} if self._cognito else {"token": token, "token_type_hint": hint}
        try:
            await self._post_form("revocation", self.endpoints.revocation, form, basic=self._cognito or None)
        except IdpRejected:
            metrics.IDP_ERRORS.labels("revocation").inc()  # 5xx and network failures are counted in _post_form
            raise
        return True

    async def _token_request(self, form: dict[str, str], credentials: tuple[str, str | None] | None = None) -> TokenResponse:
        body = await self._post_form("token", self.endpoints.token, form, credentials)
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise IdpUnavailable("token", "token response without access_token")
        expires_in = body.get("expires_in")
        return TokenResponse(
            access_token=access_token,
            id_token=_str_or_none(body.get("id_token")),
            refresh_token=_str_or_none(body.get("refresh_token")),
            expires_in=int(expires_in) if isinstance(expires_in, (int, float)) else None,
            token_type=str(body.get("token_type", "Bearer")),
            scope=_str_or_none(body.get("scope")),
        )

    async def _post_form(
        self,
        endpoint: str,
        url: str,
        form: dict[str, str],
        credentials: tuple[str, str | None] | None = None,
        basic: bool | None = None,
    ) -> dict[str, Any]:
        """``basic``: True forces HTTP Basic for a client with a secret, None follows ``client_auth``."""
        headers = {"Accept": "application/json"}
        form = dict(form)
        client_id, client_secret = credentials or (self._client_id, self._client_secret)
        if (basic or self._client_auth == "client_secret_basic") and client_secret is not None:
            headers["Authorization"] = basic_credentials(client_id, client_secret, url_encode=not self._cognito)
        else:
            form["client_id"] = client_id
            if client_secret is not None:
                form["client_secret"] = client_secret
        started = time.perf_counter()
        try:
            async with self._session.post(url, data=form, headers=headers, timeout=self._timeout) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None) if status != 200 or endpoint != "revocation" else {}
                except ValueError:
                    body = {}
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            metrics.IDP_ERRORS.labels(endpoint).inc()
            raise IdpUnavailable(endpoint, f"{endpoint}: {type(exc).__name__}") from None
        finally:
            metrics.IDP_DURATION.labels(endpoint).observe(time.perf_counter() - started)
        if status >= 500 or status == 429:
            metrics.IDP_ERRORS.labels(endpoint).inc()
            raise IdpUnavailable(endpoint, f"{endpoint}: HTTP {status}")
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            raise IdpRejected(endpoint, str(error or "http_error"), status)
        if not isinstance(body, dict):
            raise IdpUnavailable(endpoint, f"{endpoint}: response is not a JSON object")
        return body

    async def _fetch_jwks(self, url: str) -> KeySet:
        """The usable keys at ``url``: a key of a type or curve we cannot use is skipped and
        logged once; ``IdpUnavailable`` when none is usable (``jwks.read_key_set``)."""
        document = await self.get_json("jwks", url)
        return read_key_set(document, url, self._reported_keys)

    async def get_json(self, endpoint: str, url: str) -> Mapping[str, Any]:
        return await fetch_json(self._session, endpoint, url, self._timeout)


def basic_credentials(client_id: str, client_secret: str, *, url_encode: bool = True) -> str:
    """The ``Authorization`` value for HTTP Basic client authentication.

    RFC 6749 2.3.1 form-urlencodes both parts before base64. Cognito documents
    ``Basic Base64Encode(client_id:client_secret)`` with nothing encoded (Developer Guide,
    "Token endpoint" and "Revoke endpoint"), and a custom client secret may contain ``+``,
    which the RFC's encoding would turn into ``%2B``: for Cognito, ``url_encode`` is False.
    """
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}" if url_encode else f"{client_id}:{client_secret}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


async def discover(
    session: aiohttp.ClientSession, issuer: str, timeout: float = 10.0, tls: ssl.SSLContext | bool = True
) -> Mapping[str, Any]:
    """Fetch ``{issuer}/.well-known/openid-configuration``."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    return await fetch_json(session, "discovery", url, aiohttp.ClientTimeout(total=timeout), tls)


async def fetch_json(
    session: aiohttp.ClientSession,
    endpoint: str,
    url: str,
    timeout: aiohttp.ClientTimeout,
    tls: ssl.SSLContext | bool = True,
) -> Mapping[str, Any]:
    """GET a JSON object from the provider, timed and counted under ``endpoint``. ``tls``: the
    certificate checks of this call (True: the session's own)."""
    started = time.perf_counter()
    try:
        async with session.get(url, timeout=timeout, headers={"Accept": "application/json"}, ssl=tls) as response:
            if response.status != 200:
                raise IdpUnavailable(endpoint, f"{endpoint}: HTTP {response.status}")
            document = await response.json(content_type=None)
    except IdpUnavailable:
        metrics.IDP_ERRORS.labels(endpoint).inc()
        raise
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        metrics.IDP_ERRORS.labels(endpoint).inc()
        raise IdpUnavailable(endpoint, f"{endpoint}: {type(exc).__name__}") from None
    finally:
        metrics.IDP_DURATION.labels(endpoint).observe(time.perf_counter() - started)
    if not isinstance(document, dict):
        raise IdpUnavailable(endpoint, f"{endpoint}: not a JSON object")
    return document


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
