"""The in-process store: one process, no HA (demo, development, a single sidecar)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from authproxy.store.base import SessionRecord, VersionConflict


class MemoryStore:
    name = "memory"

    def __init__(self, max_entries: int = 100_000):
        self._items: OrderedDict[str, SessionRecord] = OrderedDict()
        self._max_entries = max_entries

    async def get(self, key: str, now: int) -> SessionRecord | None:
        record = self._items.get(key)
        if record is None:
            return None
        if now >= record.expires_at:
            del self._items[key]
            return None
        return record

    async def create(self, record: SessionRecord) -> None:
        if record.key in self._items:
            raise VersionConflict("session key exists")
        self._items[record.key] = replace(record, version=1)
        while len(self._items) > self._max_entries:
            self._items.popitem(last=False)  # oldest first

    async def update(
        self, key: str, expected_version: int, *, payload: bytes | None = None, last_seen_at: int | None = None
    ) -> SessionRecord:
        record = self._items.get(key)
        if record is None or record.version != expected_version:
            raise VersionConflict("session changed or gone")
        updated = replace(
            record,
            payload=record.payload if payload is None else payload,
            last_seen_at=record.last_seen_at if last_seen_at is None else last_seen_at,
            version=record.version + 1,
            refresh_lease_until=0 if payload is not None else record.refresh_lease_until,
        )
        self._items[key] = updated
        return updated

    async def acquire_refresh_lease(self, key: str, expected_version: int, now: int, until: int) -> bool:
        record = self._items.get(key)
        if record is None or record.version != expected_version or record.refresh_lease_until > now:
            return False
        self._items[key] = replace(record, refresh_lease_until=until)
        return True

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    async def close(self) -> None:
        self._items.clear()
