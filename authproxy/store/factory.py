"""The configured store, opened (I/O at start-up, closed at shutdown by the caller)."""

from __future__ import annotations

from authproxy.config.schema import StoreConfig
from authproxy.logs import log
from authproxy.store.base import SessionStore, StoreError


async def open_store(config: StoreConfig, *, create_table: bool | None = None) -> SessionStore:
    """``create_table`` None follows ``store.dynamodb.create_table``."""
    if config.backend == "memory":
        from authproxy.store.memory import MemoryStore

        return MemoryStore()
    from authproxy.store.dynamodb import DynamoDBStore  # only then: it brings aioboto3

    settings = config.dynamodb
    assert settings is not None  # the schema requires it for this backend
    store = DynamoDBStore(settings.table, region=settings.region, endpoint_url=settings.endpoint_url)
    await store.open()
    if settings.create_table if create_table is None else create_table:
        try:
            # Not the index upgrade of an older table: replicas starting together would race
            # their UpdateTable calls and wait for a backfill; `authproxy store init` does it once.
            await store.create_table(upgrade=False)
        except StoreError as exc:
            # Not fatal at start-up: requests needing the store get 503 until it answers.
            log().error("store_create_table_failed", extra={"fields": {"table": settings.table, "error": str(exc)}})
    return store
