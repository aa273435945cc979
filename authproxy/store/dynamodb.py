"""Sessions in DynamoDB, shared by every replica (aioboto3; one client per process).

Item: pk (S), sub (S), payload (B, sealed), expires_at (N, the TTL attribute),
version (N), created_at (N), last_seen_at (N), refresh_lease_until (N).
Reads are ConsistentRead; writes after creation carry ``attribute_exists(pk) AND
version = :expected`` so an UpdateItem can never re-create a deleted session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aioboto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from authproxy import metrics
from authproxy.logs import log
from authproxy.store.base import SessionRecord, StoreUnavailable, VersionConflict

_CONDITION_FAILED = "ConditionalCheckFailedException"


class DynamoDBStore:
    name = "dynamodb"

    def __init__(self, table: str, *, region: str, endpoint_url: str | None = None, timeout: float = 2.0):
        self.table = table
        self._region = region
        self._endpoint_url = endpoint_url
        self._config = BotoConfig(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=timeout,
            read_timeout=timeout,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        session = aioboto3.Session()
        self._client = await self._stack.enter_async_context(
            session.client("dynamodb", region_name=self._region, endpoint_url=self._endpoint_url, config=self._config)
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def get(self, key: str, now: int) -> SessionRecord | None:
        response = await self._call("get", self._client.get_item, TableName=self.table, Key={"pk": {"S": key}},
                                    ConsistentRead=True)
        item = response.get("Item")
        if item is None:
            return None
        record = _record(item)
        return None if now >= record.expires_at else record

    async def create(self, record: SessionRecord) -> None:
        item = {
            "pk": {"S": record.key},
            "sub": {"S": record.sub},
            "payload": {"B": record.payload},
            "expires_at": {"N": str(record.expires_at)},
            "version": {"N": "1"},
            "created_at": {"N": str(record.created_at)},
            "last_seen_at": {"N": str(record.last_seen_at)},
            "refresh_lease_until": {"N": "0"},
        }
        await self._call("create", self._client.put_item, TableName=self.table, Item=item,
                         ConditionExpression="attribute_not_exists(pk)")

    async def update(self, key: str, expected_version: int, payload: bytes) -> SessionRecord:
        response = await self._call(
            "update", self._client.update_item, TableName=self.table, Key={"pk": {"S": key}},
            # New tokens end the refresh, so the lease goes with them.
            UpdateExpression="SET payload = :payload, version = :next, refresh_lease_until = :zero",
            ConditionExpression="attribute_exists(pk) AND version = :expected",
            ExpressionAttributeValues={
                ":payload": {"B": payload}, ":expected": {"N": str(expected_version)},
                ":next": {"N": str(expected_version + 1)}, ":zero": {"N": "0"},
            },
            ReturnValues="ALL_NEW",
        )
        return _record(response["Attributes"])

    async def touch(self, key: str, last_seen_at: int) -> None:
        await self._call(
            "touch", self._client.update_item, TableName=self.table, Key={"pk": {"S": key}},
            UpdateExpression="SET last_seen_at = :seen", ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":seen": {"N": str(last_seen_at)}},
        )

    async def release_refresh_lease(self, key: str, until: int) -> None:
        try:
            await self._call(
                "release", self._client.update_item, TableName=self.table, Key={"pk": {"S": key}},
                UpdateExpression="SET refresh_lease_until = :zero",
                ConditionExpression="attribute_exists(pk) AND refresh_lease_until = :until",
                ExpressionAttributeValues={":zero": {"N": "0"}, ":until": {"N": str(until)}},
            )
        except VersionConflict:
            pass  # no longer ours (it lapsed and someone else took it, or the session ended)

    async def acquire_refresh_lease(self, key: str, expected_version: int, now: int, until: int) -> bool:
        try:
            await self._call(
                "lease", self._client.update_item, TableName=self.table, Key={"pk": {"S": key}},
                UpdateExpression="SET refresh_lease_until = :until",
                ConditionExpression=(
                    "attribute_exists(pk) AND version = :expected AND "
                    "(attribute_not_exists(refresh_lease_until) OR refresh_lease_until < :now)"
                ),
                ExpressionAttributeValues={
                    ":until": {"N": str(until)}, ":expected": {"N": str(expected_version)}, ":now": {"N": str(now)},
                },
            )
        except VersionConflict:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._call("delete", self._client.delete_item, TableName=self.table, Key={"pk": {"S": key}})

    async def create_table(self, wait: float = 60.0) -> None:
        """Create the table (PAY_PER_REQUEST) if missing, wait for ACTIVE, enable TTL; idempotent."""
        try:
            await self._client.create_table(
                TableName=self.table,
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise StoreUnavailable(f"create_table: {exc.response.get('Error', {}).get('Code')}") from None
        except (BotoCoreError, OSError, asyncio.TimeoutError) as exc:
            raise StoreUnavailable(f"create_table: {type(exc).__name__}") from None
        deadline = asyncio.get_running_loop().time() + wait
        while True:  # tables become ACTIVE asynchronously (the real service, dynalite)
            description = await self._call("describe_table", self._client.describe_table, TableName=self.table)
            if description["Table"]["TableStatus"] == "ACTIVE":
                break
            if asyncio.get_running_loop().time() > deadline:
                raise StoreUnavailable(f"table {self.table} not ACTIVE after {wait:g}s")
            await asyncio.sleep(0.1)
        try:
            await self._client.update_time_to_live(
                TableName=self.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "ValidationException" and "already enabled" in str(exc).lower():
                return
            # dynalite has no UpdateTimeToLive; expiry is still honoured on every read.
            log().warning("store_ttl_not_enabled", extra={"fields": {"table": self.table, "code": code}})
        except (BotoCoreError, OSError, asyncio.TimeoutError) as exc:
            log().warning("store_ttl_not_enabled", extra={"fields": {"table": self.table, "code": type(exc).__name__}})

    async def _call(self, operation: str, method: Any, **kwargs: Any) -> dict[str, Any]:
        if self._client is None:
            raise StoreUnavailable("store not open")
        started = time.perf_counter()
        try:
            return await method(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == _CONDITION_FAILED:
                raise VersionConflict(f"{operation}: condition failed") from None
            metrics.STORE_ERRORS.labels(self.name, operation).inc()
            raise StoreUnavailable(f"{operation}: {code}") from None
        except (BotoCoreError, OSError, asyncio.TimeoutError) as exc:
            metrics.STORE_ERRORS.labels(self.name, operation).inc()
            raise StoreUnavailable(f"{operation}: {type(exc).__name__}") from None
        finally:
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
    )
