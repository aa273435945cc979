"""The identity provider link shared by sign-in, bearer routes and service tokens:
discovery (or Cognito's derived endpoints) and the JWKS, loaded with retry and backoff.

The process is ready only once both are loaded: a bearer route cannot check a token,
nor a login route finish a sign-in, without them.
"""

from __future__ import annotations

import asyncio

import aiohttp

from authproxy.config.schema import OidcConfig
from authproxy.logs import log
from authproxy.oidc.client import IdentityProviderClient, IdpError, discover
from authproxy.oidc.endpoints import DiscoveryInvalid, Endpoints, for_cognito, from_discovery
from authproxy.web.admin import Readiness

_RETRY_START, _RETRY_MAX = 0.5, 30.0


class ProviderLink:
    def __init__(self, oidc: OidcConfig, http: aiohttp.ClientSession, readiness: Readiness):
        self.oidc = oidc
        self._http = http
        self._readiness = readiness
        self.client: IdentityProviderClient | None = None
        readiness.pending("identity_provider", "loading provider discovery and keys")

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
            except (IdpError, DiscoveryInvalid) as exc:
                log().warning("identity_provider_unavailable", extra={"fields": {"error": str(exc), "retry_in_s": delay}})
                self._readiness.pending("identity_provider", f"provider not loaded yet: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            self.client = client
            self._readiness.done("identity_provider")
            log().info("identity_provider_loaded", extra={"fields": {"issuer": self.oidc.issuer,
                                                                       "issuers": list(self.oidc.issuers)}})
            return

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
