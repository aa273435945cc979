"""Machine tokens for ``service_token`` routes: client_credentials (RFC 6749 4.4),
cached until shortly before expiry and fetched single-flight.

One cache entry per (client, scopes, resource): every route asking for the same token
shares it, and a burst of requests when it expires costs the provider one grant.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from authproxy.config.schema import ServiceToken
from authproxy.logs import log
from authproxy.errors import IdpError, IdpRejected, ServiceTokenUnavailable
from authproxy.oidc.client import IdentityProviderClient
from authproxy.singleflight import SingleFlight

RENEW_BEFORE = 60.0  # seconds before expiry a cached token is replaced (at most half its lifetime)
FAILURE_HOLD = 5.0  # after a failed grant, requests fail fast this long instead of each asking the provider
DEFAULT_LIFETIME = 300  # when the provider sends no expires_in (RFC 6749 5.1 makes it optional)


@dataclass(frozen=True, slots=True)
class _Key:
    client_id: str | None
    scopes: tuple[str, ...]
    resource: str | None


@dataclass(slots=True)
class _Cached:
    token: str
    renew_at: float


class ServiceTokens:
    def __init__(self, client: Callable[[], IdentityProviderClient | None], clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._clock = clock
        self._cached: dict[_Key, _Cached] = {}
        # One grant per key at a time, in a task of its own that no caller's leaving cancels.
        self._inflight: SingleFlight[_Key, _Cached] = SingleFlight()
        self._failed: dict[_Key, tuple[float, ServiceTokenUnavailable]] = {}

    async def token(self, spec: ServiceToken) -> str:
        key = _Key(spec.client_id, tuple(spec.scopes), spec.resource)
        cached = self._cached.get(key)
        if cached is not None and self._clock() < cached.renew_at:
            return cached.token
        failed = self._failed.get(key)
        if failed is not None and self._clock() < failed[0]:
            raise failed[1]
        fresh = await self._inflight.run(key, lambda: self._fetch(key, spec))
        return fresh.token

    async def _fetch(self, key: _Key, spec: ServiceToken) -> _Cached:
        try:
            cached = await self._grant(spec)
        except ServiceTokenUnavailable as error:
            self._failed[key] = (self._clock() + FAILURE_HOLD, error)
            raise
        self._cached[key] = cached
        self._failed.pop(key, None)
        return cached

    async def _grant(self, spec: ServiceToken) -> _Cached:
        client = self._client()
        if client is None:
            raise ServiceTokenUnavailable("token", "the identity provider is not loaded yet")
        secret = spec.client_secret.get_secret_value() if spec.client_secret is not None else None
        try:
            response = await client.client_credentials(list(spec.scopes), spec.resource, spec.client_id, secret)
        except IdpError as exc:
            log().warning("service_token_failed", extra={"fields": {"error": str(exc)}})
            raise ServiceTokenUnavailable(exc.endpoint, str(exc), rejected=isinstance(exc, IdpRejected)) from None
        lifetime = DEFAULT_LIFETIME if response.expires_in is None else response.expires_in
        return _Cached(response.access_token, self._clock() + lifetime - min(RENEW_BEFORE, lifetime / 2))
