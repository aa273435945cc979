"""Issuers of access tokens for bearer routes, compiled once per configuration.

The oidc section's provider is the issuer named ``oidc``; ``bearer_issuers`` adds others
(a second Cognito pool, another provider for machines), each with its own keys, rules
(audiences or client ids, ``typ``, ``token_use``) and groups claim. Every route lists the
issuers it accepts, and ``IssuerTable`` maps each ``iss`` value to the one issuer that owns
it (config validation keeps them unique).

Choosing by ``iss`` before the signature is checked is safe because the choice only
decides *which* issuer's keys and rules apply: RFC 8725 3.8 requires the keys that verify
a JWT to belong to the issuer it names, and the chosen issuer's rules check ``iss`` again
among the signed claims. Machines' and people's tokens are different kinds that must not
be mistaken for each other (RFC 8725 3.12): a token of an issuer the route does not list is
refused as ``wrong_issuer`` before any key is fetched or signature checked, so a stream of
tokens naming strangers costs no network call.

Keys: the oidc issuer's come from the provider client (loaded at start-up); the others'
from ``RemoteKeys``, fetched on first use (or when the provider link warms them) and kept
across configuration reloads by the provider link, refetched on an unknown kid at most
every 10 s as the oidc provider's are. A key of a type or curve we cannot use is skipped
(``jwks.read_key_set``), not a reason to refuse the issuer's other keys.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp

from authproxy.config.schema import OIDC_ISSUER, BearerIssuer, Config, OidcConfig
from authproxy.errors import IdpError, IdpUnavailable
from authproxy.oidc import cognito
from authproxy.oidc.client import discover, fetch_json
from authproxy.logs import log
from authproxy.oidc.jwks import JwksCache, Verified, read_key_set, verify_with_keys
from authproxy.oidc.verify import TokenRules, unverified_issuer
from authproxy.singleflight import SingleFlight

if TYPE_CHECKING:
    from joserfc.jwk import KeySet

    from authproxy.oidc.client import IdentityProviderClient

RETRY_AFTER_FAILURE = 5.0  # seconds a failed first load of an issuer's keys is not retried (503 meanwhile)


class KeySource(Protocol):
    async def key_set(self, iss: str) -> JwksCache | None:
        """The key set that holds ``iss``'s keys; None while they cannot be known yet
        (the provider not loaded). Raises ``IdpError`` when they cannot be fetched."""
        ...


@dataclass(frozen=True, eq=False, slots=True)
class Issuer:
    """One issuer of access tokens as the request path uses it. Compared by identity: the
    verified-token cache keys its entries by the very rules that accepted them."""

    name: str
    issuers: tuple[str, ...]  # every iss value of it, the configured issuer first
    rules: TokenRules
    groups_claim: str
    keys: KeySource

    async def verify(self, token: str, iss: str, now: int) -> Verified | None:
        """The token checked against this issuer's keys and rules; None while its keys are
        not loaded yet. Raises ``TokenInvalid`` or ``IdpError``."""
        cache = await self.keys.key_set(iss)
        if cache is None:
            return None
        return await verify_with_keys(cache, token, self.rules, now)


IssuerTable = Mapping[str, Issuer]  # iss -> the issuer that owns it, for one route's list


def choose(table: IssuerTable, token: str) -> tuple[str, Issuer] | None:
    """The ``iss`` the token claims and the issuer of ``table`` that owns it; None when the
    token names none of them (or no readable iss). Nothing is verified here."""
    iss = unverified_issuer(token)
    issuer = table.get(iss) if iss is not None else None
    return (iss, issuer) if issuer is not None else None  # type: ignore[return-value]


def table_for(issuers: Mapping[str, Issuer], names: Iterable[str]) -> dict[str, Issuer]:
    """The iss -> issuer map of the issuers named ``names`` (unknown names: none; validation reports them)."""
    table: dict[str, Issuer] = {}
    for name in names:
        issuer = issuers.get(name)
        if issuer is not None:
            for iss in issuer.issuers:
                table.setdefault(iss, issuer)
    return table


# --- rules from configuration ------------------------------------------------------------


def bearer_rules(oidc: OidcConfig) -> TokenRules:
    """What an API client's access token from the oidc provider must say (RFC 9068 4;
    Cognito's access token), accepting each issuer of the provider."""
    if oidc.provider == "cognito":
        # Cognito access tokens carry client_id and token_use, not aud.
        rules = TokenRules(
            issuer=oidc.issuer,
            client_ids=frozenset(oidc.allowed_client_ids or [oidc.client_id]),
            token_use="access",
        )
    else:
        rules = TokenRules(
            issuer=oidc.issuer,
            audiences=frozenset(oidc.audiences),
            token_type="at+jwt" if oidc.require_at_jwt else None,
        )
    return rules


def issuer_rules(config: BearerIssuer) -> TokenRules:
    """What a further issuer's access tokens must say (RFC 9068 4 for generic providers:
    ``aud`` one of ``audiences``, ``typ`` at+jwt; Cognito: ``client_id`` and ``token_use``)."""
    every = frozenset(config.issuers)
    if config.provider == "cognito":
        return TokenRules(issuer=config.issuer, issuers=every, client_ids=frozenset(config.allowed_client_ids),
                          token_use="access")
    return TokenRules(
        issuer=config.issuer,
        issuers=every,
        audiences=frozenset(config.audiences),
        # RFC 9068 2.2: client_id is a required claim, so a machines' issuer can be narrowed to known clients.
        client_ids=frozenset(config.allowed_client_ids) if config.allowed_client_ids else None,
        token_type="at+jwt" if config.require_at_jwt else None,
    )


def compile_issuers(
    config: Config,
    provider_keys: KeySource | None,
    remote_keys: Callable[[BearerIssuer], KeySource] | None,
) -> dict[str, Issuer]:
    """Every issuer of ``config`` by name. ``provider_keys``: the oidc provider's key source
    (None: no oidc issuer); ``remote_keys``: the key source of a further issuer (None: none)."""
    issuers: dict[str, Issuer] = {}
    oidc = config.oidc
    if oidc is not None and provider_keys is not None:
        every = oidc.issuers
        issuers[OIDC_ISSUER] = Issuer(OIDC_ISSUER, every, bearer_rules(oidc).for_provider(every),
                                      oidc.effective_groups_claim, provider_keys)
    if remote_keys is not None:
        for each in config.bearer_issuers:
            issuers.setdefault(each.name, Issuer(each.name, each.issuers, issuer_rules(each), each.effective_groups_claim,
                                                 remote_keys(each)))
    return issuers


# --- where the keys come from -------------------------------------------------------------


class ProviderKeys:
    """The oidc provider's keys, through its client once the provider link has loaded it."""

    def __init__(self, client: Callable[[], IdentityProviderClient | None]):
        self._client = client

    async def key_set(self, iss: str) -> JwksCache | None:
        client = self._client()
        return client.key_set_for(iss) if client is not None else None


class RemoteKeys:
    """The keys of a further issuer: at ``jwks_uri`` when configured, else at
    ``{iss}/.well-known/jwks.json`` (Cognito) or where the issuer's discovery document says
    (OpenID Connect Discovery 1.0 4; its ``issuer`` must be the configured one exactly, 4.3).
    Loaded on first use; a failed first load is not retried for ``RETRY_AFTER_FAILURE``
    seconds, so a down issuer is not asked once per request. Failures are kept per key set
    (per JWKS URL): one region of a replicated Cognito pool being down does not hold back
    the keys of its other regions."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        config: BearerIssuer,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._http = http
        self.issuer = config.issuer
        # Read now, with the configuration (not on the request path): the file was checked by
        # the schema, and a reload naming another file makes another key source (web/provider.py).
        self._tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True
        self._cognito = config.provider == "cognito"
        self._jwks_uri = config.jwks_uri
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._caches: dict[str, JwksCache] = {}
        self._discovering: SingleFlight[None, str] = SingleFlight()
        # when the first load of a key set last failed, by the key set's key (its jwks_uri, or its iss:
        # one URL each); only iss values of this issuer's configuration come here, so it stays small
        self._failed_at: dict[str, float] = {}
        self._reported: set[tuple[str, str, str]] = set()  # keys skipped and logged (jwks.read_key_set)

    async def key_set(self, iss: str) -> JwksCache:
        where = self._jwks_uri or iss
        cache = self._caches.get(where)
        if cache is not None and cache.keys is not None:
            return cache  # the common case: no await
        if self._clock() - self._failed_at.get(where, float("-inf")) < RETRY_AFTER_FAILURE:
            raise IdpUnavailable("jwks", "jwks: the issuer's keys failed to load moments ago")
        try:
            if cache is None:
                url = self._jwks_uri or (cognito.jwks_uri(iss) if self._cognito else await self._discover())
                cache = self._caches.setdefault(where, JwksCache(lambda: self._fetch(url)))
            if cache.keys is None:
                await cache.load()
        except Exception as exc:
            self._failed_at[where] = self._clock()  # whatever failed, not asked again at once
            if isinstance(exc, IdpError):
                raise
            # Not an outage we know of (a library's surprise about the document): still an
            # unavailable issuer for its tokens (503), never a 500 nor a dead warm-up.
            error = type(exc).__name__
            log().error("bearer_issuer_keys_failed", extra={"fields": {"issuer": self.issuer, "error": error}})
            raise IdpUnavailable("jwks", f"jwks: the issuer's keys could not be loaded ({error})") from None
        self._failed_at.pop(where, None)
        return cache

    async def warm(self) -> None:
        """Load the configured issuer's keys now, so the first token does not wait for them."""
        await self.key_set(self.issuer)

    async def _discover(self) -> str:
        return await self._discovering.run(None, self._discover_once)

    async def _discover_once(self) -> str:
        document = await discover(self._http, self.issuer, self._timeout.total or 10.0, self._tls)
        if document.get("issuer") != self.issuer:
            raise IdpUnavailable("discovery", "discovery names another issuer than the configured one")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise IdpUnavailable("discovery", "discovery lacks jwks_uri and none is configured")
        return jwks_uri

    async def _fetch(self, url: str) -> KeySet:
        document = await fetch_json(self._http, "jwks", url, self._timeout, self._tls)
        return read_key_set(document, url, self._reported)  # IdpUnavailable when no key is usable
