"""An issuer's signing keys (its JWKS), and verifying a token against them.

``JwksCache`` keeps one JWKS document's keys: loaded once, refetched when a token names a
kid the copy lacks (a provider starting to sign with a new key), at most every 10 s so a
stream of forged kids cannot make us hammer the provider (RFC 8725 3.10 asks for care
with fetched keys). The 10 s count from the last *attempt*, failed ones included: while the
provider's JWKS endpoint errors, tokens with unknown kids get 503 without a fetch each.
Each copy also knows every key's RFC 7638 thumbprint by kid, so a token verified earlier
can ask "is the key that signed me still published?" without any signature work
(``oidc.token_cache``); the thumbprints are worked out once per copy, on first use.

``read_key_set`` turns a fetched JWKS document into a key set for every issuer: a key of a
type or curve we do not support (a provider publishing a post-quantum or X448 key next to its
RSA key) is skipped, as RFC 7517 5 asks, and logged once by kid; only a document with no
usable key at all fails, as ``IdpUnavailable``.

``verify_with_keys`` is the one verification path for every issuer: the configured
provider's (``IdentityProviderClient.verify``) and the further bearer issuers'
(``oidc.issuers``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import JWKRegistry, KeySet

from authproxy import metrics
from authproxy.errors import IdpUnavailable
from authproxy.logs import log
from authproxy.oidc.verify import KeyNotInJwks, TokenRules, UnknownSigningKey, check_header, verify_token
from authproxy.singleflight import SingleFlight

JWKS_MIN_REFRESH_INTERVAL = 10.0  # seconds between refetches on unknown kid, per key set

Fingerprints = dict[str | None, frozenset[str]]  # kid -> thumbprints of its keys; None -> every key's
_REPORTED_LIMIT = 256  # skipped keys remembered per reader, so each is logged once (bounded against a hostile JWKS)


def read_key_set(document: Any, url: str, reported: set[tuple[str, str, str]]) -> KeySet:
    """The usable keys of a JWKS document fetched from ``url``. A key that cannot be imported
    (a key type or curve joserfc does not know, or malformed parameters) is skipped, and
    logged once per (url, kid, reason) through ``reported``, the caller's memory; the log
    names the kid, the kty and the reason, never key material. ``IdpUnavailable`` when the
    document is not a key set or holds no usable key: then nothing can be verified with it."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise IdpUnavailable("jwks", "jwks: not a key set (no list of keys)")
    keys = []
    unreported = 0  # skipped beyond what ``reported`` can remember: counted in one line
    for entry in entries:
        try:
            keys.append(JWKRegistry.import_key(entry))  # a non-dict entry raises too: skipped as malformed
            continue
        except Exception as exc:  # noqa: BLE001 - JoseError, KeyError (unknown crv), ValueError (bad base64), ...
            error = type(exc).__name__
        kid = _printable(entry.get("kid")) if isinstance(entry, dict) else "-"
        kty = _printable(entry.get("kty")) if isinstance(entry, dict) else "-"
        if (url, kid, error) in reported:
            continue
        if len(reported) >= _REPORTED_LIMIT:
            unreported += 1
            continue
        reported.add((url, kid, error))
        log().warning("jwks_key_skipped", extra={"fields": {"jwks_uri": url, "kid": kid, "kty": kty, "error": error}})
    if unreported:
        log().warning("jwks_keys_skipped", extra={"fields": {"jwks_uri": url, "count": unreported}})
    if not keys:
        raise IdpUnavailable("jwks", f"jwks: no usable key ({len(entries)} published)")
    return KeySet(keys)


def _printable(value: object) -> str:
    """A kid or kty for a log line: public names, shortened, never a key's material."""
    return value[:100] if isinstance(value, str) else "-"


class JwksCache:
    """One JWKS document's keys, refetched on an unknown kid at most every ``min_interval``."""

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
        self._fingerprints: Fingerprints | None = None  # worked out on first use, per copy
        self._attempted_at = float("-inf")  # when the last fetch started, whether it succeeded or not
        self._failed = False  # whether the last fetch failed
        self._fetching: SingleFlight[None, KeySet] = SingleFlight()
        self.fetches = 0

    @property
    def keys(self) -> KeySet | None:
        return self._keys

    def fingerprint(self, kid: str | None) -> frozenset[str] | None:
        """The thumbprints of the keys published under ``kid`` now (None: no such key), or of
        every key for a token without a kid (joserfc then picks among them)."""
        prints = self._fingerprints
        if prints is None:
            if self._keys is None:
                return None
            prints = self._fingerprints = fingerprints(self._keys)
        return prints.get(kid)

    async def load(self) -> KeySet:
        """Fetch now, whenever the last attempt was (start-up, and the callers' own retries:
        the provider link's backoff, ``RemoteKeys``' retry after a failure)."""
        return await self._refresh()

    async def load_if_allowed(self) -> KeySet:
        """``load`` for the request path, for keys never loaded yet: a fetch that failed
        within the interval is not repeated (``IdpUnavailable`` meanwhile)."""
        if self._fetching.running(None):
            return await self._refresh()  # join the fetch under way
        self._refuse_if_failed_lately()
        return await self._refresh()

    async def refresh_if_allowed(self) -> bool:
        """Refetch unless one was attempted within the interval; True when new keys arrived
        (or a fetch under way, joined, brought them). False within the interval of a fetch
        that succeeded; ``IdpUnavailable`` within the interval of one that failed: a token
        whose kid we do not know is then neither checked nor refused, and the endpoint is
        not asked again once per token."""
        if self._fetching.running(None):
            await self._refresh()  # a fetch is under way: its keys are the ones to try
            return True
        if self._clock() - self._attempted_at < self._min_interval:
            self._refuse_if_failed_lately()
            return False
        await self._refresh()
        return True

    def _refuse_if_failed_lately(self) -> None:
        if self._failed and self._clock() - self._attempted_at < self._min_interval:
            raise IdpUnavailable("jwks", "jwks: the issuer's keys failed to load moments ago")

    async def _refresh(self) -> KeySet:
        try:
            keys = await self._fetching.run(None, self._fetch_and_keep)  # concurrent callers share one fetch
        except BaseException:
            metrics.JWKS_REFRESH.labels("error").inc()
            raise
        metrics.JWKS_REFRESH.labels("success").inc()
        return keys

    async def _fetch_and_keep(self) -> KeySet:
        self.fetches += 1
        self._attempted_at = self._clock()  # before the fetch: a failing one rate-limits the next as well
        try:
            keys = await self._fetch()
        except BaseException:
            self._failed = True
            raise
        self._failed = False
        self._keys = keys
        self._fingerprints = None  # the new copy's, worked out when first asked (no await in between)
        return keys


def fingerprints(keys: KeySet) -> Fingerprints:
    """Thumbprints (RFC 7638) by kid: a kid republished with other key material is another
    key, so matching on the kid alone is not enough."""
    by_kid: dict[str | None, set[str]] = {None: set()}
    for key in keys:
        thumbprint = key.thumbprint()
        by_kid.setdefault(key.kid, set()).add(thumbprint)
        by_kid[None].add(thumbprint)
    return {kid: frozenset(prints) for kid, prints in by_kid.items()}


@dataclass(frozen=True, slots=True)
class Verified:
    """A token's verified claims, and which published key vouched for them."""

    claims: dict[str, Any]
    keys: JwksCache
    kid: str | None
    fingerprint: frozenset[str] | None

    def key_still_published(self) -> bool:
        """Whether the key that verified the token is in the current copy of the key set: a
        key the issuer has rotated out stops vouching at the first refetch that misses it."""
        return self.fingerprint is not None and self.keys.fingerprint(self.kid) == self.fingerprint


async def verify_with_keys(cache: JwksCache, token: str, rules: TokenRules, now: int) -> Verified:
    """Verify ``token`` against ``cache``'s keys (loading them the first time); an unknown kid
    refetches them once (rate-limited). ``UnknownSigningKey``: the refetch was not allowed
    yet; ``KeyNotInJwks``: still unknown after a refetch (definite). ``IdpError``: the keys
    could not be fetched, now or by an attempt within the interval (an outage, never a
    verdict on the token)."""
    kid = check_header(token, rules.algorithms).get("kid")
    keys = cache.keys or await cache.load_if_allowed()
    try:
        claims = verify_token(token, keys, rules, now)
    except UnknownSigningKey:
        if not await cache.refresh_if_allowed():
            raise
        try:
            claims = verify_token(token, cache.keys, rules, now)  # type: ignore[arg-type]
        except UnknownSigningKey:
            raise KeyNotInJwks("no key of the issuer's refetched JWKS matches the token's kid") from None
    # No await between verifying and reading the print: both are of the same key set copy.
    return Verified(claims, cache, kid, cache.fingerprint(kid))
