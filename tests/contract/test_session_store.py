"""One contract suite for every session store: memory, moto_server and dynalite."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from authproxy.store.base import SessionRecord, StoreUnavailable, VersionConflict
from authproxy.store.dynamodb import DynamoDBStore
from authproxy.store.memory import MemoryStore
from tests.support.dynalite import Dynalite
from tests.support.moto import MotoServer
from tests.support.processes import free_port

NOW = 1_800_000_000


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dynalite_server():
    server = Dynalite()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "moto", "dynalite"])
async def store(request):
    if request.param == "memory":
        backend = MemoryStore()
    else:
        server = request.getfixturevalue("moto_server" if request.param == "moto" else "dynalite_server")
        backend = DynamoDBStore(f"sessions-{secrets.token_hex(4)}", region="eu-west-1", endpoint_url=server.url)
        await backend.open()
        await backend.create_table()
    yield backend
    await backend.close()


def record(key=None, **changes):
    values = dict(key=key or secrets.token_hex(16), sub="alice", payload=b"\x00sealed\xff", expires_at=NOW + 3600,
                  version=1, created_at=NOW, last_seen_at=NOW)
    values.update(changes)
    return SessionRecord(**values)


async def test_get_put(store):
    assert await store.get("missing", NOW) is None
    item = record()
    await store.create(item)
    assert await store.get(item.key, NOW) == item
    with pytest.raises(VersionConflict):
        await store.create(item)  # never overwrites


async def test_versioned_updates(store):
    item = record()
    await store.create(item)
    updated = await store.update(item.key, 1, b"new")
    assert (updated.version, updated.payload) == (2, b"new")
    assert await store.get(item.key, NOW) == updated
    with pytest.raises(VersionConflict):
        await store.update(item.key, 1, b"stale")  # stale version


async def test_touch_records_activity_without_changing_the_version(store):
    item = record()
    await store.create(item)
    await store.touch(item.key, NOW + 61)
    touched = await store.get(item.key, NOW)
    assert (touched.last_seen_at, touched.version) == (NOW + 61, 1)
    assert (await store.update(item.key, 1, b"tokens")).version == 2  # a refresh is not invalidated
    await store.delete(item.key)
    with pytest.raises(VersionConflict):
        await store.touch(item.key, NOW + 62)  # never re-creates
    assert await store.get(item.key, NOW) is None


async def test_expiry_is_checked_on_read(store):
    item = record(expires_at=NOW + 10)
    await store.create(item)
    assert await store.get(item.key, NOW + 9) is not None
    assert await store.get(item.key, NOW + 10) is None


async def test_no_resurrection(store):
    item = record()
    await store.create(item)
    await store.delete(item.key)
    with pytest.raises(VersionConflict):
        await store.update(item.key, 1, b"late write")
    assert await store.get(item.key, NOW) is None
    assert not await store.acquire_refresh_lease(item.key, 1, NOW, NOW + 5)
    assert await store.get(item.key, NOW) is None


async def test_update_racing_a_delete_leaves_no_item(store):
    for _ in range(5):
        item = record()
        await store.create(item)
        results = await asyncio.gather(store.update(item.key, 1, b"racing"), store.touch(item.key, NOW + 1),
                                       store.delete(item.key), return_exceptions=True)
        assert all(r is None or isinstance(r, (SessionRecord, VersionConflict)) for r in results)
        assert await store.get(item.key, NOW) is None


async def test_refresh_lease(store):
    item = record()
    await store.create(item)
    assert await store.acquire_refresh_lease(item.key, 1, NOW, NOW + 5)
    assert not await store.acquire_refresh_lease(item.key, 1, NOW + 1, NOW + 6)  # held by the first
    assert not await store.acquire_refresh_lease(item.key, 2, NOW + 6, NOW + 11)  # wrong version
    assert await store.acquire_refresh_lease(item.key, 1, NOW + 6, NOW + 11)  # the first one's lease lapsed
    refreshed = await store.update(item.key, 1, b"refreshed tokens")
    assert refreshed.refresh_lease_until == 0  # writing new tokens ends the lease
    assert await store.acquire_refresh_lease(item.key, 2, NOW + 7, NOW + 12)
    await store.release_refresh_lease(item.key, NOW + 99)  # not ours: nothing happens
    assert not await store.acquire_refresh_lease(item.key, 2, NOW + 8, NOW + 13)
    await store.release_refresh_lease(item.key, NOW + 12)  # ours: given back
    assert await store.acquire_refresh_lease(item.key, 2, NOW + 8, NOW + 13)


async def test_concurrent_leases_have_one_winner(store):
    item = record()
    await store.create(item)
    wins = await asyncio.gather(*(store.acquire_refresh_lease(item.key, 1, NOW, NOW + 5) for _ in range(10)))
    assert wins.count(True) == 1


async def test_delete_missing_is_fine(store):
    await store.delete("never-existed")


async def test_create_table_is_idempotent(moto_server):
    store = DynamoDBStore("idempotent-table", region="eu-west-1", endpoint_url=moto_server.url)
    await store.open()
    try:
        await store.create_table()
        await store.create_table()
        await store.create(record("k"))
        assert (await store.get("k", NOW)).sub == "alice"
    finally:
        await store.close()


async def test_unreachable_store_is_unavailable_not_a_crash():
    store = DynamoDBStore("t", region="eu-west-1", endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=0.5)
    await store.open()
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("k", NOW)
        with pytest.raises(StoreUnavailable):
            await store.create_table(wait=1)  # start-up with create_table: true must not crash either
    finally:
        await store.close()
