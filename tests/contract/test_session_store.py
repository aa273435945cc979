"""One contract suite for every session store: memory, moto_server and dynalite."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from authproxy.store.base import SessionRecord, StoreRejected, StoreUnavailable, VersionConflict
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


async def _open(request, kind):
    if kind == "memory":
        return MemoryStore()
    server = request.getfixturevalue("moto_server" if kind == "moto" else "dynalite_server")
    backend = DynamoDBStore(f"sessions-{secrets.token_hex(4)}", region="eu-west-1", endpoint_url=server.url)
    backend.table_server = kind
    await backend.open()
    await backend.create_table()
    return backend


@pytest.fixture(params=["memory", "moto", "dynalite"])
async def store(request):
    backend = await _open(request, request.param)
    yield backend
    await backend.close()


# The contract for concurrent conditional writes, on the servers that decide them
# atomically as DynamoDB does: moto_server answers in threads and checks conditions
# without a lock, so two winners happen there now and then (not a property of ours).
@pytest.fixture(params=["memory", "dynalite"])
async def atomic_store(request):
    backend = await _open(request, request.param)
    yield backend
    await backend.close()


def record(key=None, **changes):
    values = dict(key=key or secrets.token_hex(16), sub="alice", payload=b"\x00sealed\xff", expires_at=NOW + 3600,
                  version=1, created_at=NOW, last_seen_at=NOW)
    values.update(changes)
    return SessionRecord(**values)


def wid():
    return secrets.token_hex(8)


async def create(store, item):
    await store.create(item, wid())
    return await store.get(item.key, NOW)


async def test_get_put(store):
    assert await store.get("missing", NOW) is None
    item = record()
    write = wid()
    await store.create(item, write)
    stored = await store.get(item.key, NOW)
    assert stored.payload == item.payload and stored.version == 1 and stored.write_id == write
    with pytest.raises(VersionConflict):
        await store.create(item, wid())  # never overwrites
    await store.create(item, write)  # the same write sent again (its answer was lost): a success


async def test_versioned_updates(store):
    item = await create(store, record())
    updated = await store.update(item.key, 1, b"new", "w2")
    assert (updated.version, updated.payload) == (2, b"new")
    assert await store.get(item.key, NOW) == updated
    with pytest.raises(VersionConflict) as conflict:
        await store.update(item.key, 1, b"stale", "w3")  # stale version
    assert conflict.value.current is not None and conflict.value.current.version == 2  # what the store holds
    again = await store.update(item.key, 1, b"new", "w2")  # our own write, sent again: recognised
    assert (again.version, again.write_id) == (2, "w2")
    assert (await store.get(item.key, NOW)).version == 2


async def test_touch_records_activity_without_changing_the_version(store):
    item = await create(store, record())
    await store.touch(item.key, NOW + 61)
    touched = await store.get(item.key, NOW)
    assert (touched.last_seen_at, touched.version) == (NOW + 61, 1)
    assert (await store.update(item.key, 1, b"tokens", wid())).version == 2  # a refresh is not invalidated
    await store.delete(item.key)
    with pytest.raises(VersionConflict):
        await store.touch(item.key, NOW + 62)  # never re-creates
    assert await store.get(item.key, NOW) is None


async def test_expiry_is_checked_on_read(store):
    item = await create(store, record(expires_at=NOW + 10))
    assert await store.get(item.key, NOW + 9) is not None
    assert await store.get(item.key, NOW + 10) is None


async def test_no_resurrection(store):
    item = await create(store, record())
    gone = await store.delete(item.key)
    assert gone is not None and gone.payload == item.payload  # sign-out revokes what the store held
    with pytest.raises(VersionConflict) as conflict:
        await store.update(item.key, 1, b"late write", wid())
    assert conflict.value.current is None  # gone, not overtaken
    assert await store.get(item.key, NOW) is None
    assert not (await store.acquire_refresh_lease(item.key, 1, NOW, NOW + 5, "o")).acquired
    assert not await store.renew_refresh_lease(item.key, 1, "o", NOW + 9)
    await store.release_refresh_lease(item.key, 1, "o")
    assert await store.get(item.key, NOW) is None
    assert await store.delete(item.key) is None


async def test_update_racing_a_delete_leaves_no_item(store):
    for _ in range(5):
        item = await create(store, record())
        results = await asyncio.gather(store.update(item.key, 1, b"racing", wid()), store.touch(item.key, NOW + 1),
                                       store.delete(item.key), return_exceptions=True)
        assert all(r is None or isinstance(r, (SessionRecord, VersionConflict)) for r in results)
        assert await store.get(item.key, NOW) is None


async def test_refresh_lease(store):
    item = await create(store, record())
    assert (await store.acquire_refresh_lease(item.key, 1, NOW, NOW + 5, "a")).acquired
    lost = await store.acquire_refresh_lease(item.key, 1, NOW + 1, NOW + 6, "b")  # held by the first
    assert not lost.acquired
    assert lost.current is not None and (lost.current.refresh_lease_until, lost.current.lease_owner) == (NOW + 5, "a")
    assert not (await store.acquire_refresh_lease(item.key, 2, NOW + 6, NOW + 11, "c")).acquired  # wrong version
    assert (await store.acquire_refresh_lease(item.key, 1, NOW + 6, NOW + 11, "d")).acquired  # the first lapsed
    refreshed = await store.update(item.key, 1, b"refreshed tokens", wid())
    assert (refreshed.refresh_lease_until, refreshed.lease_owner) == (0, "")  # writing new tokens ends the lease
    assert (await store.acquire_refresh_lease(item.key, 2, NOW + 7, NOW + 12, "e")).acquired
    await store.release_refresh_lease(item.key, 2, "someone-else")  # not ours: nothing happens
    assert not (await store.acquire_refresh_lease(item.key, 2, NOW + 8, NOW + 13, "f")).acquired
    await store.release_refresh_lease(item.key, 2, "e")  # ours: given back
    assert (await store.acquire_refresh_lease(item.key, 2, NOW + 8, NOW + 13, "g")).acquired


async def test_lease_is_fenced_by_owner_and_version(store):
    item = await create(store, record())
    assert (await store.acquire_refresh_lease(item.key, 1, NOW, NOW + 5, "first")).acquired
    # the first holder stalls; its lease lapses and a second holder takes it
    assert (await store.acquire_refresh_lease(item.key, 1, NOW + 6, NOW + 11, "second")).acquired
    assert not await store.renew_refresh_lease(item.key, 1, "first", NOW + 20)  # the first cannot extend it
    await store.release_refresh_lease(item.key, 1, "first")  # nor give away the second's lease
    held = await store.get(item.key, NOW)
    assert (held.lease_owner, held.refresh_lease_until) == ("second", NOW + 11)
    assert await store.renew_refresh_lease(item.key, 1, "second", NOW + 30)
    assert not (await store.acquire_refresh_lease(item.key, 1, NOW + 12, NOW + 17, "third")).acquired
    await store.update(item.key, 1, b"tokens", wid())
    assert not await store.renew_refresh_lease(item.key, 1, "second", NOW + 40)  # version moved on
    # the same acquire sent again after its answer was lost: still ours
    assert (await store.acquire_refresh_lease(item.key, 2, NOW + 13, NOW + 18, "fourth")).acquired
    assert (await store.acquire_refresh_lease(item.key, 2, NOW + 13, NOW + 18, "fourth")).acquired


async def test_a_backoff_renames_the_lease_and_the_next_taker_sees_it(store):
    """After a failed refresh the holder keeps its lease as a back-off marker (issue 17
    item 3); whoever takes the lapsed lease learns how many failures came before."""
    item = await create(store, record())
    first = await store.acquire_refresh_lease(item.key, 1, NOW, NOW + 56, "a")
    assert first.acquired and first.previous_owner == ""
    assert not await store.renew_refresh_lease(item.key, 1, "b", NOW + 2, "backoff:1:b")  # not b's to rename
    assert await store.renew_refresh_lease(item.key, 1, "a", NOW + 2, "backoff:1:a")
    held = await store.get(item.key, NOW)
    assert (held.lease_owner, held.refresh_lease_until) == ("backoff:1:a", NOW + 2)
    assert not (await store.acquire_refresh_lease(item.key, 1, NOW + 2, NOW + 58, "c")).acquired
    taken = await store.acquire_refresh_lease(item.key, 1, NOW + 3, NOW + 59, "c")
    assert taken.acquired and taken.previous_owner == "backoff:1:a"


async def test_concurrent_leases_have_one_winner(atomic_store):
    store = atomic_store
    item = await create(store, record())
    wins = await asyncio.gather(*(store.acquire_refresh_lease(item.key, 1, NOW, NOW + 5, f"o{i}") for i in range(10)))
    assert [w.acquired for w in wins].count(True) == 1


async def test_delete_missing_is_fine(store):
    assert await store.delete("never-existed") is None


async def test_the_item_limit_is_the_same_everywhere_and_checked_before_the_write(store):
    """DynamoDB refuses items over 400 KB; every backend refuses them the same way (a
    RecordTooLarge, at sign-in), and what our bound accepts the servers accept too."""
    from authproxy.store.base import MAX_ITEM_BYTES, RecordTooLarge, item_size

    room = MAX_ITEM_BYTES - item_size(b"", "alice")
    item = record(key=secrets.token_hex(32), payload=secrets.token_bytes(room))
    await store.create(item, wid())  # exactly at our bound: accepted by the real thing too
    assert len((await store.get(item.key, NOW)).payload) == room
    # (moto counts the old value too while it sets the new one: a large update of a large item
    # fails there, not on DynamoDB, so the update that must pass is a small one)
    assert (await store.update(item.key, 1, b"small", wid())).version == 2
    with pytest.raises(RecordTooLarge):
        await store.create(record(payload=secrets.token_bytes(room + 1)), wid())
    with pytest.raises(RecordTooLarge):
        await store.update(item.key, 2, secrets.token_bytes(room + 1), wid())
    assert (await store.get(item.key, NOW)).version == 2


async def test_sessions_are_found_by_their_sid_and_sub_hashes(store):
    """Back-channel logout (OIDC Back-Channel Logout 1.0, 2.7): a provider session's sessions
    by sid, a user's by sub; what ends leaves the lookups; others are never found."""
    one = await create(store, record(sid_hash="sid-1", sub_hash="sub-alice"))
    two = await create(store, record(sid_hash="sid-1", sub_hash="sub-alice"))  # same provider session, another replica
    three = await create(store, record(sid_hash="sid-2", sub_hash="sub-alice"))  # alice in another browser
    bob = await create(store, record(sub="bob", sid_hash="sid-3", sub_hash="sub-bob"))
    assert (one.sid_hash, one.sub_hash) == ("sid-1", "sub-alice")  # read back as written
    assert sorted(await store.keys_with_sid("sid-1")) == sorted([one.key, two.key])
    assert sorted(await store.keys_with_sub("sub-alice")) == sorted([one.key, two.key, three.key])
    assert await store.keys_with_sid("sid-3") == [bob.key]
    assert await store.keys_with_sid("nobody") == [] and await store.keys_with_sub("nobody") == []
    updated = await store.update(one.key, 1, b"refreshed", wid())
    assert (updated.sid_hash, updated.sub_hash) == ("sid-1", "sub-alice")  # token writes keep them
    await store.delete(two.key)
    assert await store.keys_with_sid("sid-1") == [one.key]
    assert two.key not in await store.keys_with_sub("sub-alice")


async def test_sessions_without_hashes_are_in_no_lookup(store):
    """Sessions an earlier release created (or from a provider without sid) carry no hash:
    they still work, and no lookup returns them."""
    old = await create(store, record())
    no_sid = await create(store, record(sub_hash="sub-carol"))
    assert (old.sid_hash, old.sub_hash) == ("", "")
    assert await store.keys_with_sid("") == [] and await store.keys_with_sub("") == []
    assert await store.keys_with_sub("sub-carol") == [no_sid.key]
    assert (await store.get(old.key, NOW)).payload == old.payload


async def test_a_logout_token_is_taken_once_within_its_lifetime(store):
    """OIDC Back-Channel Logout 1.0, 2.6 step 8: the same jti again is a replay until the
    token could no longer be accepted anyway."""
    assert await store.remember_logout_token("t1", NOW + 180, NOW)
    assert not await store.remember_logout_token("t1", NOW + 180, NOW + 1)  # a replay
    assert not await store.remember_logout_token("t1", NOW + 999, NOW + 180)  # still within its lifetime
    assert await store.remember_logout_token("t2", NOW + 180, NOW + 1)  # another token
    assert await store.remember_logout_token("t1", NOW + 500, NOW + 181)  # lapsed: may be recorded again
    assert not await store.remember_logout_token("t1", NOW + 500, NOW + 182)
    assert await store.keys_with_sub("t1") == []  # the records are no sessions


async def test_a_logout_token_is_seen_while_its_record_lasts(store):
    """The endpoint's first step: a strongly consistent read, which changes nothing, and
    honours the record's end as the conditional write does (a record still there after its
    end, as DynamoDB's lazy TTL leaves it, no longer counts)."""
    assert not await store.logout_token_seen("t1", NOW)
    assert not await store.logout_token_seen("t1", NOW)  # reading records nothing
    assert await store.remember_logout_token("t1", NOW + 180, NOW)
    assert await store.logout_token_seen("t1", NOW)  # read at once after the write: strongly consistent
    assert await store.logout_token_seen("t1", NOW + 180)  # its last second
    assert not await store.logout_token_seen("t1", NOW + 181)  # lapsed
    assert not await store.logout_token_seen("t2", NOW)  # another token
    assert not await store.remember_logout_token("t1", NOW + 300, NOW + 180)  # seen, so a replay ...
    assert await store.remember_logout_token("t1", NOW + 300, NOW + 181)  # ... and lapsed, so new
    assert await store.logout_token_seen("t1", NOW + 300) and not await store.logout_token_seen("t1", NOW + 301)
    assert await store.keys_with_sub("t1") == [] and await store.keys_with_sid("t1") == []  # records are no sessions


async def test_concurrent_replays_of_one_logout_token_have_one_winner(atomic_store):
    store = atomic_store
    results = await asyncio.gather(*(store.remember_logout_token("same", NOW + 120, NOW) for _ in range(10)))
    assert results.count(True) == 1


class LostAnswers:
    """Lets the named calls reach the store, then loses their answers (a timeout)."""

    def __init__(self, store, *names):
        self.lost = 0
        for name in names:
            method = getattr(store._client, name)

            async def lose(*args, _method=method, **kwargs):
                result = await _method(*args, **kwargs)
                if self.lost < 1:
                    self.lost += 1
                    raise asyncio.TimeoutError
                return result

            setattr(store._client, name, lose)


@pytest.mark.parametrize("server", ["moto", "dynalite"])
async def test_a_late_answer_to_a_conditional_write_is_a_success(request, server):
    """The first attempt lands but its answer is lost: our retry fails its condition and
    recognises its own write (a write id on the item), so nothing reports a conflict."""
    backend = DynamoDBStore(f"late-{secrets.token_hex(4)}", region="eu-west-1",
                            endpoint_url=request.getfixturevalue(f"{server}_server").url)
    await backend.open()
    try:
        await backend.create_table()
        item = record()
        lost = LostAnswers(backend, "put_item")
        await backend.create(item, "create-1")  # no VersionConflict: the item there is ours
        assert lost.lost == 1
        lost = LostAnswers(backend, "update_item")
        leased = await backend.acquire_refresh_lease(item.key, 1, NOW, NOW + 60, "me")
        assert leased.acquired and lost.lost == 1  # not counted as lost: our own lease
        lost.lost = 0
        updated = await backend.update(item.key, 1, b"tokens", "write-2")
        assert (updated.version, updated.payload, lost.lost) == (2, b"tokens", 1)
        lost = LostAnswers(backend, "put_item")
        assert await backend.remember_logout_token("jti-hash", NOW + 120, NOW)  # our own record: not a replay
        assert lost.lost == 1
        assert not await backend.remember_logout_token("jti-hash", NOW + 120, NOW)  # a real replay still is
    finally:
        await backend.close()


async def test_sdk_retries_are_off_and_ours_are_bounded():
    backend = DynamoDBStore("t", region="eu-west-1", endpoint_url="http://127.0.0.1:9", timeout=0.5)
    assert backend._config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert backend.write_budget == pytest.approx(3 * 0.5 + 0.1 + 0.3)


async def test_a_permanent_error_is_not_retried_and_says_so(moto_server):
    backend = DynamoDBStore(f"missing-{secrets.token_hex(4)}", region="eu-west-1", endpoint_url=moto_server.url)
    await backend.open()
    try:
        with pytest.raises(StoreRejected):  # no such table: "try again" would never help
            await backend.get("k", NOW)
    finally:
        await backend.close()


async def test_create_table_is_idempotent(moto_server):
    store = DynamoDBStore("idempotent-table", region="eu-west-1", endpoint_url=moto_server.url)
    await store.open()
    try:
        await store.create_table()
        await store.create_table()
        await store.create(record("k"), wid())
        assert (await store.get("k", NOW)).sub == "alice"
    finally:
        await store.close()


def old_table(server, name):
    """A table as releases before back-channel logout created it: key pk, no indexes."""
    import boto3

    client = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=server.url,
                          aws_access_key_id="x", aws_secret_access_key="x")
    client.create_table(TableName=name, AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    return client


async def test_store_init_upgrades_an_older_table(moto_server):
    """An existing table without the indexes: start-up only reports them missing; the
    upgrade (store init) adds both, keeps the old sessions, and the lookups work."""
    name = f"old-{secrets.token_hex(4)}"
    client = old_table(moto_server, name)
    store = DynamoDBStore(name, region="eu-west-1", endpoint_url=moto_server.url)
    await store.open()
    try:
        await store.create(record("old-session"), wid())  # made by the earlier release: no hashes
        assert await store.create_table(upgrade=False) == ["sid_hash-index", "sub_hash-index"]
        with pytest.raises(StoreRejected):  # no index yet: an operator must run store init
            await store.keys_with_sub("sub-alice")
        assert await store.create_table(upgrade=True) == []
        indexes = client.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"]
        assert sorted(index["IndexName"] for index in indexes) == ["sid_hash-index", "sub_hash-index"]
        assert all(index["Projection"] == {"ProjectionType": "KEYS_ONLY"} for index in indexes)
        assert (await store.get("old-session", NOW)).payload == record().payload
        new = await create(store, record(sid_hash="sid-9", sub_hash="sub-alice"))
        assert await store.keys_with_sub("sub-alice") == [new.key]
        assert await store.create_table(upgrade=True) == []  # idempotent
    finally:
        await store.close()


async def test_an_upgrade_the_server_ignores_is_an_error_not_a_hang(dynalite_server):
    """dynalite cannot add an index to a table (it wants the old API's provisioned
    throughput for it, and would ignore the index anyway): store init says so at once."""
    name = f"old-{secrets.token_hex(4)}"
    old_table(dynalite_server, name)
    store = DynamoDBStore(name, region="eu-west-1", endpoint_url=dynalite_server.url)
    await store.open()
    try:
        with pytest.raises(StoreRejected, match="update_table"):
            await store.create_table(wait=10, upgrade=True)
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
