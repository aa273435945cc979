"""The store's circuit breaker and its memory of absent keys (issue 13 item 5): a fake clock
for the breaker alone, then the DynamoDB store against moto_server behind a relay that the
test cuts, silences and restores."""

from __future__ import annotations

import secrets
import time

import pytest
from botocore.exceptions import ClientError

from authproxy import metrics
from authproxy.store.base import SessionRecord, StoreUnavailable, VersionConflict
from authproxy.store.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, RecentlyAbsent
from authproxy.store.dynamodb import DynamoDBStore
from tests.support.moto import MotoServer
from tests.support.relay import Relay

NOW = 1_800_000_000


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_opens_after_consecutive_failures_and_probes_one_at_a_time():
    clock = Clock()
    breaker = CircuitBreaker("test", threshold=3, open_for=1.0, max_open_for=4.0, clock=clock, jitter=lambda: 0.5)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.allow()
    breaker.success()  # an answer resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == OPEN
    assert metrics.STORE_CIRCUIT_OPEN.labels("test")._value.get() == 1
    rejected = metrics.STORE_CIRCUIT_REJECTED.labels("test")._value.get()
    assert not breaker.allow()  # fails fast
    assert metrics.STORE_CIRCUIT_REJECTED.labels("test")._value.get() == rejected + 1
    clock.now += 1.0
    assert breaker.allow() and breaker.state == HALF_OPEN  # the probe
    assert not breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()  # the probe failed: open again, for twice as long
    assert breaker.state == OPEN
    clock.now += 1.5
    assert not breaker.allow()
    clock.now += 0.5
    assert breaker.allow()
    breaker.failure()
    clock.now += 4.0  # 4 s: capped
    assert breaker.allow()
    breaker.success()  # the store is back
    assert breaker.state == CLOSED and breaker.allow() and breaker.allow()
    assert metrics.STORE_CIRCUIT_OPEN.labels("test")._value.get() == 0
    for _ in range(3):  # the next outage starts again from the shortest period
        breaker.failure()
    clock.now += 1.0
    assert breaker.allow()


def test_a_probe_that_never_reports_frees_its_slot():
    clock = Clock()
    breaker = CircuitBreaker("test", threshold=1, open_for=1.0, probe_timeout=3.0, clock=clock, jitter=lambda: 0.5)
    breaker.failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.abandon()  # cancelled: no verdict
    assert breaker.allow()  # the next call probes
    clock.now += 3.0  # and a probe lost without even a cancellation stops blocking after probe_timeout
    assert breaker.allow()


def test_absent_keys_are_remembered_briefly_and_boundedly():
    clock = Clock()
    absent = RecentlyAbsent(ttl=10.0, limit=3, clock=clock)
    for key in "abcd":
        absent.add(key)
    assert len(absent) == 3 and "a" not in absent and "d" in absent
    absent.discard("d")
    assert "d" not in absent
    clock.now += 10.0
    assert "b" not in absent and len(absent) == 1


@pytest.fixture(scope="module")
def moto():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
async def relayed(moto):
    relay = Relay(moto.port)
    clock = Clock()
    store = DynamoDBStore(f"breaker-{secrets.token_hex(4)}", region="eu-west-1", endpoint_url=relay.url, timeout=0.5,
                          clock=clock)
    await store.open()
    await store.create_table()
    yield store, relay, clock
    await store.close()
    relay.stop()


def record(**changes):
    values = dict(key=secrets.token_hex(32), sub="alice", payload=b"sealed", expires_at=NOW + 3600, version=1,
                  created_at=NOW, last_seen_at=NOW)
    values.update(changes)
    return SessionRecord(**values)


async def test_a_store_that_is_down_fails_fast_and_is_probed_once_on_its_way_back(relayed):
    store, relay, clock = relayed
    item = record()
    await store.create(item, "w")
    relay.set("cut")
    with pytest.raises(StoreUnavailable):
        await store.get(item.key, NOW)  # 3 attempts, reset at once each
    with pytest.raises(StoreUnavailable):
        await store.touch(item.key, NOW)  # 2 more: the fifth failure in a row opens the circuit
    assert store.breaker.state == OPEN
    tried = sum(relay.connections.values())
    started = time.perf_counter()
    for _ in range(100):
        with pytest.raises(StoreUnavailable):
            await store.get(secrets.token_hex(32), NOW)
    assert sum(relay.connections.values()) == tried  # refused at once: nothing reached the network
    assert time.perf_counter() - started < 5.0  # nor waited for anything (a back-off sleep per call would show)
    relay.set("pass")
    clock.now += 0.4  # the open period (0.25 s, +-20 %) is over: one probe goes
    assert (await store.get(item.key, NOW)).version == 1
    assert store.breaker.state == CLOSED


async def test_a_silent_store_opens_the_circuit_after_timeouts(relayed):
    store, relay, clock = relayed
    relay.set("silent")
    started = time.perf_counter()
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await store.get(secrets.token_hex(32), NOW)
    assert store.breaker.state == OPEN  # 5 timeouts of 0.5 s (the sixth attempt was refused)
    assert time.perf_counter() - started < 5.0  # the 0.5 s timeout held: 5 x 0.5 s, not 5 x 1 s nor botocore's 60 s
    relay.set("pass")


async def test_missing_items_conflicts_and_throttling_never_open_it(relayed):
    store, relay, clock = relayed
    item = record()
    await store.create(item, "w")
    for _ in range(20):
        assert await store.get(secrets.token_hex(32), NOW) is None  # random cookies
        with pytest.raises(VersionConflict):
            await store.update(item.key, 7, b"x", secrets.token_hex(4))  # failed conditions
    real = store._client.get_item
    throttled = {"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}}

    async def throttle(**kwargs):
        raise ClientError(throttled, "GetItem")

    store._client.get_item = throttle
    for _ in range(10):
        with pytest.raises(StoreUnavailable):
            await store.get(item.key, NOW)
    store._client.get_item = real
    assert store.breaker.state == CLOSED
    assert (await store.get(item.key, NOW)).version == 1


async def test_absent_keys_cost_one_read(relayed):
    store, relay, clock = relayed
    calls = []
    real = store._client.get_item

    async def counted(**kwargs):
        calls.append(kwargs["Key"]["pk"]["S"])
        return await real(**kwargs)

    store._client.get_item = counted
    unknown = secrets.token_hex(32)
    for _ in range(50):
        assert await store.get(unknown, NOW) is None
    assert calls == [unknown]
    relay.set("cut")  # known absent: answered even while the store is down
    assert await store.get(unknown, NOW) is None
    relay.set("pass")
    clock.now += 60.0  # remembered for a while only
    assert await store.get(unknown, NOW) is None and len(calls) == 2
    item = record(key=unknown)  # our own create forgets it
    await store.create(item, "w")
    assert (await store.get(unknown, NOW)).version == 1
    await store.delete(unknown)  # a sign-out remembers it
    assert await store.get(unknown, NOW) is None and len(calls) == 3
