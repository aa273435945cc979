"""The identity provider over HTTP: discovery, JWKS, token endpoint, revocation.

I/O lives here and only here; decisions (endpoints, verification) are pure functions
in ``endpoints`` and ``verify``. Failures are split by type: ``IdpRejected`` (the
provider answered with an OAuth error such as invalid_grant: do not retry) and
``IdpUnavailable`` (network, timeout, 5xx: transient).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from joserfc.jwk import KeySet

from authproxy import metrics
from authproxy.errors import IdpError, IdpRejected, IdpUnavailable  # noqa: F401 - re-exported
from authproxy.oidc.endpoints import Endpoints
from authproxy.oidc.verify import TokenRules, UnknownSigningKey, verify_token

JWKS_MIN_REFRESH_INTERVAL = 10.0  # seconds between refetches on unknown kid, per issuer


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


class JwksCache:
    """The provider's signing keys, refetched on an unknown kid at most every 10 s."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[KeySet]],
        min_interval: float = JWKS_MIN_REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._fetch = fetch
        self._min_interval = min_interval
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._inflight: asyncio.Future[KeySet] | None = None
        self.fetches = 0

    @property
    def keys(self) -> KeySet | None:
        return self._keys

    async def load(self) -> KeySet:
        return await self._refresh()

    async def refresh_if_allowed(self) -> bool:
        """Refetch unless one happened within the interval; True when new keys arrived."""
        if self._clock() - self._fetched_at < self._min_interval:
            return False
        await self._refresh()
        return True

    async def _refresh(self) -> KeySet:
        if self._inflight is None:  # concurrent callers share one fetch
            self._inflight = asyncio.ensure_future(self._fetch())
            self.fetches += 1
        try:
            keys = await asyncio.shield(self._inflight)
        except BaseException:
            metrics.JWKS_REFRESH.labels("error").inc()
            raise
        else:
            metrics.JWKS_REFRESH.labels("success").inc()
        finally:
            if self._inflight is not None and self._inflight.done():
                self._inflight = None
        self._keys = keys
        self._fetched_at = self._clock()
        return keys


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
    ):
        self._session = session
        self.endpoints = endpoints
        self._client_id = client_id
        self._client_secret = client_secret
        self._client_auth = client_auth
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.jwks = JwksCache(self._fetch_jwks)

    async def verify(self, token: str, rules: TokenRules, now: int) -> dict[str, Any]:
        """Verify against the cached JWKS; an unknown kid refetches it once (rate-limited)."""
        keys = self.jwks.keys or await self.jwks.load()
        try:
            return verify_token(token, keys, rules, now)
        except UnknownSigningKey:
            if not await self.jwks.refresh_if_allowed():
                raise
            return verify_token(token, self.jwks.keys, rules, now)  # type: ignore[arg-type]

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

    async def revoke(self, token: str, hint: str = "refresh_token") -> None:
        """RFC 7009; a provider without a revocation endpoint makes this a no-op."""
        if not self.endpoints.revocation:
            return
        await self._post_form("revocation", self.endpoints.revocation, {"token": token, "token_type_hint": hint})

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
        self, endpoint: str, url: str, form: dict[str, str], credentials: tuple[str, str | None] | None = None
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        form = dict(form)
        client_id, client_secret = credentials or (self._client_id, self._client_secret)
        if self._client_auth == "client_secret_basic" and client_secret is not None:
            # RFC 6749 2.3.1: both parts form-urlencoded before base64.
            pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
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

    async def _fetch_jwks(self) -> KeySet:
        document = await self.get_json("jwks", self.endpoints.jwks_uri)
        try:
            return KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError) as exc:
            raise IdpUnavailable("jwks", f"jwks: not a key set ({type(exc).__name__})") from None

    async def get_json(self, endpoint: str, url: str) -> Mapping[str, Any]:
        return await fetch_json(self._session, endpoint, url, self._timeout)


async def discover(session: aiohttp.ClientSession, issuer: str, timeout: float = 10.0) -> Mapping[str, Any]:
    """Fetch ``{issuer}/.well-known/openid-configuration``."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    return await fetch_json(session, "discovery", url, aiohttp.ClientTimeout(total=timeout))


async def fetch_json(
    session: aiohttp.ClientSession, endpoint: str, url: str, timeout: aiohttp.ClientTimeout
) -> Mapping[str, Any]:
    """GET a JSON object from the provider, timed and counted under ``endpoint``."""
    started = time.perf_counter()
    try:
        async with session.get(url, timeout=timeout, headers={"Accept": "application/json"}) as response:
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
