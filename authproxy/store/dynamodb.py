"""Sessions in DynamoDB, shared by every replica (aioboto3; one client per process).

Item: pk (S), sub (S), payload (B, sealed), expires_at (N, the TTL attribute),
version (N), created_at (N), last_seen_at (N), refresh_lease_until (N), lease_owner (S),
write_id (S), and, for back-channel logout, sid_hash (S) and sub_hash (S) (SHA-256 of the
issuer and sid / sub: oidc/logout.py). Two sparse global secondary indexes, KEYS_ONLY,
find sessions by those hashes (a session without one is simply not in that index):
``sid_hash-index`` and ``sub_hash-index``. Items under ``logout-token#<hash>`` (pk,
expires_at, write_id) remember the logout tokens already acted on, until they expire
(read with ConsistentRead before a logout, written conditionally after it).
Reads are ConsistentRead; writes after creation carry ``attribute_exists(pk) AND
version = :expected`` so an UpdateItem can never re-create a deleted session.

Retries are ours, not the SDK's (``total_max_attempts: 1``): a conditional write whose
first attempt landed but whose answer was lost fails its condition when sent again,
and the SDK would report that as a conflict (a replica then counts its own lease as
lost, or a user gets 503 for a session that was created). Each conditional write names
itself (a write id, or the lease owner) and asks for the item on a failed condition
(``ReturnValuesOnConditionCheckFailure=ALL_OLD``); finding its own id there is a
success. dynalite does not return the item, so then a consistent read tells.
Each attempt is cut at ``timeout``, so one call takes at most ``write_budget``.

Every attempt passes a circuit breaker (store/breaker.py): once the store is known to be
down, calls fail at once and one probe at a time finds out when it is back. Keys the
store said it does not hold are remembered for a while, so a replayed unknown cookie
costs no read.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from authproxy import metrics
from authproxy.logs import log
from authproxy.store import aws
from authproxy.store.breaker import CircuitBreaker, RecentlyAbsent
from authproxy.store.base import (
    LeaseResult, SessionRecord, StoreRejected, StoreUnavailable, VersionConflict, check_item_size,
)

_CONDITION_FAILED = "ConditionalCheckFailedException"
# Codes a retry cannot fix: the request or the set-up is wrong (DynamoDB API reference, "Errors").
_PERMANENT = frozenset({
    "ValidationException", "ResourceNotFoundException", "AccessDeniedException", "UnrecognizedClientException",
    "ItemCollectionSizeLimitExceededException", "SerializationException", "MissingAuthenticationTokenException",
    "InvalidSignatureException", "IncompleteSignatureException", "UnknownOperationException",
})
ATTEMPTS = 3
BACKOFF = (0.1, 0.3)  # seconds before the 2nd and 3rd attempt (each with up to 50 % jitter off)

# The table as `store init` creates it (deploy/aws/dynamodb-table.yaml says the same; a test compares them).
KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}]
ATTRIBUTE_DEFINITIONS = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sid_hash", "AttributeType": "S"},
    {"AttributeName": "sub_hash", "AttributeType": "S"},
]
SID_INDEX = "sid_hash-index"
SUB_INDEX = "sub_hash-index"
# KEYS_ONLY: a lookup needs only the keys to delete; nothing sealed is copied into an index.
INDEXES = [
    {"IndexName": SID_INDEX, "KeySchema": [{"AttributeName": "sid_hash", "KeyType": "HASH"}],
     "Projection": {"ProjectionType": "KEYS_ONLY"}},
    {"IndexName": SUB_INDEX, "KeySchema": [{"AttributeName": "sub_hash", "KeyType": "HASH"}],
     "Projection": {"ProjectionType": "KEYS_ONLY"}},
]
# Session keys are SHA-256 hex: no session key can take this form.
LOGOUT_TOKEN_PREFIX = "logout-token#"


class _ConditionFailed(Exception):
    def __init__(self, item: dict[str, Any] | None):
        self.item = item


class DynamoDBStore:
    name = "dynamodb"

    def __init__(self, table: str, *, region: str, endpoint_url: str | None = None, timeout: float = 2.0,
                 attempts: int = ATTEMPTS, clock: Callable[[], float] = time.monotonic):
        self.table = table
        self.breaker = CircuitBreaker(self.name, probe_timeout=timeout + 1.0, clock=clock)
        self.absent = RecentlyAbsent(clock=clock)
        self._region = region
        self._endpoint_url = endpoint_url
        self._timeout = timeout
        self._attempts = attempts
        # No SDK retries: "max_attempts: 1" still means two attempts, total_max_attempts is the real count.
        self._config = BotoConfig(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=timeout,
            read_timeout=timeout,
        )
        self.write_budget = attempts * timeout + sum(BACKOFF[: attempts - 1])
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        session = aws.session()
        self._client = await self._stack.enter_async_context(
            session.client("dynamodb", region_name=self._region, endpoint_url=self._endpoint_url, config=self._config)
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def get(self, key: str, now: int) -> SessionRecord | None:
        if key in self.absent:
            return None
        item = await self._get_item(key)
        record = _record(item) if item is not None else None
        if record is None or now >= record.expires_at:
            self.absent.add(key)
            return None
        return record

    async def _get_item(self, key: str) -> dict[str, Any] | None:
        response = await self._call("get", self._client.get_item, TableName=self.table, Key={"pk": {"S": key}},
                                    ConsistentRead=True)
        return response.get("Item")

    async def create(self, record: SessionRecord, write_id: str) -> None:
        check_item_size(record.payload, record.sub)  # the service would refuse it (ValidationException)
        self.absent.discard(record.key)
        item = {
            "pk": {"S": record.key},
            "sub": {"S": record.sub},
            "payload": {"B": record.payload},
            "expires_at": {"N": str(record.expires_at)},
            "version": {"N": "1"},
            "created_at": {"N": str(record.created_at)},
            "last_seen_at": {"N": str(record.last_seen_at)},
            "refresh_lease_until": {"N": "0"},
            "lease_owner": {"S": ""},
            "write_id": {"S": write_id},
        }
        # Index keys cannot be empty strings: a session without a sid is left out of that index.
        if record.sid_hash:
            item["sid_hash"] = {"S": record.sid_hash}
        if record.sub_hash:
            item["sub_hash"] = {"S": record.sub_hash}
        await self._conditional(
            "create", record.key, lambda found: found.write_id == write_id,
            self._client.put_item, TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)",
        )

    async def update(self, key: str, expected_version: int, payload: bytes, write_id: str) -> SessionRecord:
        check_item_size(payload)
        response = await self._conditional(
            "update", key, lambda found: found.write_id == write_id and found.version == expected_version + 1,
            self._client.update_item, TableName=self.table, Key={"pk": {"S": key}},
            # New tokens end the refresh, so the lease goes with them.
            UpdateExpression=("SET payload = :payload, version = :next, refresh_lease_until = :zero, "
                              "lease_owner = :nobody, write_id = :write"),
            ConditionExpression="attribute_exists(pk) AND version = :expected",
            ExpressionAttributeValues={
                ":payload": {"B": payload}, ":expected": {"N": str(expected_version)},
                ":next": {"N": str(expected_version + 1)}, ":zero": {"N": "0"}, ":nobody": {"S": ""},
                ":write": {"S": write_id},
            },
            ReturnValues="ALL_NEW",
        )
        return response if isinstance(response, SessionRecord) else _record(response["Attributes"])

    async def touch(self, key: str, last_seen_at: int) -> None:
        # attribute_exists holds again when a landed attempt is sent once more: safe to retry.
        try:
            await self._conditional(
                "touch", key, lambda found: True,
                self._client.update_item, TableName=self.table, Key={"pk": {"S": key}},
                UpdateExpression="SET last_seen_at = :seen", ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":seen": {"N": str(last_seen_at)}},
            )
        except VersionConflict:
            raise VersionConflict("touch: session gone") from None

    async def acquire_refresh_lease(
        self, key: str, expected_version: int, now: int, until: int, owner: str
    ) -> LeaseResult:
        try:
            response = await self._conditional(
                "lease", key,
                lambda found: found.lease_owner == owner and found.version == expected_version
                and found.refresh_lease_until == until,
                self._client.update_item, TableName=self.table, Key={"pk": {"S": key}},
                UpdateExpression="SET refresh_lease_until = :until, lease_owner = :owner",
                ConditionExpression=(
                    "attribute_exists(pk) AND version = :expected AND "
                    "(attribute_not_exists(refresh_lease_until) OR refresh_lease_until < :now)"
                ),
                ExpressionAttributeValues={
                    ":until": {"N": str(until)}, ":expected": {"N": str(expected_version)}, ":now": {"N": str(now)},
                    ":owner": {"S": owner},
                },
                ReturnValues="UPDATED_OLD",  # the lapsed lease's owner: a back-off marker counts failures
            )
        except VersionConflict as exc:
            return LeaseResult(False, exc.current)  # the holder's lease and version, for the loser
        previous = response.get("Attributes", {}) if isinstance(response, dict) else {}
        return LeaseResult(True, previous_owner=previous.get("lease_owner", {}).get("S", ""))

    async def renew_refresh_lease(self, key: str, version: int, owner: str, until: int,
                                  new_owner: str | None = None) -> bool:
        named = new_owner or owner
        try:
            await self._conditional(
                "renew", key, lambda found: found.lease_owner == named and found.refresh_lease_until == until
                and found.version == version,
                self._client.update_item, TableName=self.table, Key={"pk": {"S": key}},
                UpdateExpression="SET refresh_lease_until = :until, lease_owner = :named",
                ConditionExpression="attribute_exists(pk) AND version = :version AND lease_owner = :owner",
                ExpressionAttributeValues={":until": {"N": str(until)}, ":version": {"N": str(version)},
                                           ":owner": {"S": owner}, ":named": {"S": named}},
            )
        except VersionConflict:
            return False
        return True

    async def release_refresh_lease(self, key: str, version: int, owner: str) -> None:
        try:
            await self._conditional(
                "release", key, lambda found: found.lease_owner != owner,  # released (by us, or ended)
                self._client.update_item, TableName=self.table, Key={"pk": {"S": key}},
                UpdateExpression="SET refresh_lease_until = :zero, lease_owner = :nobody",
                ConditionExpression="attribute_exists(pk) AND version = :version AND lease_owner = :owner",
                ExpressionAttributeValues={":zero": {"N": "0"}, ":nobody": {"S": ""}, ":version": {"N": str(version)},
                                           ":owner": {"S": owner}},
            )
        except VersionConflict:
            pass  # no longer ours (it lapsed and someone else took it, or the session ended)

    async def delete(self, key: str) -> SessionRecord | None:
        response = await self._call("delete", self._client.delete_item, TableName=self.table, Key={"pk": {"S": key}},
                                    ReturnValues="ALL_OLD")
        self.absent.add(key)
        item = response.get("Attributes")
        return _record(item) if item else None

    async def keys_with_sid(self, sid_hash: str) -> list[str]:
        return await self._keys_in_index(SID_INDEX, "sid_hash", sid_hash)

    async def keys_with_sub(self, sub_hash: str) -> list[str]:
        return await self._keys_in_index(SUB_INDEX, "sub_hash", sub_hash)

    async def _keys_in_index(self, index: str, attribute: str, value: str) -> list[str]:
        # A GSI Query is eventually consistent (no ConsistentRead on global indexes): a session
        # created a moment before may not be found yet. Each page holds up to 1 MB of keys.
        if not value:
            return []  # no item has an empty index key (the service refuses to query for one)
        keys: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            page = await self._call(
                "query", self._client.query, TableName=self.table, IndexName=index,
                KeyConditionExpression="#attribute = :value", ExpressionAttributeNames={"#attribute": attribute},
                ExpressionAttributeValues={":value": {"S": value}}, **({"ExclusiveStartKey": start} if start else {}),
            )
            keys.extend(item["pk"]["S"] for item in page.get("Items", ()))
            start = page.get("LastEvaluatedKey")
            if not start:
                return keys

    async def logout_token_seen(self, token_hash: str, now: int) -> bool:
        response = await self._call("logout_token_seen", self._client.get_item, TableName=self.table,
                                    Key={"pk": {"S": LOGOUT_TOKEN_PREFIX + token_hash}}, ConsistentRead=True)
        item = response.get("Item")
        # A record past its expiry may still be there (TTL deletes lazily): it no longer counts,
        # as for remember_logout_token's condition.
        return item is not None and int(item.get("expires_at", {}).get("N", "0")) >= now

    async def remember_logout_token(self, token_hash: str, until: int, now: int) -> bool:
        key = LOGOUT_TOKEN_PREFIX + token_hash
        write_id = secrets.token_urlsafe(12)
        try:
            await self._call(
                "logout_token", self._client.put_item, TableName=self.table,
                Item={"pk": {"S": key}, "expires_at": {"N": str(until)}, "write_id": {"S": write_id}},
                # A record past its expiry may still be there (TTL deletes lazily): it no longer counts.
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except _ConditionFailed as exc:
            item = exc.item if exc.item else await self._get_item(key)  # dynalite returns no item
            # Our own earlier attempt, whose answer was lost, is not a replay.
            return item is not None and item.get("write_id", {}).get("S") == write_id
        return True

    async def create_table(self, wait: float = 60.0, *, upgrade: bool = True) -> list[str]:
        """Create the table (PAY_PER_REQUEST, with the back-channel logout indexes) if missing,
        wait for ACTIVE, enable TTL. A table an earlier release created lacks the indexes:
        ``upgrade`` adds them (UpdateTable, one index per call as DynamoDB requires, each
        waited for until ACTIVE, which on a large table means backfilled); without it they are
        only reported. Idempotent: run again, it waits for what is still being built.
        Returns the names of the indexes still missing (none after an upgrade).

        Every call to the service is written here, in this one method: the IAM policies in
        deploy/aws are checked against the calls each method makes (tests/unit/test_deploy_files.py)."""
        try:
            await self._client.create_table(
                TableName=self.table,
                AttributeDefinitions=ATTRIBUTE_DEFINITIONS,
                KeySchema=KEY_SCHEMA,
                GlobalSecondaryIndexes=INDEXES,
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise StoreUnavailable(f"create_table: {exc.response.get('Error', {}).get('Code')}") from None
        except (BotoCoreError, OSError, asyncio.TimeoutError) as exc:
            raise StoreUnavailable(f"create_table: {type(exc).__name__}") from None
        deadline = asyncio.get_running_loop().time() + wait
        describe = self._client.describe_table
        table = await self._until_active(describe, deadline, wait)
        missing = [index for index in INDEXES if index["IndexName"] not in _index_names(table)]
        if missing and upgrade:
            for index in missing:
                await self._call("update_table", self._client.update_table, TableName=self.table,
                                 AttributeDefinitions=ATTRIBUTE_DEFINITIONS, GlobalSecondaryIndexUpdates=[{"Create": index}])
                table = await self._until_active(describe, deadline, wait)
                if index["IndexName"] not in _index_names(table):
                    # dynalite accepts the call and ignores it; no retry can help.
                    raise StoreRejected(f"update_table: the server did not add index {index['IndexName']}")
                log().info("store_index_created", extra={"fields": {"table": self.table, "index": index["IndexName"]}})
            missing = []
        elif missing:
            log().warning("store_indexes_missing", extra={"fields": {
                "table": self.table, "indexes": [index["IndexName"] for index in missing],
                "effect": "back-channel logout cannot find sessions; run `authproxy store init`"}})
        try:
            await self._client.update_time_to_live(
                TableName=self.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "ValidationException" and "already enabled" in str(exc).lower():
                return [index["IndexName"] for index in missing]
            # dynalite has no UpdateTimeToLive; expiry is still honoured on every read.
            log().warning("store_ttl_not_enabled", extra={"fields": {"table": self.table, "code": code}})
        except (BotoCoreError, OSError, asyncio.TimeoutError) as exc:
            log().warning("store_ttl_not_enabled", extra={"fields": {"table": self.table, "code": type(exc).__name__}})
        return [index["IndexName"] for index in missing]

    async def _until_active(self, describe: Any, deadline: float, wait: float) -> dict[str, Any]:
        """The table's description once it and every index are ACTIVE (tables and indexes
        become ACTIVE asynchronously: the real service, dynalite; an index being added to a
        table with items is backfilled first)."""
        loop = asyncio.get_running_loop()
        while True:
            table = (await self._call("describe_table", describe, TableName=self.table))["Table"]
            building = [index["IndexName"] for index in table.get("GlobalSecondaryIndexes", ())
                        if index.get("IndexStatus", "ACTIVE") != "ACTIVE" or index.get("Backfilling")]
            if table["TableStatus"] == "ACTIVE" and not building:
                return table
            if loop.time() > deadline:
                what = f"index {', '.join(building)}" if building else f"table {self.table}"
                raise StoreUnavailable(f"{what} not ACTIVE after {wait:g}s (run store init again to keep waiting)")
            await asyncio.sleep(0.5 if building else 0.1)

    async def _conditional(
        self, operation: str, key: str, ours: Callable[[SessionRecord], bool], method: Any, **kwargs: Any
    ) -> dict[str, Any] | SessionRecord:
        """A conditional write under our own retries; on a failed condition, the item as
        the store holds it decides: our own earlier attempt (a success, returned as the
        record) or a real conflict (VersionConflict carrying the item, None when gone)."""
        kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            return await self._call(operation, method, **kwargs)
        except _ConditionFailed as exc:
            item = exc.item if exc.item else await self._get_item(key)  # dynalite returns no item
        current = _record(item) if item else None
        if current is not None and ours(current):
            return current
        raise VersionConflict(f"{operation}: condition failed", current)

    async def _call(self, operation: str, method: Any, **kwargs: Any) -> dict[str, Any]:
        if self._client is None:
            raise StoreUnavailable("store not open")
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF)) - 1] * (0.5 + random.random() / 2))
            if not self.breaker.allow():
                raise StoreUnavailable(f"{operation}: the store is unavailable (circuit open)")
            try:
                return await self._attempt(operation, method, kwargs)
            except StoreUnavailable:
                if attempt == self._attempts - 1:
                    raise
        raise AssertionError("unreachable")

    async def _attempt(self, operation: str, method: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        answered: bool | None = None  # for the breaker; None: cancelled, no verdict
        try:
            async with asyncio.timeout(self._timeout):  # connect + read together stay within one timeout
                response = await method(**kwargs)
            answered = True
            return response
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code")
            # Any answer below 500 (a failed condition, throttling, a refusal) proves the store is up.
            answered = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500) < 500
            if code == _CONDITION_FAILED:
                raise _ConditionFailed(exc.response.get("Item")) from None
            metrics.STORE_ERRORS.labels(self.name, operation).inc()
            if code in _PERMANENT:
                log().error("store_rejected", extra={"fields": {"operation": operation, "code": code,
                                                                "message": str(error.get("Message", ""))[:200]}})
                raise StoreRejected(f"{operation}: {code}") from None
            raise StoreUnavailable(f"{operation}: {code}") from None
        except (BotoCoreError, OSError, asyncio.TimeoutError) as exc:
            answered = False
            metrics.STORE_ERRORS.labels(self.name, operation).inc()
            raise StoreUnavailable(f"{operation}: {type(exc).__name__}") from None
        finally:
            if answered is True:
                self.breaker.success()
            elif answered is False:
                self.breaker.failure()
            else:
                self.breaker.abandon()
            metrics.STORE_DURATION.labels(self.name, operation).observe(time.perf_counter() - started)


def _record(item: dict[str, Any]) -> SessionRecord:
    return SessionRecord(
        key=item["pk"]["S"],
        sub=item.get("sub", {}).get("S", ""),
        payload=bytes(item["payload"]["B"]),
        expires_at=int(item["expires_at"]["N"]),
        version=int(item["version"]["N"]),
        created_at=int(item.get("created_at", {}).get("N", "0")),
        last_seen_at=int(item.get("last_seen_at", {}).get("N", "0")),
        refresh_lease_until=int(item.get("refresh_lease_until", {}).get("N", "0")),
        lease_owner=item.get("lease_owner", {}).get("S", ""),
        write_id=item.get("write_id", {}).get("S", ""),
        sid_hash=item.get("sid_hash", {}).get("S", ""),
        sub_hash=item.get("sub_hash", {}).get("S", ""),
    )


def _index_names(table: dict[str, Any]) -> set[str]:
    return {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", ())}
