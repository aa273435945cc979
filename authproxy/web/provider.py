"""The identity provider link shared by sign-in, bearer routes and service tokens:
discovery (or Cognito's derived endpoints) and the JWKS, loaded with retry and backoff.

The process is ready only once both are loaded: a bearer route cannot check a token,
nor a login route finish a sign-in, without them.

The further bearer issuers' keys (``bearer_issuers``) are kept by ``IssuerKeys``, which the
link extends: one ``RemoteKeys`` per issuer, kept across configuration reloads (a reload
that keeps an issuer keeps its keys; one that removes it forgets them), loaded on first use
and warmed once the provider is loaded. Without an oidc section, ``IssuerKeys`` stands alone (an API that only checks
machines' or other pools' tokens) and warms each issuer as it is configured. They do not
hold readiness back: one issuer down must not take the proxy out of service for every
other route and issuer; its tokens get 503 until its keys load.
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


class IssuerKeys:
    """The key sources of the further bearer issuers. ``warm_each``: load an issuer's keys as
    soon as a configuration names it (alone, with no provider to wait for)."""

    provider_keys: ProviderKeys | None = None  # the oidc provider's key source (ProviderLink)

    def __init__(self, http: aiohttp.ClientSession, *, warm_each: bool = False):
        self._http = http
        self._remote: dict[tuple[str, str, str | None, str | None], RemoteKeys] = {}
        self._warm_each = warm_each
        self._warming: set[asyncio.Task[None]] = set()

    @staticmethod
    def _key(config: BearerIssuer) -> tuple[str, str, str | None, str | None]:
        return config.provider, config.issuer, config.jwks_uri, config.ca_file

    def remote_keys(self, config: BearerIssuer) -> RemoteKeys:
        """The key source of a further bearer issuer; the same object for the same issuer,
        provider, jwks_uri and ca_file, whichever configuration asks."""
        key = self._key(config)
        keys = self._remote.get(key)
        if keys is None:
            keys = self._remote[key] = RemoteKeys(self._http, config)
            if self._warm_each:
                task = asyncio.get_running_loop().create_task(self._warm([keys]))
                self._warming.add(task)  # held until done: the loop keeps only weak references
                task.add_done_callback(self._warming.discard)
        return keys

    def keep_only(self, issuers: list[BearerIssuer]) -> None:
        """Forget the key sources no issuer of the configuration now serving uses (once a
        reload's rules serve): requests still under older rules hold their own references."""
        wanted = {self._key(config) for config in issuers}
        for key in [key for key in self._remote if key not in wanted]:
            del self._remote[key]

    async def warm_bearer_issuers(self) -> None:
        """Load every further bearer issuer's keys known now; a failure is logged, and that
        issuer's keys are tried again when a token of it arrives. Whatever one issuer's
        keys raise, the others are still warmed and the caller (the load task) carries on."""
        await self._warm(list(self._remote.values()))

    @staticmethod
    async def _warm(remote: list[RemoteKeys]) -> None:
        outcomes = await asyncio.gather(*(keys.warm() for keys in remote), return_exceptions=True)
        for keys, outcome in zip(remote, outcomes, strict=True):
            if isinstance(outcome, IdpError):
                log().warning("bearer_issuer_unavailable", extra={"fields": {"issuer": keys.issuer, "error": str(outcome)}})
            elif isinstance(outcome, Exception):
                log().error("bearer_issuer_unavailable",
                            extra={"fields": {"issuer": keys.issuer, "error": type(outcome).__name__}})
            elif isinstance(outcome, BaseException):
                raise outcome  # cancellation: the load task is being stopped

    def close(self) -> None:
        for task in self._warming:
            task.cancel()


class ProviderLink(IssuerKeys):
    def __init__(self, oidc: OidcConfig, http: aiohttp.ClientSession, readiness: Readiness):
        super().__init__(http)
        self.oidc = oidc
        self._readiness = readiness
        self.client: IdentityProviderClient | None = None
        self.provider_keys = ProviderKeys(lambda: self.client)
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
