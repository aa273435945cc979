"""The identity provider link shared by sign-in, bearer routes and service tokens:
discovery (or Cognito's derived endpoints) and the JWKS, loaded with retry and backoff.

The process is ready only once both are loaded: a bearer route cannot check a token,
nor a login route finish a sign-in, without them.

The link also keeps the further bearer issuers' keys (``bearer_issuers``): one
``RemoteKeys`` per issuer, kept across configuration reloads (a reload that keeps an
issuer keeps its keys), loaded on first use and warmed once the provider is loaded. They
do not hold readiness back: one issuer down must not take the proxy out of service for
every other route and issuer; its tokens get 503 until its keys load.
"""

from __future__ import annotations

import asyncio

import aiohttp

from authproxy.config.schema import BearerIssuer, OidcConfig
from authproxy.logs import log
from authproxy.oidc.client import IdentityProviderClient, IdpError, discover
from authproxy.oidc.endpoints import DiscoveryInvalid, Endpoints, for_cognito, from_discovery
from authproxy.oidc.issuers import ProviderKeys, RemoteKeys
from authproxy.web.admin import Readiness

_RETRY_START, _RETRY_MAX = 0.5, 30.0


class ProviderLink:
    def __init__(self, oidc: OidcConfig, http: aiohttp.ClientSession, readiness: Readiness):
        self.oidc = oidc
        self._http = http
        self._readiness = readiness
        self.client: IdentityProviderClient | None = None
        self.provider_keys = ProviderKeys(lambda: self.client)
        self._remote: dict[tuple[str, str, str | None, str | None], RemoteKeys] = {}
        readiness.pending("identity_provider", "loading provider discovery and keys")

    def remote_keys(self, config: BearerIssuer) -> RemoteKeys:
        """The key source of a further bearer issuer; the same object for the same issuer,
        provider, jwks_uri and ca_file, whichever configuration asks."""
        key = (config.provider, config.issuer, config.jwks_uri, config.ca_file)
        keys = self._remote.get(key)
        if keys is None:
            keys = self._remote[key] = RemoteKeys(self._http, config)
        return keys

    async def load(self) -> None:
        """Discovery and JWKS with retry and backoff; ready once both are loaded."""
        delay = _RETRY_START
        while True:
            try:
                endpoints = await self._endpoints()
                client = IdentityProviderClient(
                    self._http,
                    endpoints,
                    client_id=self.oidc.client_id,
                    client_secret=self.oidc.client_secret.get_secret_value() if self.oidc.client_secret else None,
                    client_auth=self.oidc.client_auth,
                    provider=self.oidc.provider,
                )
                await client.jwks.load()
            except Exception as exc:  # noqa: BLE001 - no failure may end the only task that makes us ready
                known = isinstance(exc, (IdpError, DiscoveryInvalid))
                error = str(exc) if known else type(exc).__name__  # a surprise's text is not ours to log
                (log().warning if known else log().error)(
                    "identity_provider_unavailable", extra={"fields": {"error": error, "retry_in_s": delay}})
                self._readiness.pending("identity_provider", f"provider not loaded yet: {error}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            self.client = client
            self._readiness.done("identity_provider")
            log().info("identity_provider_loaded", extra={"fields": {"issuer": self.oidc.issuer,
                                                                       "issuers": list(self.oidc.issuers)}})
            await self.warm_bearer_issuers()
            return

    async def warm_bearer_issuers(self) -> None:
        """Load every further bearer issuer's keys known now; a failure is logged, and that
        issuer's keys are tried again when a token of it arrives. Whatever one issuer's
        keys raise, the others are still warmed and the caller (the load task) carries on."""
        remote = list(self._remote.values())
        outcomes = await asyncio.gather(*(keys.warm() for keys in remote), return_exceptions=True)
        for keys, outcome in zip(remote, outcomes, strict=True):
            if isinstance(outcome, IdpError):
                log().warning("bearer_issuer_unavailable", extra={"fields": {"issuer": keys.issuer, "error": str(outcome)}})
            elif isinstance(outcome, Exception):
                log().error("bearer_issuer_unavailable",
                            extra={"fields": {"issuer": keys.issuer, "error": type(outcome).__name__}})
            elif isinstance(outcome, BaseException):
                raise outcome  # cancellation: the load task is being stopped

    async def _endpoints(self) -> Endpoints:
        oidc = self.oidc
        overrides = {
            "jwks_uri": oidc.jwks_uri,
            "authorization": oidc.authorization_endpoint,
            "token": oidc.token_endpoint,
            "revocation": oidc.revocation_endpoint,
            "end_session": oidc.end_session_endpoint,
            "userinfo": oidc.userinfo_endpoint,
        }
        if oidc.provider == "cognito":
            return for_cognito(oidc.issuer, str(oidc.cognito_domain), overrides, oidc.issuers)
        return from_discovery(await discover(self._http, oidc.issuer), oidc.issuer, overrides)
