"""Refresh decisions and the single-flight refresher (with the memory store and a fake provider)."""

import asyncio
import time

import pytest

from authproxy.errors import RefreshUnavailable, SessionEnded
from authproxy.oidc.client import IdpRejected, IdpUnavailable, TokenResponse
from authproxy.session.cache import SessionCache
from authproxy.session.cookies import SessionTicket
from authproxy.session.crypto import SecretBox
from authproxy.session.refresh import Refresher, due
from authproxy.session.store import Session, Sessions
from authproxy.store.memory import MemoryStore

BOX = SecretBox(["r" * 40], b"authproxy session")
NOW = 10_000


def session(**changes):
    values = dict(sub="alice", claims={}, access_token="AT-1", id_token="IT-1", refresh_token="RT-1",
                  access_expires_at=NOW + 30, access_issued_at=NOW - 3570, created_at=NOW - 3600,
                  expires_at=NOW + 40_000, last_seen_at=NOW)
    values.update(changes)
    return Session(**values)


@pytest.mark.parametrize(
    ("changes", "before", "expected"),
    [
        ({}, 60, True),  # 30 s left, refresh 60 s before
        ({}, 10, False),
        ({"access_expires_at": NOW + 100, "access_issued_at": NOW - 20}, 60, False),  # 120 s token: clamp to 60 s
        ({"access_expires_at": NOW + 9, "access_issued_at": NOW - 11}, 60, True),  # 20 s token: half is 10 s
        ({"access_expires_at": NOW + 11, "access_issued_at": NOW - 9}, 60, False),
        ({"refresh_token": None}, 60, False),  # nothing to refresh with
        ({"access_expires_at": None}, 60, False),
    ],
)
def test_due(changes, before, expected):
    assert due(session(**changes), NOW, before) is expected


def test_due_counts_the_id_token_only_when_the_route_injects_it():
    fresh_access = dict(access_expires_at=NOW + 3000, access_issued_at=NOW - 600)
    stale_id = session(claims={"exp": NOW + 20, "iat": NOW - 3580}, **fresh_access)
    assert due(stale_id, NOW, 60) is False
    assert due(stale_id, NOW, 60, id_token=True) is True
    assert due(session(claims={"exp": NOW + 3000, "iat": NOW - 600}, **fresh_access), NOW, 60, id_token=True) is False


class FakeProvider:
    def __init__(self, outcome="ok", rotate=True):
        self.calls = 0
        self.outcome = outcome
        self.rotate = rotate

    async def refresh(self, refresh_token):
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.outcome == "invalid_grant":
            raise IdpRejected("token", "invalid_grant", 400)
        if self.outcome == "down":
            raise IdpUnavailable("token", "token: HTTP 503")
        return TokenResponse(access_token=f"AT-{self.calls + 1}", id_token=None,
                             refresh_token=f"RT-{self.calls + 1}" if self.rotate else None,
                             expires_in=3600, token_type="Bearer", scope=None)

    async def revoke(self, token, hint="refresh_token"):
        pass


async def setup(provider, store=None, now=NOW):
    store = store or MemoryStore()
    sessions = Sessions(store, BOX, SessionCache(100, 30), idle_timeout=7200)
    ticket = SessionTicket.new()
    await sessions.create(ticket, session())
    return Refresher(sessions, lambda: provider, 60, clock=lambda: now), sessions, ticket, store


async def test_concurrent_requests_share_one_refresh_and_the_rotated_token_is_stored():
    provider = FakeProvider()
    refresher, sessions, ticket, _ = await setup(provider)
    results = await asyncio.gather(*(refresher.fresh(ticket, session(), 1) for _ in range(20)))
    assert provider.calls == 1
    assert {r.access_token for r in results} == {"AT-2"}
    stored, version = await sessions.read(ticket, NOW)
    assert (stored.access_token, stored.refresh_token, version) == ("AT-2", "RT-2", 2)


async def test_two_replicas_one_refresh():
    provider = FakeProvider()
    first, sessions, ticket, store = await setup(provider)
    second = Refresher(Sessions(store, BOX, SessionCache(100, 30), 7200), lambda: provider, 60, clock=lambda: NOW)
    results = await asyncio.gather(first.fresh(ticket, session(), 1), second.fresh(ticket, session(), 1))
    assert provider.calls == 1
    # the winner has new tokens; the other replica keeps forwarding its still-valid one meanwhile
    assert sorted(r.access_token for r in results) == ["AT-1", "AT-2"]


def running_clock(start):
    origin = time.monotonic()
    return lambda: start + (time.monotonic() - origin)


async def test_with_an_expired_token_the_other_replica_waits_for_the_winner():
    provider = FakeProvider()
    store = MemoryStore()
    clock = running_clock(NOW + 31)  # the access token expired at NOW + 30
    sessions = Sessions(store, BOX, SessionCache(100, 30), 7200)
    ticket = SessionTicket.new()
    await sessions.create(ticket, session())
    first = Refresher(sessions, lambda: provider, 60, clock=clock)
    second = Refresher(Sessions(store, BOX, SessionCache(100, 30), 7200), lambda: provider, 60, clock=clock)
    results = await asyncio.gather(first.fresh(ticket, session(), 1), second.fresh(ticket, session(), 1))
    assert provider.calls == 1 and {r.access_token for r in results} == {"AT-2"}


async def test_a_winner_that_never_finishes_makes_the_other_give_up(monkeypatch):
    monkeypatch.setattr("authproxy.session.refresh.LOSER_WAIT", 0.3)
    store = MemoryStore()
    sessions = Sessions(store, BOX, SessionCache(100, 30), 7200)
    ticket = SessionTicket.new()
    await sessions.create(ticket, session())
    assert (await store.acquire_refresh_lease(ticket.key, 1, NOW, NOW + 100, "other")).acquired  # never released
    loser = Refresher(sessions, lambda: FakeProvider(), 60, clock=running_clock(NOW + 31))
    with pytest.raises(RefreshUnavailable):
        await loser.fresh(ticket, session(), 1)


class SlowProvider(FakeProvider):
    async def refresh(self, refresh_token):
        await asyncio.sleep(0.05)  # long enough for other requests to act meanwhile
        return await super().refresh(refresh_token)


async def refresh_in_background():
    refresher, sessions, ticket, store = await setup(SlowProvider())
    refreshing = asyncio.create_task(refresher.fresh(ticket, session(), 1))
    await asyncio.sleep(0.01)
    return refreshing, sessions, ticket, store


async def test_activity_during_a_refresh_does_not_lose_the_rotated_token():
    refreshing, sessions, ticket, _ = await refresh_in_background()
    assert await sessions.load(ticket, NOW + 61) is not None  # records activity while the refresh runs
    await refreshing
    stored, version = await sessions.read(ticket, NOW + 61)
    assert (stored.refresh_token, version) == ("RT-2", 2)


async def test_sign_out_during_a_refresh_stays_signed_out():
    refreshing, sessions, ticket, store = await refresh_in_background()
    await sessions.end(ticket)
    with pytest.raises(SessionEnded):  # the request that waited for the refresh is not served
        await refreshing
    assert await sessions.load(ticket, NOW) is None
    assert await store.get(ticket.key, NOW) is None


async def test_a_failed_refresh_keeps_the_lease_for_its_backoff_then_tries_again():
    provider = FakeProvider("down")
    store = MemoryStore()
    sessions = Sessions(store, BOX, SessionCache(100, 30), idle_timeout=7200)
    ticket = SessionTicket.new()
    await sessions.create(ticket, session())
    now = {"wall": NOW, "mono": 0.0}
    refresher = Refresher(sessions, lambda: provider, 60, clock=lambda: now["wall"], monotonic=lambda: now["mono"],
                          jitter=lambda: 0.99)
    assert (await refresher.fresh(ticket, session(), 1)).access_token == "AT-1"
    provider.outcome = "ok"
    assert (await refresher.fresh(ticket, session(), 1)).access_token == "AT-1"  # backing off (1 s)
    assert provider.calls == 1
    now["wall"] += 2
    now["mono"] += 2
    assert (await refresher.fresh(ticket, session(), 1)).access_token == "AT-3"
    assert provider.calls == 2


async def test_a_new_id_token_is_verified_before_its_claims_replace_the_old():
    class WithIdToken(FakeProvider):
        async def refresh(self, refresh_token):
            tokens = await super().refresh(refresh_token)
            return TokenResponse(tokens.access_token, "NEW-ID-TOKEN", tokens.refresh_token, 3600, "Bearer", None)

    verified = []

    async def verify(token, now, fetch=True):
        verified.append(token)
        return {"sub": "alice", "exp": now + 3600, "email": "new@example.com"}

    store = MemoryStore()
    sessions = Sessions(store, BOX, SessionCache(100, 30), 7200)
    ticket = SessionTicket.new()
    await sessions.create(ticket, session())
    refresher = Refresher(sessions, lambda: WithIdToken(), 60, clock=lambda: NOW, verify_id_token=verify)
    refreshed = await refresher.fresh(ticket, session(), 1)
    assert verified == ["NEW-ID-TOKEN"]
    assert refreshed.id_token == "NEW-ID-TOKEN" and refreshed.claims["email"] == "new@example.com"


async def test_no_refresh_token_in_the_response_keeps_the_old_one():
    refresher, sessions, ticket, _ = await setup(FakeProvider(rotate=False))
    assert (await refresher.fresh(ticket, session(), 1)).refresh_token == "RT-1"


async def test_invalid_grant_ends_the_session():
    refresher, sessions, ticket, store = await setup(FakeProvider("invalid_grant"))
    with pytest.raises(SessionEnded):
        await refresher.fresh(ticket, session(), 1)
    assert await store.get(ticket.key, NOW) is None


async def test_provider_down_serves_a_still_valid_token_else_503():
    refresher, _, ticket, _ = await setup(FakeProvider("down"))
    assert (await refresher.fresh(ticket, session(), 1)).access_token == "AT-1"  # 30 s left: keep serving
    expired, _, ticket2, _ = await setup(FakeProvider("down"), now=NOW + 31)
    with pytest.raises(RefreshUnavailable):
        await expired.fresh(ticket2, session(), 1)


async def test_a_failed_write_keeps_the_new_tokens_in_this_process():
    class FailingWrites(MemoryStore):
        async def update(self, key, expected_version, payload, write_id):
            from authproxy.store.base import StoreUnavailable

            raise StoreUnavailable("update: down")

    refresher, sessions, ticket, _ = await setup(FakeProvider(), store=FailingWrites())
    refreshed = await refresher.fresh(ticket, session(), 1)
    assert refreshed.refresh_token == "RT-2"
    cached, _ = await sessions.load(ticket, NOW)  # the rotated refresh token was not lost
    assert cached.refresh_token == "RT-2"


async def test_ready_says_when_fresh_would_return_the_session_unchanged():
    """The signed-in request's path skips ``fresh`` (an await) only when it would do nothing."""
    refresher, _, _, _ = await setup(FakeProvider())
    assert refresher.ready(session(access_expires_at=NOW + 3600))
    assert not refresher.ready(session(access_expires_at=NOW + 30))  # within refresh_before_expiry: due
    assert refresher.ready(session(access_expires_at=NOW + 30, refresh_token=None))  # nothing to refresh with
    verifying = Refresher(refresher._sessions, lambda: None, 60, clock=lambda: NOW,
                          verify_id_token=lambda *args, **kwargs: None)
    assert not verifying.ready(session(access_expires_at=NOW + 3600, unverified_id_token="IT-2"))
