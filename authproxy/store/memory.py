"""The in-process store: one process, no HA (demo, development, a single sidecar)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from authproxy.store.base import LeaseResult, SessionRecord, VersionConflict, check_item_size


class MemoryStore:
    name = "memory"
    write_budget = 0.0  # no network: a call answers at once

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

    async def create(self, record: SessionRecord, write_id: str) -> None:
        check_item_size(record.payload, record.sub)
        existing = self._items.get(record.key)
        if existing is not None:
            if existing.write_id == write_id:
                return  # our own earlier write
            raise VersionConflict("session key exists", existing)
        self._items[record.key] = replace(record, version=1, write_id=write_id)
        while len(self._items) > self._max_entries:
            self._items.popitem(last=False)  # oldest first

    async def update(self, key: str, expected_version: int, payload: bytes, write_id: str) -> SessionRecord:
        check_item_size(payload)
        record = self._items.get(key)
        if record is None or record.version != expected_version:
            if record is not None and record.write_id == write_id and record.version == expected_version + 1:
                return record  # our own earlier write
            raise VersionConflict("session changed or gone", record)
        updated = replace(record, payload=payload, version=record.version + 1, refresh_lease_until=0, lease_owner="",
                          write_id=write_id)
        self._items[key] = updated
        return updated

    async def touch(self, key: str, last_seen_at: int) -> None:
        record = self._items.get(key)
        if record is None:
            raise VersionConflict("session gone")
        self._items[key] = replace(record, last_seen_at=last_seen_at)

    async def acquire_refresh_lease(
        self, key: str, expected_version: int, now: int, until: int, owner: str
    ) -> LeaseResult:
        record = self._items.get(key)
        if record is None:
            return LeaseResult(False, None)
        if record.version == expected_version and record.lease_owner == owner and record.refresh_lease_until == until:
            return LeaseResult(True, record)  # our own earlier write
        if record.version != expected_version or record.refresh_lease_until >= now:
            return LeaseResult(False, record)
        self._items[key] = updated = replace(record, refresh_lease_until=until, lease_owner=owner)
        return LeaseResult(True, updated, record.lease_owner)

    async def renew_refresh_lease(self, key: str, version: int, owner: str, until: int,
                                  new_owner: str | None = None) -> bool:
        record = self._items.get(key)
        if record is None or record.version != version or record.lease_owner != owner:
            return False
        self._items[key] = replace(record, refresh_lease_until=until, lease_owner=new_owner or owner)
        return True

    async def release_refresh_lease(self, key: str, version: int, owner: str) -> None:
        record = self._items.get(key)
        if record is not None and record.version == version and record.lease_owner == owner:
            self._items[key] = replace(record, refresh_lease_until=0, lease_owner="")

    async def delete(self, key: str) -> SessionRecord | None:
        return self._items.pop(key, None)

    async def close(self) -> None:
        self._items.clear()
