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

    async def update(self, key: str, expected_version: int, payload: bytes) -> SessionRecord:
        record = self._items.get(key)
        if record is None or record.version != expected_version:
            raise VersionConflict("session changed or gone")
        updated = replace(record, payload=payload, version=record.version + 1, refresh_lease_until=0)
        self._items[key] = updated
        return updated

    async def touch(self, key: str, last_seen_at: int) -> None:
        record = self._items.get(key)
        if record is None:
            raise VersionConflict("session gone")
        self._items[key] = replace(record, last_seen_at=last_seen_at)

    async def release_refresh_lease(self, key: str, until: int) -> None:
        record = self._items.get(key)
        if record is not None and record.refresh_lease_until == until:
            self._items[key] = replace(record, refresh_lease_until=0)

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
