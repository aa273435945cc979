"""Ending the sessions a logout token names (OIDC Back-Channel Logout 1.0, 2.7) through
``Sessions`` and the memory store: by sid, by sub, gone from this process's cache at once,
nothing revoked, nobody else touched; the memory store's record of logout tokens."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from authproxy.oidc.logout import Logout, session_hashes, sid_hash, sub_hash
from authproxy.session.cache import SessionCache
from authproxy.session.cookies import SessionTicket
from authproxy.session.crypto import SecretBox
from authproxy.session.store import Session, Sessions
from authproxy.store.memory import MemoryStore

ISSUER = "https://op.example.test"
NOW = 1000
BOX = SecretBox(["k" * 40], b"authproxy session")


def session(sub="alice", sid="s-1"):
    claims = {"iss": ISSUER, "sub": sub, **({"sid": sid} if sid else {})}
    return Session(sub=sub, claims=claims, access_token="AT", id_token=None, refresh_token="RT",
                   access_expires_at=NOW + 300, created_at=NOW, expires_at=NOW + 3600, last_seen_at=NOW)


def session_of(claims):
    return Session(sub=claims["sub"], claims=claims, access_token="AT", id_token=None, refresh_token="RT",
                   access_expires_at=NOW + 300, created_at=NOW, expires_at=NOW + 3600, last_seen_at=NOW)


def sessions(store, cache=None, provider=None, by_store_key=True):
    # A cache TTL far beyond the test: only an eviction can make a cached session go.
    service = Sessions(store, BOX, cache if cache is not None else SessionCache(100, ttl=3600), idle_timeout=7200,
                       provider=provider)
    if by_store_key:
        service.find_by_store_key()  # as the back-channel logout endpoint does when it is built
    return service


async def signed_in(service, **claims):
    ticket = SessionTicket.new()
    await service.create(ticket, session(**claims))
    return ticket


async def test_a_sid_logout_ends_that_provider_session_everywhere_and_only_it():
    store = MemoryStore()
    here, elsewhere = sessions(store), sessions(store)  # two replicas sharing one store
    revoked = []

    async def revoke(token):
        revoked.append(token)

    here.revoke = elsewhere.revoke = revoke
    first = await signed_in(here)
    second = await signed_in(elsewhere)  # the same provider session, signed in on the other replica
    other_browser = await signed_in(here, sid="s-2")
    bob = await signed_in(here, sub="bob", sid="s-9")
    assert await elsewhere.load(first, NOW) is not None  # now cached there too

    ended = await here.end_for_logout(Logout(ISSUER, "alice", "s-1", "j", NOW + 180))

    assert ended == 2
    assert await here.load(first, NOW) is None  # at once on the replica that got the token: cache evicted
    assert await here.load(second, NOW) is None  # never cached here: the store says gone
    assert await store.get(first.key, NOW) is None and await store.get(second.key, NOW) is None
    assert await here.load(other_browser, NOW) is not None and await here.load(bob, NOW) is not None
    assert revoked == []  # the provider ended them: nothing revoked (as mod_auth_openidc)
    # The other replica still serves its cached copy until its cache TTL (the documented bound),
    # and refuses it as soon as it asks the store:
    assert await elsewhere.read(first, NOW) is None


async def test_a_sub_logout_ends_every_session_of_the_user():
    store = MemoryStore()
    service = sessions(store)
    tickets = [await signed_in(service, sid=f"s-{n}") for n in range(3)]
    no_sid = await signed_in(service, sid=None)  # a sign-in whose ID token had no sid
    bob = await signed_in(service, sub="bob")
    assert await service.end_for_logout(Logout(ISSUER, "alice", None, "j", NOW + 180)) == 4
    for ticket in (*tickets, no_sid):
        assert await service.load(ticket, NOW) is None
    assert await service.load(bob, NOW) is not None


async def test_another_issuers_logout_finds_nothing():
    service = sessions(MemoryStore())
    ticket = await signed_in(service)
    assert await service.end_for_logout(Logout("https://other.example.test", "alice", "s-1", "j", NOW)) == 0
    assert await service.end_for_logout(Logout("https://other.example.test", "alice", None, "j", NOW)) == 0
    assert await service.load(ticket, NOW) is not None


async def test_the_lookups_are_by_hashes_and_the_sid_is_never_stored():
    """The indexes hold hashes only; the provider's session id is nowhere in the record. (The
    user's plain sub is: the record's ``sub`` attribute, kept as before this feature.)"""
    store = MemoryStore()
    ticket = await signed_in(sessions(store))
    record = await store.get(ticket.key, NOW)
    assert (record.sid_hash, record.sub_hash) == (sid_hash(ISSUER, "s-1"), sub_hash(ISSUER, "alice"))
    assert (record.sid_hash, record.sub_hash) == session_hashes(ISSUER, session().claims)
    assert "s-1" not in repr(record) and record.sub == "alice"


async def test_a_sid_and_a_sub_end_only_sessions_that_have_both():
    """OIDC Back-Channel Logout 1.0, 2.6 lets the RP check the sub too: a token with the right
    sid and another user's sub names no session."""
    store = MemoryStore()
    service = sessions(store)
    alice = await signed_in(service)
    assert await service.end_for_logout(Logout(ISSUER, "mallory", "s-1", "j", NOW + 180)) == 0
    assert await service.load(alice, NOW) is not None
    assert await service.end_for_logout(Logout(ISSUER, "alice", "s-2", "j", NOW + 180)) == 0  # her sub, another sid
    assert await service.load(alice, NOW) is not None
    assert await service.end_for_logout(Logout(ISSUER, "alice", "s-1", "j", NOW + 180)) == 1
    assert await service.load(alice, NOW) is None


async def test_sessions_are_hashed_with_the_providers_issuer_whichever_issued_the_id_token():
    """A provider with several issuers (Cognito's replica regions, issuer_aliases): an ID
    token from its alias and a logout token from its canonical issuer name one session."""
    store = MemoryStore()
    service = sessions(store, provider=ISSUER)
    ticket = SessionTicket.new()
    await service.create(ticket, session_of({"iss": "https://replica.example.test", "sub": "alice", "sid": "s-1"}))
    record = await store.get(ticket.key, NOW)
    assert (record.sid_hash, record.sub_hash) == (sid_hash(ISSUER, "s-1"), sub_hash(ISSUER, "alice"))
    assert await service.end_for_logout(Logout(ISSUER, "alice", "s-1", "j", NOW + 180)) == 1


def test_every_session_the_cache_can_hold_can_be_evicted_at_once():
    """The store key -> cache key map is as large as the cache (store.cache.max_entries), so a
    larger cache still loses an ended session at once, not only after its TTL."""
    assert sessions(MemoryStore(), SessionCache(250_000, ttl=30))._cache_keys_limit == 250_000
    assert sessions(MemoryStore(), SessionCache(10, ttl=30))._cache_keys_limit == 10


async def test_without_the_endpoint_no_store_key_map_is_kept_and_a_logout_still_ends_the_session():
    """The map costs memory per cached session; only back-channel logout reads it. Without it
    an ended session is gone from the store at once and from this cache within its TTL."""
    store = MemoryStore()
    service = sessions(store, SessionCache(100, ttl=3600), by_store_key=False)
    ticket = await signed_in(service)
    assert await service.read(ticket, NOW) is not None
    assert service._cache_keys is None
    assert await service.end_for_logout(Logout(ISSUER, "alice", "s-1", "j", NOW + 180)) == 1
    assert await store.get(ticket.key, NOW) is None
    assert await service.load(ticket, NOW) is not None  # this cache's copy, until its TTL (the trade-off)


def test_the_back_channel_logout_endpoint_has_cached_sessions_found_by_store_key():
    from authproxy.config.schema import OidcConfig
    from authproxy.web.backchannel import BackChannelLogout

    service = sessions(MemoryStore(), by_store_key=False)
    oidc = OidcConfig(issuer=ISSUER, client_id="app", client_secret="s" * 16)
    BackChannelLogout(oidc, service, lambda: None, lambda: float(NOW))
    assert service._cache_keys == {}


async def test_a_full_cache_loses_every_ended_session_at_once():
    service = sessions(MemoryStore(), SessionCache(5, ttl=3600))
    for n in range(5):
        await signed_in(service, sid=f"s-{n}")
    assert len(service._cache) == 5
    assert await service.end_for_logout(Logout(ISSUER, "alice", None, "j", NOW + 180)) == 5
    assert len(service._cache) == 0  # the cache's TTL is far away: only the eviction made them go


class NoWalk(OrderedDict):
    """A record of logout tokens that fails a test as soon as anything walks all of it."""

    def items(self):
        raise AssertionError("walked every record")

    keys = values = __iter__ = items


async def test_the_memory_store_forgets_lapsed_logout_tokens_without_walking_them_all():
    store = MemoryStore(max_entries=4)
    for n in range(4):
        assert await store.remember_logout_token(f"t{n}", NOW + 10 * (n + 1), NOW)  # t0 lapses first
    store._logout_tokens = NoWalk(store._logout_tokens)
    for n in range(4, 40):  # over the bound on every call
        assert await store.remember_logout_token(f"t{n}", NOW + 1000 + n, NOW)
        assert len(store._logout_tokens) <= 4
    assert not await store.logout_token_seen("t0", NOW)  # the soonest to lapse went first
    assert await store.logout_token_seen("t39", NOW)
    assert not await store.remember_logout_token("t39", NOW + 2000, NOW + 1)  # still a replay


async def test_the_memory_store_drops_lapsed_logout_tokens_before_live_ones():
    store = MemoryStore(max_entries=3)
    assert await store.remember_logout_token("old", NOW + 5, NOW)
    assert await store.remember_logout_token("live-1", NOW + 100, NOW)
    assert await store.remember_logout_token("live-2", NOW + 100, NOW)
    assert await store.remember_logout_token("new", NOW + 100, NOW + 6)  # "old" lapsed: it makes room
    for token in ("live-1", "live-2", "new"):
        assert await store.logout_token_seen(token, NOW + 6)
    assert not await store.logout_token_seen("old", NOW + 6)
    assert await store.remember_logout_token("old", NOW + 200, NOW + 6)  # lapsed: may be recorded again


@pytest.mark.parametrize("until,now,seen", [(NOW + 10, NOW + 10, True), (NOW + 10, NOW + 11, False)])
async def test_a_logout_tokens_record_counts_until_its_end(until, now, seen):
    store = MemoryStore()
    await store.remember_logout_token("t", until, NOW)
    assert await store.logout_token_seen("t", now) is seen
    assert await store.remember_logout_token("t", until + 100, now) is not seen


async def test_unsaved_refreshed_tokens_of_an_ended_session_are_dropped_not_written():
    store = MemoryStore()
    service = sessions(store)
    ticket = await signed_in(service)
    loaded, version = await service.load(ticket, NOW)
    cache_key = SessionCache.key_for(ticket.encode())

    async def unavailable(*args, **kwargs):
        from authproxy.store.base import StoreUnavailable

        raise StoreUnavailable("down")

    real_update, store.update = store.update, unavailable
    try:
        await service.save_refreshed(ticket, loaded, version, service.generation(ticket))
    except Exception:  # noqa: BLE001 - left to the retries, as designed
        pass
    assert service.pending.get(cache_key) is not None  # held for a retry
    store.update = real_update
    assert await service.end_for_logout(Logout(ISSUER, "alice", "s-1", "j", NOW + 180)) == 1
    assert service.pending.get(cache_key) is None and not service._retries  # nothing left to write
    assert await store.get(ticket.key, NOW) is None
