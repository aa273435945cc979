"""The single-flight helper (authproxy/singleflight.py) and the four places that use it:
one run per key, in a task of its own; no caller's cancellation reaches the work or the
other waiters; the outcome, value or error, is everyone's; the key is forgotten when the
work ends."""

from __future__ import annotations

import asyncio
import gc

import pytest
from joserfc.jwk import KeySet

from authproxy.config.schema import ServiceToken
from authproxy.errors import ServiceTokenUnavailable
from authproxy.oidc.client import IdpUnavailable, JwksCache, TokenResponse
from authproxy.oidc.service_tokens import ServiceTokens
from authproxy.session.cache import SessionCache
from authproxy.session.cookies import SessionTicket
from authproxy.session.crypto import SecretBox
from authproxy.session.refresh import Refresher
from authproxy.session.store import Session, Sessions
from authproxy.singleflight import SingleFlight
from authproxy.store.memory import MemoryStore


class Work:
    """Work that waits until released, counting its runs and the tasks it ran in."""

    def __init__(self, value: object = "value", error: BaseException | None = None):
        self.value = value
        self.error = error
        self.runs = 0
        self.tasks: list[asyncio.Task | None] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = asyncio.Event()

    async def __call__(self):
        self.runs += 1
        self.tasks.append(asyncio.current_task())
        self.started.set()
        await self.release.wait()
        self.finished.set()
        if self.error is not None:
            raise self.error
        return self.value


async def until(condition, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


# --- the helper -------------------------------------------------------------------------------


async def test_concurrent_callers_share_one_run_in_a_task_of_its_own():
    flight: SingleFlight[str, object] = SingleFlight()
    work = Work()
    callers = [asyncio.create_task(flight.run("k", work)) for _ in range(5)]
    await work.started.wait()
    assert flight.running("k") and len(flight) == 1
    work.release.set()
    assert await asyncio.gather(*callers) == ["value"] * 5
    assert work.runs == 1
    assert work.tasks[0] not in callers  # not the first caller's task: its own


async def test_cancelling_the_first_caller_leaves_the_others_and_the_work_alone():
    flight: SingleFlight[str, object] = SingleFlight()
    work = Work()
    first = asyncio.create_task(flight.run("k", work))
    await work.started.wait()
    followers = [asyncio.create_task(flight.run("k", work)) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    work.release.set()
    assert await asyncio.gather(*followers) == ["value"] * 3
    assert work.runs == 1 and work.finished.is_set()


async def test_cancelling_a_follower_leaves_the_first_caller_and_the_work_alone():
    flight: SingleFlight[str, object] = SingleFlight()
    work = Work()
    first = asyncio.create_task(flight.run("k", work))
    await work.started.wait()
    follower = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    work.release.set()
    assert await first == "value"


async def test_the_work_finishes_when_every_caller_has_left():
    unretrieved: list[dict] = []  # what the loop would report (an exception never retrieved)
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unretrieved.append(context))
    flight: SingleFlight[str, object] = SingleFlight()
    work = Work(error=RuntimeError("nobody hears this"))
    callers = [asyncio.create_task(flight.run("k", work)) for _ in range(2)]
    await work.started.wait()
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    work.release.set()
    await work.finished.wait()
    await until(lambda: not flight.running("k"))
    del work.tasks[:]  # the task's last reference: collected now, where a lost error would be reported
    gc.collect()
    await asyncio.sleep(0)
    assert unretrieved == []  # its error is the work owner's business, never "never retrieved"


async def test_an_error_is_every_waiters():
    flight: SingleFlight[str, object] = SingleFlight()
    error = IdpUnavailable("jwks", "jwks: HTTP 503")
    work = Work(error=error)
    callers = [asyncio.create_task(flight.run("k", work)) for _ in range(4)]
    await work.started.wait()
    work.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(outcome is error for outcome in outcomes) and work.runs == 1


@pytest.mark.parametrize("error", [None, ValueError("failed")])
async def test_the_key_is_forgotten_when_the_work_ends(error):
    flight: SingleFlight[str, object] = SingleFlight()
    work = Work(error=error)
    caller = asyncio.create_task(flight.run("k", work))
    await work.started.wait()
    work.release.set()
    await asyncio.gather(caller, return_exceptions=True)
    # Gone before the waiter resumed: the next call is a new run, not the old outcome.
    assert not flight.running("k") and len(flight) == 0
    again = Work(value="second")
    again.release.set()
    assert await flight.run("k", again) == "second" and again.runs == 1


async def test_a_call_when_the_work_has_just_ended_starts_a_new_run():
    flight: SingleFlight[str, object] = SingleFlight()
    seen = []

    async def first():
        return "first"

    async def waiter():
        seen.append(await flight.run("k", first))
        # Resumed by the first run's end: a call now must not be handed that run again.
        seen.append(await flight.run("k", lambda: asyncio.sleep(0, "second")))

    await waiter()
    assert seen == ["first", "second"]


async def test_keys_run_independently():
    flight: SingleFlight[str, object] = SingleFlight()
    a, b = Work("a"), Work("b")
    first = asyncio.create_task(flight.run("a", a))
    second = asyncio.create_task(flight.run("b", b))
    await a.started.wait()
    await b.started.wait()
    b.release.set()
    assert await second == "b" and flight.running("a") and not flight.running("b")
    a.release.set()
    assert await first == "a"


async def test_a_run_cancelled_before_it_started_frees_its_key():
    flight: SingleFlight[str, object] = SingleFlight()
    caller = asyncio.create_task(flight.run("k", Work()))
    await asyncio.sleep(0)  # the caller has started the run's task, which has not run yet
    assert flight.running("k")
    flight._running["k"].cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await until(lambda: not flight.running("k"))


# --- the places that use it ---------------------------------------------------------------------


async def test_session_cache_cancelling_the_first_reader_does_not_fail_the_others():
    """The bug of issue 12 item 4: the first caller's cancellation (a timeout, shutdown)
    made every request waiting on the same session fail with CancelledError."""
    cache: SessionCache[str] = SessionCache(100, 30)
    work = Work("session")
    first = asyncio.create_task(cache.get_or_load("key", work))
    await work.started.wait()
    others = [asyncio.create_task(cache.get_or_load("key", work)) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    work.release.set()
    assert await asyncio.gather(*others) == ["session"] * 3
    assert work.runs == 1
    assert await cache.get_or_load("key", Work("not read")) == "session"  # the shared read was cached


async def test_session_cache_a_read_begun_before_an_eviction_is_not_cached():
    cache: SessionCache[str] = SessionCache(100, 30)
    work = Work("before sign-out")
    reader = asyncio.create_task(cache.get_or_load("key", work))
    await work.started.wait()
    cache.evict("key")
    work.release.set()
    assert await reader == "before sign-out" and len(cache) == 0


async def test_session_cache_a_failed_read_fails_every_waiter_and_is_not_kept():
    cache: SessionCache[str] = SessionCache(100, 30)
    work = Work(error=ConnectionError("store down"))
    readers = [asyncio.create_task(cache.get_or_load("key", work)) for _ in range(3)]
    await work.started.wait()
    work.release.set()
    outcomes = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes) and work.runs == 1
    again = Work("read again")
    again.release.set()
    assert await cache.get_or_load("key", again) == "read again"


async def test_jwks_fetch_survives_its_first_callers_cancellation():
    work = Work(KeySet([]))
    jwks = JwksCache(work, min_interval=0)
    first = asyncio.create_task(jwks.load())
    await work.started.wait()
    second = asyncio.create_task(jwks.load())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    work.release.set()
    assert await second is work.value
    assert jwks.keys is work.value and jwks.fetches == 1


class TokenProvider:
    def __init__(self, gate: asyncio.Event, fail: bool = False):
        self.gate = gate
        self.fail = fail
        self.grants = 0

    async def client_credentials(self, scopes, resource, client_id=None, client_secret=None):
        self.grants += 1
        await self.gate.wait()
        if self.fail:
            raise IdpUnavailable("token", "token: HTTP 503")
        return TokenResponse(access_token=f"machine-{self.grants}", id_token=None, refresh_token=None,
                             expires_in=3600, token_type="Bearer", scope=None)


async def test_service_token_grant_survives_its_first_callers_cancellation():
    gate = asyncio.Event()
    provider = TokenProvider(gate)
    tokens = ServiceTokens(lambda: provider)  # type: ignore[arg-type, return-value]
    spec = ServiceToken(scopes=["orders/write"])
    first = asyncio.create_task(tokens.token(spec))
    await until(lambda: provider.grants == 1)
    second = asyncio.create_task(tokens.token(spec))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    gate.set()
    assert await second == "machine-1"
    assert await tokens.token(spec) == "machine-1" and provider.grants == 1  # cached


async def test_service_token_failure_is_shared_and_held():
    gate = asyncio.Event()
    provider = TokenProvider(gate, fail=True)
    tokens = ServiceTokens(lambda: provider)  # type: ignore[arg-type, return-value]
    spec = ServiceToken(scopes=["orders/write"])
    callers = [asyncio.create_task(tokens.token(spec)) for _ in range(3)]
    await until(lambda: provider.grants == 1)
    gate.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(outcome, ServiceTokenUnavailable) for outcome in outcomes)
    with pytest.raises(ServiceTokenUnavailable):  # held: no new grant for a while
        await tokens.token(spec)
    assert provider.grants == 1


NOW = 10_000


class RefreshingProvider:
    def __init__(self, gate: asyncio.Event):
        self.gate = gate
        self.calls = 0

    async def refresh(self, refresh_token):
        self.calls += 1
        await self.gate.wait()
        return TokenResponse(access_token=f"AT-{self.calls + 1}", id_token=None, refresh_token=f"RT-{self.calls + 1}",
                             expires_in=3600, token_type="Bearer", scope=None)

    async def revoke(self, token, hint="refresh_token"):
        pass


async def test_refresh_cancelling_the_first_request_neither_fails_the_others_nor_loses_the_tokens():
    box = SecretBox(["r" * 40], b"authproxy session")
    current = Session(sub="alice", claims={}, access_token="AT-1", id_token="IT-1", refresh_token="RT-1",
                      access_expires_at=NOW + 30, access_issued_at=NOW - 3570, created_at=NOW - 3600,
                      expires_at=NOW + 40_000, last_seen_at=NOW)
    sessions = Sessions(MemoryStore(), box, SessionCache(100, 30), idle_timeout=7200)
    ticket = SessionTicket.new()
    await sessions.create(ticket, current)
    gate = asyncio.Event()
    provider = RefreshingProvider(gate)
    refresher = Refresher(sessions, lambda: provider, 60, clock=lambda: NOW)  # type: ignore[arg-type, return-value]
    first = asyncio.create_task(refresher.fresh(ticket, current, 1))
    await until(lambda: provider.calls == 1)  # the refresh token is being redeemed
    others = [asyncio.create_task(refresher.fresh(ticket, current, 1)) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    gate.set()
    assert {fresh.access_token for fresh in await asyncio.gather(*others)} == {"AT-2"}
    stored, version = await sessions.read(ticket, NOW)
    assert (stored.refresh_token, version, provider.calls) == ("RT-2", 2, 1)  # redeemed once, and saved
