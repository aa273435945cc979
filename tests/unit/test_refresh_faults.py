"""Refresh under faults (issue 16): every scenario with a fake clock, a scripted provider
that rotates refresh tokens with reuse detection, and the memory store made slow or
failing on chosen operations. Each test names the finding it covers."""

from __future__ import annotations

import asyncio

import pytest

from authproxy import metrics
from authproxy.errors import RefreshUnavailable, SessionEnded
from authproxy.oidc.client import IdpUnavailable
from authproxy.oidc.verify import TokenInvalid, UnknownSigningKey
from authproxy.session.cache import SessionCache
from authproxy.session.cookies import SessionTicket
from authproxy.session.crypto import SecretBox
from authproxy.session.refresh import LeasePlan, Refresher
from authproxy.session.store import Session, Sessions
from authproxy.store.base import SessionRecord, StoreUnavailable
from authproxy.store.dynamodb import DynamoDBStore
from authproxy.store.memory import MemoryStore
from tests.support.scripted_idp import FakeClock, ScriptedProvider, settle

BOX = SecretBox(["s" * 40], b"authproxy session")
NOW = 1_800_000_000


def session(**changes):
    values = dict(sub="alice", claims={"sub": "alice", "exp": NOW + 3600, "iat": NOW}, access_token="AT-1",
                  id_token="IT-1", refresh_token="RT-1", access_expires_at=NOW + 30, access_issued_at=NOW - 3570,
                  created_at=NOW - 3600, expires_at=NOW + 40_000, last_seen_at=NOW)
    values.update(changes)
    return Session(**values)


class FlakyStore(MemoryStore):
    """The memory store, with chosen operations down or slow (on the fake clock); counts calls."""

    WRITES = ("create", "update", "touch", "acquire_refresh_lease", "renew_refresh_lease", "release_refresh_lease",
              "delete")

    def __init__(self, clock: FakeClock, write_budget: float = 0.0):
        super().__init__()
        self.clock = clock
        self.write_budget = write_budget
        self.down: set[str] = set()
        self.slow: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.gate: asyncio.Event | None = None  # get waits for it when set
        self.unanswered: set[str] = set()  # done, but the caller hears a failure (once)

    def writes(self) -> int:
        return sum(self.calls.get(name, 0) for name in self.WRITES)

    async def _enter(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.slow:
            self.clock.advance(self.slow[name])
        await asyncio.sleep(0)
        if name in self.down:
            raise StoreUnavailable(f"{name}: down")

    async def get(self, key, now):
        await self._enter("get")
        if self.gate is not None:
            await self.gate.wait()
        return await super().get(key, now)

    async def create(self, record, write_id):
        await self._enter("create")
        return await super().create(record, write_id)

    async def update(self, key, expected_version, payload, write_id):
        await self._enter("update")
        return await super().update(key, expected_version, payload, write_id)

    async def touch(self, key, last_seen_at):
        await self._enter("touch")
        return await super().touch(key, last_seen_at)

    async def acquire_refresh_lease(self, key, expected_version, now, until, owner):
        await self._enter("acquire_refresh_lease")
        result = await super().acquire_refresh_lease(key, expected_version, now, until, owner)
        if "acquire_refresh_lease" in self.unanswered:
            self.unanswered.discard("acquire_refresh_lease")
            raise StoreUnavailable("acquire: the answer was lost")  # landed all the same
        return result

    async def renew_refresh_lease(self, key, version, owner, until, new_owner=None):
        await self._enter("renew_refresh_lease")
        return await super().renew_refresh_lease(key, version, owner, until, new_owner)

    async def release_refresh_lease(self, key, version, owner):
        await self._enter("release_refresh_lease")
        return await super().release_refresh_lease(key, version, owner)

    async def delete(self, key):
        await self._enter("delete")
        return await super().delete(key)


class Replica:
    """One worker: its own cache, sessions service and refresher, sharing the store."""

    def __init__(self, store, provider, clock, *, skew=0.0, cache_size=100, ttl=30.0, pending_limit=1000,
                 verify=None, idle_timeout=7200, jitter=0.0):
        self.clock = clock
        self.wall = clock.skewed(skew)
        self.cache = SessionCache(cache_size, ttl, clock=clock.monotonic)
        self.sessions = Sessions(store, BOX, self.cache, idle_timeout, clock=clock.monotonic, wall_clock=self.wall,
                                 sleep=clock.sleep, pending_limit=pending_limit)
        self.refresher = Refresher(self.sessions, lambda: provider, 60, clock=self.wall, verify_id_token=verify,
                                   monotonic=clock.monotonic, sleep=clock.sleep, jitter=lambda: jitter)

    async def request(self, ticket, id_token=False):
        found = await self.sessions.load(ticket, int(self.wall()))
        if found is None:
            return None
        try:
            return await self.refresher.fresh(ticket, *found, "", id_token)
        except SessionEnded:
            return None


async def signed_in(store, **changes):
    ticket = SessionTicket.new()
    await store.create(
        SessionRecord(
            key=ticket.key, sub="alice", payload=session(**changes).seal(BOX, ticket), expires_at=NOW + 40_000,
            version=1, created_at=NOW - 3600, last_seen_at=NOW),
        "signin",
    )
    return ticket


async def stored(store, ticket):
    record = await MemoryStore.get(store, ticket.key, NOW)
    return Session.unseal(BOX, ticket, record.payload), record.version


@pytest.fixture
def clock():
    return FakeClock(NOW)


# --- 1. a rotated refresh token that fails to save is never lost ----------------------


async def refreshed_but_unsaved(clock, **replica):
    store = FlakyStore(clock)
    provider = ScriptedProvider()
    ticket = await signed_in(store)
    here = Replica(store, provider, clock, **replica)
    clock.advance(31)  # the access token (NOW + 30) has expired
    store.down = {"update"}
    refreshed = await here.request(ticket)
    assert (refreshed.access_token, refreshed.refresh_token, provider.grants) == ("AT-2", "RT-2", 1)
    return store, provider, ticket, here


async def test_unsaved_tokens_outlive_the_cache_ttl(clock):
    store, provider, ticket, here = await refreshed_but_unsaved(clock)
    assert metrics.SESSION_PENDING_WRITES._value.get() >= 1
    clock.advance(31)  # past the cache TTL: the entry would be read again from the store (RT-1)
    assert (await here.request(ticket)).refresh_token == "RT-2"
    assert provider.invalid_grants == 0


async def test_unsaved_tokens_are_served_while_the_store_is_down(clock):
    store, provider, ticket, here = await refreshed_but_unsaved(clock)
    store.down = {"update", "get", "touch"}
    clock.advance(31)  # past the cache TTL, and the store cannot answer the miss
    assert (await here.request(ticket)).access_token == "AT-2"


async def test_unsaved_tokens_are_not_pushed_out_by_the_lru(clock):
    store, provider, ticket, here = await refreshed_but_unsaved(clock, cache_size=2)
    for _ in range(3):  # other sessions fill the small cache
        assert await here.request(await signed_in(store, access_expires_at=NOW + 3600)) is not None
    assert (await here.request(ticket)).refresh_token == "RT-2"
    assert provider.invalid_grants == 0


async def test_an_older_cache_fill_does_not_replace_unsaved_tokens(clock):
    store = FlakyStore(clock)
    provider = ScriptedProvider()
    ticket = await signed_in(store)
    here = Replica(store, provider, clock)
    clock.advance(31)
    store.gate = asyncio.Event()
    loading = asyncio.create_task(here.sessions.load(ticket, int(clock.wall())))  # reads RT-1 (slowly)
    await settle()
    store.down = {"update"}
    assert (await here.refresher.fresh(ticket, session(), 1)).refresh_token == "RT-2"
    store.gate.set()
    await loading  # the late fill puts (RT-1, version 1) into the cache
    assert (await here.request(ticket)).refresh_token == "RT-2"


async def test_a_failed_write_is_retried_until_it_lands_even_after_minutes(clock):
    store, provider, ticket, here = await refreshed_but_unsaved(clock)
    await clock.run(600, step=1.0)  # ten minutes of store outage (today's retries stop after ~121 s)
    store.down = set()
    await clock.run(15, step=1.0)
    saved, version = await stored(store, ticket)
    assert (saved.refresh_token, version) == ("RT-2", 2)
    assert len(here.sessions.pending) == 0
    # another replica now refreshes with the saved token: no reuse, nobody signed out
    there = Replica(store, provider, clock)
    clock.advance(3600)
    assert (await there.request(ticket)).refresh_token == "RT-3"
    assert provider.invalid_grants == 0


async def test_at_the_cap_new_leases_are_refused_rather_than_a_dirty_entry_dropped(clock):
    store, provider, ticket, here = await refreshed_but_unsaved(clock, pending_limit=1)
    other = await signed_in(store)  # its token expired too (NOW + 30)
    with pytest.raises(RefreshUnavailable):
        await here.request(other)
    assert provider.grants == 1  # no second grant whose token could not be kept
    assert store.calls.get("acquire_refresh_lease") == 1
    assert (await here.request(ticket)).refresh_token == "RT-2"


async def test_shutdown_flush_saves_pending_tokens_or_counts_them(clock):
    store, provider, ticket, here = await refreshed_but_unsaved(clock)
    lost_before = metrics.SESSION_WRITES_LOST.labels("shutdown")._value.get()
    assert await clock.drive(here.sessions.flush(3.0)) == 1  # the store is still down
    assert metrics.SESSION_WRITES_LOST.labels("shutdown")._value.get() == lost_before + 1
    store.down = set()
    assert await clock.drive(here.sessions.flush(3.0)) == 0
    assert (await stored(store, ticket))[0].refresh_token == "RT-2"


async def test_activity_on_a_dirty_session_still_counts(clock):
    store, provider, ticket, here = await refreshed_but_unsaved(clock)
    clock.advance(61)
    current, version = await here.sessions.load(ticket, int(clock.wall()))
    assert (current.refresh_token, version, current.last_seen_at) == ("RT-2", 1, int(clock.wall()))
    assert (await store.get(ticket.key, NOW)).last_seen_at == int(clock.wall())


# --- 2. fenced leases, sized for the worst case --------------------------------------


def test_the_lease_covers_twice_the_bounded_worst_case():
    budget = DynamoDBStore("t", region="eu-west-1").write_budget  # 3 attempts x 2 s + backoff
    plan = LeasePlan(idp_timeout=10.0, write_budget=budget, max_clock_skew=5.0)
    assert plan.needed == pytest.approx(10.0 + budget + 5.0)
    assert plan.seconds >= 2 * (budget + plan.needed)
    assert plan.seconds == 56


async def test_no_provider_call_when_a_slow_acquire_ate_the_lease(clock):
    store = FlakyStore(clock, write_budget=6.4)
    provider = ScriptedProvider()
    ticket = await signed_in(store)
    here = Replica(store, provider, clock)
    clock.advance(31)
    store.slow = {"acquire_refresh_lease": 40.0, "renew_refresh_lease": 40.0}  # 56 s lease, 21.4 s needed
    with pytest.raises(RefreshUnavailable):
        await here.request(ticket)
    assert provider.grants == 0  # a second replica could take the lease while we were at the provider
    assert (await store.get(ticket.key, NOW)).lease_owner == ""  # given back


async def test_a_slow_store_and_provider_and_skewed_clocks_still_refresh_once(clock):
    """Issue 16.2 as reproduced: the acquire takes 12 s, the provider 10 s, the JWKS
    refetch 10 s, and the other replica's clock is 5 s ahead."""
    store = FlakyStore(clock, write_budget=6.4)
    provider = ScriptedProvider(id_tokens=True)
    others: list[asyncio.Task] = []

    async def verify(token, now, fetch=True):
        if not fetch:
            raise UnknownSigningKey("unknown_key")  # a new signing key: needs a JWKS fetch
        clock.advance(10)  # the fetch
        others.append(asyncio.create_task(there.request(ticket)))
        await settle()
        return {"sub": "alice", "exp": now + 3600, "iat": now}

    ticket = await signed_in(store)
    here = Replica(store, provider, clock, verify=verify)
    there = Replica(store, provider, clock, skew=5.0, verify=verify)
    clock.advance(31)
    store.slow = {"acquire_refresh_lease": 12.0}

    async def meanwhile():
        clock.advance(10)  # the provider takes its time
        others.append(asyncio.create_task(there.request(ticket)))
        await settle()

    provider.during = meanwhile
    first = await clock.drive(here.request(ticket))
    results = [await clock.drive(task) for task in others]
    assert provider.grants == 1 and provider.invalid_grants == 0
    assert first.access_token == "AT-2" and all(r is not None and r.access_token == "AT-2" for r in results)


# --- 4. a refreshed ID token that cannot be verified (yet) -----------------------------


async def test_tokens_kept_when_the_new_id_token_cannot_be_verified_yet(clock):
    store = FlakyStore(clock)
    provider = ScriptedProvider(id_tokens=True)
    keys = {"up": False}

    async def verify(token, now, fetch=True):
        if not fetch:
            raise UnknownSigningKey("unknown_key")
        if not keys["up"]:
            raise IdpUnavailable("jwks", "jwks: HTTP 503")
        return {"sub": "alice", "exp": now + 3600, "iat": now, "email": "new@example.com"}

    ticket = await signed_in(store)
    here = Replica(store, provider, clock, verify=verify)
    clock.advance(31)
    refreshed = await here.request(ticket, id_token=True)
    assert (refreshed.access_token, refreshed.refresh_token) == ("AT-2", "RT-2")
    assert refreshed.id_token == "IT-1" and "email" not in refreshed.claims  # never the unverified one
    saved, version = await stored(store, ticket)
    assert (saved.refresh_token, saved.unverified_id_token, version) == ("RT-2", "IT-2", 2)
    for _ in range(5):  # no refresh storm while it waits
        assert (await here.request(ticket, id_token=True)).id_token == "IT-1"
    keys["up"] = True
    clock.advance(11)  # the next attempt to verify
    verified = await here.request(ticket, id_token=True)
    assert verified.id_token == "IT-2" and verified.claims["email"] == "new@example.com"
    assert (await stored(store, ticket))[0].id_token == "IT-2"
    assert provider.grants == 1 and provider.invalid_grants == 0


@pytest.mark.parametrize("failure", ["bad_signature", "wrong_audience", "sub_mismatch"])
async def test_a_definitely_bad_id_token_ends_the_session_and_revokes_the_new_token(clock, failure):
    store = FlakyStore(clock)
    provider = ScriptedProvider(id_tokens=True)

    async def verify(token, now, fetch=True):
        if failure == "sub_mismatch":  # OIDC Core 12.2: same sub as at sign-in
            return {"sub": "mallory", "exp": now + 3600, "iat": now}
        raise TokenInvalid(failure)

    ticket = await signed_in(store)
    here = Replica(store, provider, clock, verify=verify)
    clock.advance(31)
    assert await here.request(ticket) is None
    assert await store.get(ticket.key, NOW) is None
    assert "RT-2" in provider.revoked


# --- 5. no refresh storm when the provider sends no new ID token -----------------------


async def test_no_refresh_storm_when_refreshes_bring_no_id_token(clock):
    store = FlakyStore(clock)
    provider = ScriptedProvider(id_tokens=False)
    ticket = await signed_in(store, claims={"sub": "alice", "exp": NOW + 20, "iat": NOW - 3580},
                             access_expires_at=NOW + 3000, access_issued_at=NOW - 600)
    here = Replica(store, provider, clock)
    for _ in range(10):
        assert (await here.request(ticket, id_token=True)).id_token == "IT-1"
    assert provider.grants == 1
    assert (await stored(store, ticket))[1] == 2


# --- 6. replicas that lose the lease write nothing --------------------------------------


async def test_a_replica_that_lost_the_lease_writes_nothing_and_picks_up_the_new_tokens(clock):
    store = FlakyStore(clock)
    provider = ScriptedProvider()
    ticket = await signed_in(store)
    clock.advance(1)  # in the refresh window; the access token still works for 29 s
    assert (await store.acquire_refresh_lease(ticket.key, 1, int(clock.wall()), int(clock.wall()) + 56,
                                              "holder")).acquired
    here = Replica(store, provider, clock)
    writes = store.writes()
    for _ in range(200):
        assert (await here.request(ticket)).access_token == "AT-1"
    assert store.writes() - writes == 1  # the one failed acquire; no write per request
    assert store.calls.get("get", 0) <= 2
    new = session(access_token="AT-2", refresh_token="RT-2", access_expires_at=NOW + 3600, access_issued_at=NOW)
    await store.update(ticket.key, 1, new.seal(BOX, ticket), "holder-write")  # the holder finishes
    clock.advance(1.1)
    assert (await here.request(ticket)).access_token == "AT-2"
    assert provider.grants == 0


# --- 7. smaller findings -----------------------------------------------------------------


async def test_sign_out_revokes_the_refresh_token_the_store_held(clock):
    store = FlakyStore(clock)
    provider = ScriptedProvider()
    ticket = await signed_in(store)
    here, there = Replica(store, provider, clock), Replica(store, provider, clock)
    assert (await there.sessions.load(ticket, NOW))[0].refresh_token == "RT-1"  # cached there
    clock.advance(31)
    assert (await here.request(ticket)).refresh_token == "RT-2"  # refreshed here
    assert await there.sessions.end(ticket) == ["RT-2"]  # not its own stale RT-1


async def test_a_refresh_whose_write_finds_the_session_gone_revokes_the_new_tokens(clock):
    store = FlakyStore(clock)
    provider = ScriptedProvider()
    ticket = await signed_in(store)
    here, there = Replica(store, provider, clock), Replica(store, provider, clock)

    async def sign_out_elsewhere():
        await there.sessions.end(ticket)

    provider.during = sign_out_elsewhere
    clock.advance(31)
    assert await here.request(ticket) is None
    assert provider.revoked == ["RT-2"]


async def test_a_short_idle_timeout_does_not_sign_out_active_users(clock):
    store = FlakyStore(clock)
    ticket = await signed_in(store, access_expires_at=NOW + 3600)
    here = Replica(store, ScriptedProvider(), clock, idle_timeout=60)
    for _ in range(10):  # a request every 20 s for 200 s
        clock.advance(20)
        assert await here.request(ticket) is not None


async def test_activity_during_a_store_outage_still_counts(clock):
    store = FlakyStore(clock)
    ticket = await signed_in(store, access_expires_at=NOW + 3600)
    here = Replica(store, ScriptedProvider(), clock, idle_timeout=120)
    store.down = {"touch"}
    for _ in range(10):  # a request every 30 s for 300 s while touches fail
        clock.advance(30)
        assert await here.request(ticket) is not None


def test_each_sign_in_transaction_is_sealed_under_its_own_key():
    from types import SimpleNamespace

    from authproxy.oidc.flow import Transaction
    from authproxy.session.crypto import Unsealable
    from authproxy.web.signin import SignIn, _b64decode

    edge = SimpleNamespace(transactions=SecretBox(["t" * 40], b"authproxy sign-in transaction"))
    transaction = Transaction.start("/", NOW)
    first, second = SignIn._seal_transaction(edge, transaction), SignIn._seal_transaction(edge, transaction)
    raw = _b64decode(first)
    assert raw[:16] != _b64decode(second)[:16]  # a random salt each, which enters the key (HKDF)
    assert SignIn._open_transaction(edge, first)[1] == transaction
    with pytest.raises(Unsealable):  # the server secret alone (no per-transaction salt) opens nothing
        edge.transactions.open(raw[16:])


async def test_unsaved_tokens_are_saved_before_their_refresh_token_is_redeemed(clock):
    store, provider, ticket, here = await refreshed_but_unsaved(clock)
    clock.advance(3600)  # AT-2 expires while RT-2 is still unsaved and the store is down
    with pytest.raises(RefreshUnavailable):
        await here.request(ticket)
    assert provider.grants == 1  # RT-2 not redeemed: RT-3 could not be kept safely
    store.down = set()
    assert (await here.request(ticket)).refresh_token == "RT-3"  # RT-2 saved first, then refreshed
    saved, version = await stored(store, ticket)
    assert (saved.refresh_token, version) == ("RT-3", 3)
    assert provider.invalid_grants == 0


# --- issue 17 item 3: back off per session after a failed refresh -----------------------


async def test_after_a_failed_refresh_every_replica_waits_for_the_jittered_backoff(clock):
    from authproxy.session.refresh import BACKOFF_CAP, backoff_failures

    store = FlakyStore(clock)
    provider = ScriptedProvider()
    provider.outcome = "down"
    ticket = await signed_in(store, access_expires_at=NOW + 3000, access_issued_at=NOW - 600)  # due in 2,940 s
    here, there = Replica(store, provider, clock, jitter=0.5), Replica(store, provider, clock, jitter=0.5)
    clock.advance(2950)  # in the refresh window; the access token works for 50 s more
    assert (await here.request(ticket)).access_token == "AT-1"
    assert provider.attempts == 1
    record = await store.get(ticket.key, NOW)
    assert backoff_failures(record.lease_owner) == 1
    assert record.refresh_lease_until - int(clock.wall()) == 1  # 1 s x (0.5 + 0.5 / 2), rounded up
    reads = store.calls.get("get", 0)
    for _ in range(50):  # both replicas keep serving the still-valid token and leave the provider alone
        assert (await here.request(ticket)).access_token == "AT-1"
        assert (await there.request(ticket)).access_token == "AT-1"
    assert provider.attempts == 1
    assert store.calls.get("acquire_refresh_lease") == 2  # the first try, and the other replica's one look
    assert store.calls.get("get", 0) - reads <= 1
    delays = []
    for attempt in range(2, 9):  # each failure in a row doubles the wait, up to the cap
        waited = 0.0
        while provider.attempts < attempt:
            clock.advance(0.5)
            waited += 0.5
            assert (await (here if attempt % 2 else there).request(ticket)).access_token == "AT-1"
        delays.append(waited)
        assert provider.attempts == attempt
        if clock.wall() > NOW + 3000 - 40:
            break
    # ceil(2^n x 0.75) s on the lease (whole seconds), which lapses 1 s after its last second
    assert delays[:4] == [2.0, 3.0, 4.0, 7.0]
    provider.outcome = "ok"
    clock.advance(BACKOFF_CAP + 2)
    assert (await there.request(ticket)).access_token == "AT-2"
    record = await store.get(ticket.key, NOW)
    assert (record.lease_owner, record.version) == ("", 2)  # the count starts again from zero
    assert provider.invalid_grants == 0


def test_the_backoff_is_jittered_and_capped():
    from authproxy.session.refresh import BACKOFF_CAP, backoff_seconds

    assert [backoff_seconds(n, 0.0) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert [backoff_seconds(n, 1.0) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff_seconds(6, 1.0) == backoff_seconds(1000, 1.0) == BACKOFF_CAP
    assert backoff_seconds(1000, 0.0) == BACKOFF_CAP / 2


async def test_with_an_expired_token_a_backoff_answers_503_at_once(clock):
    store = FlakyStore(clock)
    provider = ScriptedProvider()
    provider.outcome = "down"
    ticket = await signed_in(store)
    here, there = Replica(store, provider, clock, jitter=0.99), Replica(store, provider, clock, jitter=0.99)
    clock.advance(31)  # the access token has expired
    with pytest.raises(RefreshUnavailable):
        await here.request(ticket)
    started = clock.monotonic()
    reads = store.calls.get("get", 0)
    for replica in (here, there, here, there):
        with pytest.raises(RefreshUnavailable):  # no 5 s wait for a winner: nobody is refreshing
            await replica.request(ticket)
    assert clock.monotonic() == started and provider.attempts == 1
    assert store.calls.get("get", 0) - reads <= 1


async def test_invalid_grant_never_backs_off_it_ends_the_session(clock):
    store = FlakyStore(clock)
    provider = ScriptedProvider()
    provider.outcome = "down"
    ticket = await signed_in(store)
    here = Replica(store, provider, clock, jitter=0.0)
    clock.advance(31)
    with pytest.raises(RefreshUnavailable):
        await here.request(ticket)  # transient: backs off
    provider.outcome = "invalid_grant"
    clock.advance(2)
    assert await here.request(ticket) is None  # the provider killed the grant: signed out, no backoff
    assert provider.attempts == 2
    assert await store.get(ticket.key, NOW) is None


async def test_a_lease_whose_acquire_was_not_answered_is_claimed_back_not_left_to_lapse(clock):
    """The acquire lands but its answer is lost (or the breaker cut its retries short): the
    next request names the same owner, finds the lease is its own and refreshes, instead
    of every replica waiting (503 with an expired token) until the 56 s lease lapses."""
    store = FlakyStore(clock)
    provider = ScriptedProvider()
    ticket = await signed_in(store)
    here, there = Replica(store, provider, clock), Replica(store, provider, clock)
    clock.advance(31)  # expired
    store.unanswered = {"acquire_refresh_lease"}
    with pytest.raises(RefreshUnavailable):
        await here.request(ticket)
    assert (await store.get(ticket.key, NOW)).lease_owner != ""  # held, by an owner that never heard so
    clock.advance(1)
    assert (await clock.drive(here.request(ticket), limit=10)).access_token == "AT-2"
    assert (await clock.drive(there.request(ticket), limit=10)).access_token == "AT-2"
    assert provider.grants == 1 and provider.invalid_grants == 0
