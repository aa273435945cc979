"""Sessions: the model, and the service that keeps them in the store behind a cache.

A session's tokens are sealed with a key derived from the server secrets and the
cookie's own secret, bound to the item's key: the store never holds a usable token.
Refreshed tokens the store could not take yet stay in ``PendingWrites`` (session/
pending.py) and are written again until they land.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from authproxy import metrics
from authproxy.logs import log
from authproxy.oidc.client import TokenResponse
from authproxy.oidc.logout import Logout, session_hashes, sid_hash, sub_hash
from authproxy.session.cache import SessionCache
from authproxy.session.cookies import SessionTicket
from authproxy.session.crypto import SecretBox, Unsealable
from authproxy.session.pending import DEFAULT_LIMIT, PendingWrite, PendingWrites
from authproxy.store.base import SessionRecord, SessionStore, StoreError, StoreUnavailable, VersionConflict

RETRY_DELAYS = (0.5, 1, 2, 4, 8)  # then every 10 s, until the write lands or the session expires
RETRY_CAP = 10.0
_LOGOUT_CONCURRENCY = 10  # store deletes at a time when a logout ends many sessions of one sub


@dataclass(slots=True)
class Session:
    sub: str
    # The verified ID token's claims. Not kept when they are exactly the payload of an ID token
    # of at most LAZY_CLAIMS_MAX characters (the usual case): then read from the token when
    # asked for, through a bounded memo (``_claims`` below the class), so id_token must never
    # be changed in place. The constructor takes None for "that token's payload" (unseal).
    # Issue 15: 10,000 cached sessions within 100 MiB a worker.
    claims: dict[str, Any]
    access_token: str
    id_token: str | None  # the newest *verified* ID token: the only one injected or sent as id_token_hint
    refresh_token: str | None
    access_expires_at: int | None
    created_at: int
    expires_at: int  # absolute end (session.lifetime)
    last_seen_at: int = field(default=0)
    access_issued_at: int | None = None  # when the current access token arrived (its lifetime clamps refresh)
    # An ID token from a refresh that could not be verified yet (JWKS unreachable, a new
    # key within the refetch interval): kept to verify later, never used until then.
    unverified_id_token: str | None = None
    # Whether the last refresh renewed the ID token. OIDC Core 12.2 lets a provider leave
    # it out; its old ``exp`` then cannot make a refresh due (it never moves).
    id_token_renews: bool = True

    def __post_init__(self) -> None:
        given = _CLAIMS_SLOT.__get__(self, Session)
        token = self.id_token
        payload = id_token_claims(token) if token is not None and len(token) <= LAZY_CLAIMS_MAX else None
        if given is None:  # "the ID token's payload" (unseal)
            if payload is None:  # a large token's payload is kept, and counted by footprint()
                given = jwt_claims(token) if token is not None else None
                if given is None:
                    raise ValueError("a session without claims needs an ID token that carries them")
                _CLAIMS_SLOT.__set__(self, shared_claims(given))
        elif payload is not None and (given is payload or given == payload):
            _CLAIMS_SLOT.__set__(self, None)  # read from the token when asked for
        else:
            _CLAIMS_SLOT.__set__(self, shared_claims(given))
        sub = self.claims.get("sub")
        if sub is not self.sub and sub == self.sub:
            self.sub = sub  # one string for both

    def __repr__(self) -> str:  # tokens never reach a log through a repr
        return f"Session(sub={self.sub!r}, expires_at={self.expires_at})"

    def refreshed(self, tokens: TokenResponse, now: int, claims: dict[str, Any] | None = None) -> Session:
        """This session after a refresh_token grant. A response without a refresh token
        keeps the old one (Cognito without rotation sends none, RFC 6749 6); one with a
        refresh token replaces it (rotation: the old one dies at the provider).
        A new ID token replaces the old one only with its verified ``claims``; without
        them it waits in ``unverified_id_token``."""
        renewed = tokens.id_token is not None and claims is not None
        return replace(
            self,
            access_token=tokens.access_token,
            id_token=tokens.id_token if renewed else self.id_token,
            claims=claims if renewed and claims is not None else self.claims,
            unverified_id_token=None if renewed else (tokens.id_token or self.unverified_id_token),
            id_token_renews=renewed,
            refresh_token=tokens.refresh_token or self.refresh_token,
            access_expires_at=now + tokens.expires_in if tokens.expires_in else None,
            access_issued_at=now,
        )

    def with_verified_id_token(self, id_token: str, claims: dict[str, Any]) -> Session:
        return replace(self, id_token=id_token, claims=claims, unverified_id_token=None, id_token_renews=True)

    def seal(self, box: SecretBox, ticket: SessionTicket) -> bytes:
        """The session sealed for the store. The verified ID token is kept once, raw: its
        claims are its payload, read back from it on ``unseal`` (storing both doubled the
        item; a large ID token then went over DynamoDB's item limit)."""
        data = asdict(self)
        if _CLAIMS_SLOT.__get__(self, Session) is None or (
                self.id_token is not None and jwt_claims(self.id_token) == self.claims):
            del data["claims"]
        return box.seal(json.dumps(data, separators=(",", ":")).encode(), context=ticket.secret.encode(),
                        associated_data=ticket.key.encode())

    @classmethod
    def unseal(cls, box: SecretBox, ticket: SessionTicket, sealed: bytes) -> Session:
        data = json.loads(box.open(sealed, context=ticket.secret.encode(), associated_data=ticket.key.encode()))
        # Without claims: sealed (authenticated) by us after the ID token was verified, whose
        # payload they are (None: read from it; a ValueError when it carries none).
        data.setdefault("claims", None)
        return cls(**{name: data[name] for name in _FIELDS if name in data})  # newer fields from a newer release: skipped

    def footprint(self) -> int:
        """About how many bytes this session takes in memory (the cache's byte bound):
        the tokens as Python strings, and the claims as Python objects, without what
        ``shared_claims`` shares between sessions."""
        size = _OBJECT_OVERHEAD
        for token in (self.access_token, self.id_token, self.refresh_token, self.unverified_id_token, self.sub):
            if token is not None:
                size += sys.getsizeof(token)
        kept = _CLAIMS_SLOT.__get__(self, Session)
        return size + (_own_size(kept) if kept is not None else 0)


# The slot the dataclass made for ``claims``, behind a property: None stored there means "the
# ID token's payload", decoded on demand. The dataclass machinery (its __init__, replace,
# asdict, __eq__) reads and writes the attribute as an ordinary field.
_CLAIMS_SLOT = Session.__dict__["claims"]


def _claims(session: Session) -> dict[str, Any]:
    kept = _CLAIMS_SLOT.__get__(session, Session)
    if kept is not None:
        return kept  # type: ignore[no-any-return]
    payload = id_token_claims(session.id_token) if session.id_token is not None else None
    assert payload is not None  # __post_init__ keeps None only for a token that carries claims
    return payload


Session.claims = property(_claims, _CLAIMS_SLOT.__set__)  # type: ignore[assignment]
# Decoded ID token payloads by token: the sessions in use keep theirs (and the same object,
# which rendered header blocks are kept by); the rest decode again (about 5 µs) when they
# come back. As many as the header-block and known-identity bounds (web/gate.py,
# web/signin.py). Only tokens of at most LAZY_CLAIMS_MAX characters are read this way, so
# the memo holds at most ~1,024 x 2 KiB of tokens and their claims (a few MiB) beyond what
# the session cache's byte bound counts; larger tokens (hundreds of groups) keep their
# claims in the session, counted by footprint().
CLAIMS_MEMO = 1024
LAZY_CLAIMS_MAX = 2048


@functools.lru_cache(maxsize=CLAIMS_MEMO)
def id_token_claims(id_token: str) -> dict[str, Any] | None:
    """The payload of an ID token this process verified or unsealed, as ``shared_claims``;
    None when it is not a JWS with a JSON object payload."""
    claims = jwt_claims(id_token)
    return shared_claims(claims) if claims is not None else None


_FIELDS = tuple(f.name for f in fields(Session))
# Claims whose values repeat from one user to the next (the provider, the client, the scope)
_SHARED_VALUES = frozenset({"iss", "aud", "azp", "client_id", "token_use", "scope", "acr", "amr"})
# One copy of each shared value (and group or role name): a bounded table of our own, not
# sys.intern, so values seen once do not stay for the life of the process (interned strings
# were immortal on Python 3.12.0-3.12.5). When full it starts over.
_CANONICAL: dict[str, str] = {}
_CANONICAL_LIMIT = 4096


def _canonical(value: str) -> str:
    kept = _CANONICAL.get(value)
    if kept is not None:
        return kept
    if len(_CANONICAL) >= _CANONICAL_LIMIT:
        _CANONICAL.clear()
    _CANONICAL[value] = value
    return value


def _is_shared(name: str, value: Any) -> bool:
    """Whether ``value`` (of claim ``name``) is already the one copy ``shared_claims`` would give."""
    if isinstance(value, str):
        return name not in _SHARED_VALUES or _CANONICAL.get(value) is value
    if isinstance(value, list):
        return not all(isinstance(item, str) for item in value) or all(_CANONICAL.get(item) is item for item in value)
    return True


def shared_claims(claims: dict[str, Any]) -> dict[str, Any]:
    """``claims`` with its names interned and the values of ``_SHARED_VALUES`` and the
    strings in its lists (groups, roles) made one copy per process instead of one per
    session. A cached session then holds only what is its own (issue 15: a worker with
    10,000 cached sessions within 100 MiB; the names alone were about 550 bytes a session).
    Returns ``claims`` itself when it is already shared, so a session copied with ``replace``
    keeps the claims object that rendered header blocks are kept by (web/gate.py)."""
    if all(sys.intern(name) is name and _is_shared(name, value) for name, value in claims.items()):
        return claims
    shared: dict[str, Any] = {}
    for name, value in claims.items():
        if isinstance(value, str) and name in _SHARED_VALUES:
            value = _canonical(value)
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            value = [_canonical(item) for item in value]
        shared[sys.intern(name)] = value
    return shared


_OBJECT_OVERHEAD = 256  # the Session object, the cache entry and its OrderedDict slot


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a compact JWS (RFC 7515 7.1) as JSON, unverified; None when it is none.
    Only for tokens verified before they were sealed: the seal authenticates them."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _own_size(claims: dict[str, Any]) -> int:
    """What ``shared_claims``' result holds for this session alone: the dict, its lists and
    the values not shared (names, ``_SHARED_VALUES`` and list strings are)."""
    size = sys.getsizeof(claims)
    for name, value in claims.items():
        if isinstance(value, str) and name in _SHARED_VALUES:
            continue
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            size += sys.getsizeof(value)
        else:
            size += _deep_size(value)
    return size


def _deep_size(value: Any) -> int:
    """sys.getsizeof over a JSON-shaped value and everything in it."""
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        for key, item in value.items():
            size += sys.getsizeof(key) + _deep_size(item)
    elif isinstance(value, list):
        for item in value:
            size += _deep_size(item)
    return size


class Sessions:
    """Sessions as the proxy uses them: sealed in the store, decrypted in the local cache.

    The store holds ``SessionRecord``s whose payload only the cookie's secret opens;
    the cache holds (session, version) pairs keyed by a hash of the whole cookie.
    ``last_seen_at`` is written at most once a minute, not once per request.
    Unsaved refreshed tokens are pinned in ``pending`` and overlay whatever the cache or
    the store says about the same version.
    """

    TOUCH_INTERVAL = 60

    def __init__(
        self,
        store: SessionStore,
        box: SecretBox,
        cache: SessionCache[tuple[Session, int]],
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        pending_limit: int = DEFAULT_LIMIT,
        provider: str | None = None,
    ):
        self.store = store
        self._box = box
        self._cache = cache
        self._idle_timeout = idle_timeout
        # An idle timeout near the touch interval would end sessions that are in use (the
        # idle check reads last_seen_at, which moves only once per interval).
        self._touch_interval = min(self.TOUCH_INTERVAL, idle_timeout / 4)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._touch_paused_until = 0.0  # after a failed touch: do not retry on every request
        self._unsaved_activity: OrderedDict[str, int] = OrderedDict()  # last_seen_at a failed touch missed
        self._activity_limit = 100_000
        self.pending = PendingWrites(pending_limit)
        self._retries: dict[str, asyncio.Task[None]] = {}
        # Revokes a refresh token nobody can use any more (set by the refresher: it has the client).
        self.revoke: Callable[[str], Awaitable[None]] | None = None
        # Store key -> cache key of the sessions this process read or created, so a
        # back-channel logout (which knows only store keys) empties this process's cache at
        # once. Written on cache misses only, never on the hot path; an entry that fell out
        # still leaves the cache within its TTL, like on every other replica.
        # As many as the cache holds (store.cache.max_entries), so every cached session can
        # still be evicted at once however large the cache is configured. Kept only once
        # ``find_by_store_key`` is called (the back-channel logout endpoint, when it is on).
        # Keyed by the store key's hash(): a 64-bit int, not a 64-character string, in a
        # plain dict (insertion order; re-inserted when read again). Two store keys with one
        # hash (odds about 2**-64 per pair, with at most max_entries keys) would make a
        # logout of one act on the other's copy here: its cached copy dropped (read again
        # from the store), and its unsaved refreshed tokens, if it had any at that moment,
        # dropped too; the ended session would leave this cache within its TTL, as on every
        # other replica.
        self._cache_keys: dict[int, str] | None = None
        self._cache_keys_limit = max(1, cache.max_entries)
        # The provider's configured issuer (oidc.issuer): the namespace of the sid/sub hashes a
        # back-channel logout finds sessions by (oidc/logout.py), whichever of the provider's
        # issuers issued the ID token. Set by the back-channel logout endpoint when it is built
        # (web/backchannel.py); until then, a session's own ID token's ``iss``.
        self.provider = provider

    def find_by_store_key(self) -> None:
        """From now on, remember which cache key each store key's session is cached under,
        so ``end_for_logout`` empties this process's cache at once."""
        if self._cache_keys is None:
            self._cache_keys = {}

    async def load(self, ticket: SessionTicket, now: int) -> tuple[Session, int] | None:
        """The live session for ``ticket`` and its store version; None when absent,
        expired, idle or not ours. Raises ``StoreUnavailable`` when the store cannot
        answer a cache miss.
        """
        cache_key = SessionCache.key_for(ticket.encode())
        try:
            found = await self._cache.get_or_load(cache_key, lambda: self.read(ticket, now, cache_key))
        except StoreUnavailable:
            pending = self.pending.get(cache_key)
            if pending is None:
                raise
            found = (pending.session, pending.base_version)  # the newest tokens are here, not in the store
        if found is None:
            return None
        session, version = self._overlay(cache_key, *found)
        seen = self._unsaved_activity.get(cache_key)
        if seen is not None and seen > session.last_seen_at:
            session = replace(session, last_seen_at=seen)  # activity the store missed during an outage
        if now >= session.expires_at:
            self._cache.evict(cache_key)
            return None
        if now - session.last_seen_at >= self._idle_timeout:
            await self.end(ticket)
            return None
        if now - session.last_seen_at >= self._touch_interval and self._clock() >= self._touch_paused_until:
            generation = self._cache.generation(cache_key)
            try:
                await self.store.touch(ticket.key, now)
            except VersionConflict:  # gone: signed out on another replica
                self._cache.evict(cache_key)
                return None
            except StoreError:
                # Bookkeeping only: never fail a request over it, and do not retry it on
                # every request while the store is down. The activity still counts here
                # (past the cache TTL too), and the next touch after the pause writes it.
                self._touch_paused_until = self._clock() + self._touch_interval
                self._unsaved_activity[cache_key] = now
                self._unsaved_activity.move_to_end(cache_key)
                while len(self._unsaved_activity) > self._activity_limit:
                    self._unsaved_activity.popitem(last=False)
            else:
                self._unsaved_activity.pop(cache_key, None)
            session = replace(session, last_seen_at=now)
            self._cache.put(cache_key, (session, version), generation)
            pending = self.pending.get(cache_key)
            if pending is not None:
                pending.session = replace(pending.session, last_seen_at=now)
        return session, version

    def cached(self, ticket: SessionTicket, now: int, cache_key: str | None = None) -> Session | None:
        """``load``'s answer without an await, when the local cache holds the session and
        nothing needs doing (no expiry, no idle check, no touch, no activity the store
        missed); None: ask ``load``, which does what is needed. The signed-in request's
        common case: a cache hit costs no coroutine. ``cache_key``: the ticket's, when known."""
        if cache_key is None:
            cache_key = SessionCache.key_for(ticket.encode())
        found = self._cache.peek(cache_key)
        if found is None or cache_key in self._unsaved_activity:
            return None
        session, _ = self._overlay(cache_key, *found)
        # Within the touch interval the idle timeout (at least 4 intervals) cannot have passed.
        if now >= session.expires_at or now - session.last_seen_at >= self._touch_interval:
            return None
        self._cache.hit(cache_key)
        return session

    def cached_until(self, cache_key: str, session: Session) -> tuple[object, float, float] | None:
        """For a ``session`` that ``cached`` just returned: the cache entry it came from, and
        until when (the wall clock's whole seconds, then the cache's clock) ``cached`` would
        keep returning it as it is, if nothing else happens to it. None when it is not
        simply what the cache holds (newer unsaved tokens overlay it)."""
        entry = self._cache.entry(cache_key)
        if entry is None or entry[1][0] is not session or self.pending.get(cache_key) is not None:
            return None
        return entry, min(session.expires_at, session.last_seen_at + self._touch_interval), self._cache.stale_at(entry)

    def still_cached(self, cache_key: str, entry: object, stale_at: float) -> bool:
        """Whether the cache entry ``cached_until`` gave is still the one held for
        ``cache_key``, fresh (``stale_at`` on the cache's clock), with no newer unsaved tokens
        or unsaved activity; counted as a cache hit when it is. Every change to a cached
        session (a refresh, a touch, a sign-out, an eviction) replaces or drops its entry."""
        cache = self._cache
        if (cache.entry(cache_key) is not entry or cache.clock() >= stale_at
                or self.pending.get(cache_key) is not None or cache_key in self._unsaved_activity):
            return False
        cache.hit(cache_key)
        return True

    def _overlay(self, cache_key: str, session: Session, version: int) -> tuple[Session, int]:
        """What the cache or store says, unless this process holds newer unsaved tokens
        for the same version; a higher version supersedes them (newer tokens exist)."""
        pending = self.pending.get(cache_key)
        if pending is None:
            return session, version
        if version > pending.base_version:
            self.pending.release(cache_key, pending)
            return session, version
        last_seen = max(session.last_seen_at, pending.session.last_seen_at)
        return replace(pending.session, last_seen_at=last_seen), pending.base_version

    def forget(self, ticket: SessionTicket) -> None:
        """The store says the session is gone: drop this process's copy."""
        self._cache.evict(SessionCache.key_for(ticket.encode()))

    def generation(self, ticket: SessionTicket) -> int:
        return self._cache.generation(SessionCache.key_for(ticket.encode()))

    def has_pending(self, ticket: SessionTicket) -> bool:
        return self.pending.get(SessionCache.key_for(ticket.encode())) is not None

    def pending_full(self, ticket: SessionTicket) -> bool:
        return self.pending.full(SessionCache.key_for(ticket.encode()))

    async def read(self, ticket: SessionTicket, now: int, cache_key: str | None = None) -> tuple[Session, int] | None:
        """Straight from the store, past the cache. ``cache_key``: the ticket's, when known."""
        record = await self.store.get(ticket.key, now)
        if record is None:
            return None
        opened = self.opened(ticket, record)
        if opened is not None:
            self._remember_cache_key(ticket, cache_key)
        return opened

    def _remember_cache_key(self, ticket: SessionTicket, cache_key: str | None = None) -> None:
        keys = self._cache_keys
        if keys is None:
            return
        key = hash(ticket.key)
        keys.pop(key, None)  # to the end: the most recently read
        # the cache's own key string when the caller has it: one copy, not two
        keys[key] = cache_key if cache_key is not None else SessionCache.key_for(ticket.encode())
        while len(keys) > self._cache_keys_limit:
            del keys[next(iter(keys))]

    def opened(self, ticket: SessionTicket, record: SessionRecord) -> tuple[Session, int] | None:
        """A record the store returned, decrypted; None when the cookie's secret does not open it."""
        try:
            session = Session.unseal(self._box, ticket, record.payload)
        except (Unsealable, ValueError, TypeError):
            return None  # a wrong secret is no session; the item stays (it may be someone's)
        session.last_seen_at = record.last_seen_at
        return session, record.version

    def remember(self, ticket: SessionTicket, session: Session, version: int, generation: int) -> tuple[Session, int]:
        """Put what another replica wrote into this process's cache (unless signed out
        since); returns what this process now serves (its own unsaved tokens may be newer)."""
        cache_key = SessionCache.key_for(ticket.encode())
        self._cache.put(cache_key, (session, version), generation)
        return self._overlay(cache_key, session, version)

    async def save_refreshed(self, ticket: SessionTicket, session: Session, version: int, generation: int) -> None:
        """Write refreshed tokens, conditional on ``version`` (only token writes change it).

        The tokens are pinned first, so a rotated refresh token is never lost in this
        process; a failed write is retried in the background until it lands, a higher
        version shows up, the session ends, or its absolute expiry passes. Raises
        ``VersionConflict`` when the session is gone (its new tokens are revoked) and
        ``StoreError`` when the write is left to the retries.
        """
        cache_key = SessionCache.key_for(ticket.encode())
        if self._cache.generation(cache_key) != generation:
            await self._revoke(session, "signed_out")  # signed out here while the refresh ran
            raise VersionConflict("signed out during the refresh")
        write = PendingWrite(ticket, session, version, session.seal(self._box, ticket), secrets.token_urlsafe(12))
        self.pending.hold(cache_key, write)
        self._cache.put(cache_key, (session, version), generation)
        try:
            await self._write(cache_key, write)
        except StoreError:
            if self.pending.get(cache_key) is write:
                self._retry_later(cache_key, write)
            raise

    async def save_pending(self, ticket: SessionTicket) -> int | None:
        """Write this session's unsaved tokens now; the new version, or None when nothing
        was pending. A refresh must not start from unsaved tokens: if the older write
        landed later it would supersede (and drop) the newer tokens."""
        cache_key = SessionCache.key_for(ticket.encode())
        write = self.pending.get(cache_key)
        if write is None:
            return None
        return await self._write(cache_key, write)

    async def _write(self, cache_key: str, write: PendingWrite) -> int:
        """One attempt (the store's own bounded retries inside); settles ``write`` unless
        the store is unavailable. Returns the version written."""
        try:
            record = await self.store.update(write.ticket.key, write.base_version, write.payload, write.write_id)
        except VersionConflict as exc:
            if self.pending.release(cache_key, write) is None:
                raise
            self._cache.evict(cache_key)  # ended, or another writer won: read the store next time
            if exc.current is None:  # signed out meanwhile: nobody will use these tokens
                await self._revoke(write.session, "signed_out")
            raise
        if self.pending.release(cache_key, write) is not None:
            self._cache.put(cache_key, (write.session, record.version))
        return record.version

    def _retry_later(self, cache_key: str, write: PendingWrite) -> None:
        running = self._retries.get(cache_key)
        if running is not None:
            running.cancel()  # a newer refresh of the same session replaces the older write
        task = asyncio.create_task(self._retry(cache_key, write))
        self._retries[cache_key] = task
        task.add_done_callback(lambda done: self._retries.pop(cache_key, None) if self._retries.get(cache_key) is done else None)

    async def _retry(self, cache_key: str, write: PendingWrite) -> None:
        attempt = 0
        while self.pending.get(cache_key) is write:
            await self._sleep(RETRY_DELAYS[attempt] if attempt < len(RETRY_DELAYS) else RETRY_CAP)
            attempt += 1
            if self.pending.get(cache_key) is not write:
                return  # saved by someone else's flush, superseded or signed out meanwhile
            if self._wall_clock() >= write.session.expires_at:
                self.pending.release(cache_key, write)
                metrics.SESSION_WRITES_LOST.labels("expired").inc()
                log().warning("refresh_write_abandoned", extra={"fields": {"sub": write.session.sub, "reason": "expired"}})
                return
            try:
                await self._write(cache_key, write)
            except VersionConflict:
                return
            except StoreError:
                continue
            log().info("refresh_write_saved", extra={"fields": {"sub": write.session.sub, "attempts": attempt + 1}})
            return

    async def flush(self, timeout: float, final: bool = True) -> int:
        """Write every pending session now, retrying until ``timeout`` (at shutdown, before
        the store closes); returns how many are still unsaved. ``final``: log and count
        those as lost (the process is about to exit)."""
        deadline = self._clock() + timeout
        for task in list(self._retries.values()):
            task.cancel()

        async def save(cache_key: str, write: PendingWrite) -> None:
            try:
                await asyncio.wait_for(self._write(cache_key, write), max(0.0, deadline - self._clock()))
            except (StoreError, asyncio.TimeoutError):
                pass

        delay = 0.2
        while len(self.pending) and self._clock() < deadline:
            await asyncio.gather(*(save(key, write) for key, write in self.pending.items()))
            if len(self.pending):
                await self._sleep(min(delay, max(0.0, deadline - self._clock())))
                delay = min(delay * 2, 2.0)
        unsaved = self.pending.items()
        if final:
            for _, write in unsaved:
                log().error("refresh_write_lost", extra={"fields": {"sub": write.session.sub, "reason": "shutdown"}})
            if unsaved:
                metrics.SESSION_WRITES_LOST.labels("shutdown").inc(len(unsaved))
        return len(unsaved)

    async def create(self, ticket: SessionTicket, session: Session) -> None:
        # What a back-channel logout will name this session by (its ID token's sid, and its
        # sub), hashed with the provider's issuer; set once, here (OIDC Back-Channel Logout 1.0, 2.7).
        issuer = self.provider or session.claims.get("iss")
        by_sid, by_sub = session_hashes(issuer, session.claims) if isinstance(issuer, str) else ("", "")
        await self.store.create(
            SessionRecord(
                key=ticket.key,
                sub=session.sub,
                payload=session.seal(self._box, ticket),
                expires_at=session.expires_at,
                version=1,
                created_at=session.created_at,
                last_seen_at=session.last_seen_at,
                sid_hash=by_sid,
                sub_hash=by_sub,
            ),
            secrets.token_urlsafe(12),  # a fresh random key: a failed condition can only be our own earlier write
        )
        cache_key = SessionCache.key_for(ticket.encode())
        self._cache.put(cache_key, (session, 1))
        self._remember_cache_key(ticket, cache_key)

    async def end_for_logout(self, logout: Logout) -> int:
        """End the sessions a verified logout token names (OIDC Back-Channel Logout 1.0, 2.7):
        the one(s) of its ``sid`` when it has one (and, when it has a ``sub`` too, only those
        of that ``sub``: 2.6 lets the RP check both), else every session of its ``sub``. Gone
        from the store, so every replica refuses them within its cache TTL, and from this
        process's cache at once. Returns how many were ended. Idempotent. Raises
        ``StoreError``; what was deleted before stays deleted (sending the token again
        finishes the rest).

        Their refresh tokens are not revoked: the provider ended the session and, by 2.7,
        revokes what it issued to it; mod_auth_openidc does not revoke on back-channel
        logout either."""
        if logout.sid is not None:
            keys = await self.store.keys_with_sid(sid_hash(logout.issuer, logout.sid))
            if keys and logout.sub is not None:  # a sid with another user's sub names nothing
                of_sub = set(await self.store.keys_with_sub(sub_hash(logout.issuer, logout.sub)))
                keys = [key for key in keys if key in of_sub]
        else:
            assert logout.sub is not None  # check_logout_token: one of them
            keys = await self.store.keys_with_sub(sub_hash(logout.issuer, logout.sub))
        for start in range(0, len(keys), _LOGOUT_CONCURRENCY):
            await asyncio.gather(*(self._end_by_key(key) for key in keys[start:start + _LOGOUT_CONCURRENCY]))
        return len(keys)

    async def _end_by_key(self, key: str) -> None:
        cache_key = self._cache_keys.pop(hash(key), None) if self._cache_keys is not None else None
        if cache_key is not None:
            self._cache.evict(cache_key)  # also keeps a read or refresh under way from putting it back
            self.pending.release(cache_key)  # unsaved tokens of an ended session: dropped, not written
            retry = self._retries.pop(cache_key, None)
            if retry is not None:
                retry.cancel()
        await self.store.delete(key)

    async def end(self, ticket: SessionTicket) -> list[str]:
        """Sign-out: gone from this replica's cache at once, and from the store. Returns
        the refresh tokens to revoke: the one the store held (it may be newer than this
        replica's copy) and any newer one this process had not saved yet."""
        cache_key = SessionCache.key_for(ticket.encode())
        self._cache.evict(cache_key)
        if self._cache_keys is not None:
            self._cache_keys.pop(hash(ticket.key), None)
        unsaved = self.pending.release(cache_key)
        retry = self._retries.pop(cache_key, None)
        if retry is not None:
            retry.cancel()
        tokens = [unsaved.session.refresh_token] if unsaved is not None and unsaved.session.refresh_token else []
        try:
            record = await self.store.delete(ticket.key)
        except StoreError:
            if unsaved is not None:  # still not in the store: keep it, the sign-out did not happen
                self.pending.hold(cache_key, unsaved)
                self._retry_later(cache_key, unsaved)
            raise
        stored = self.opened(ticket, record) if record is not None else None
        if stored is not None and stored[0].refresh_token and stored[0].refresh_token not in tokens:
            tokens.append(stored[0].refresh_token)
        return tokens

    async def _revoke(self, session: Session, reason: str) -> None:
        if self.revoke is not None and session.refresh_token:
            log().info("refresh_token_revoked", extra={"fields": {"sub": session.sub, "reason": reason}})
            await self.revoke(session.refresh_token)
