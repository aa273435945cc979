"""The in-process store: one process, no HA (demo, development, a single sidecar).

The back-channel logout lookups (sessions by sid or sub hash) are dictionaries of key
sets kept beside the items, the memory counterpart of the DynamoDB store's indexes.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import replace

from authproxy.store.base import LeaseResult, SessionRecord, VersionConflict, check_item_size


class MemoryStore:
    name = "memory"
    write_budget = 0.0  # no network: a call answers at once

    def __init__(self, max_entries: int = 100_000):
        self._items: OrderedDict[str, SessionRecord] = OrderedDict()
        self._max_entries = max_entries
        self._by_sid: dict[str, set[str]] = {}
        self._by_sub: dict[str, set[str]] = {}
        # Logout tokens seen (hash -> until), and the same as a heap of (until, hash), the
        # soonest to lapse first: lapsed records leave as they lapse, each once (no sweep over
        # them all). Only the provider can mint valid tokens, so their number follows its real
        # logouts; the bound (max_entries) is a backstop, which drops the soonest to lapse.
        self._logout_tokens: dict[str, int] = {}
        self._logout_expiry: list[tuple[int, str]] = []

    async def get(self, key: str, now: int) -> SessionRecord | None:
        record = self._items.get(key)
        if record is None:
            return None
        if now >= record.expires_at:
            self._drop(key)
            return None
        return record

    def _drop(self, key: str) -> SessionRecord | None:
        record = self._items.pop(key, None)
        if record is not None:
            for index, value in ((self._by_sid, record.sid_hash), (self._by_sub, record.sub_hash)):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
        return record

    async def create(self, record: SessionRecord, write_id: str) -> None:
        check_item_size(record.payload, record.sub)
        existing = self._items.get(record.key)
        if existing is not None:
            if existing.write_id == write_id:
                return  # our own earlier write
            raise VersionConflict("session key exists", existing)
        self._items[record.key] = replace(record, version=1, write_id=write_id)
        if record.sid_hash:
            self._by_sid.setdefault(record.sid_hash, set()).add(record.key)
        if record.sub_hash:
            self._by_sub.setdefault(record.sub_hash, set()).add(record.key)
        while len(self._items) > self._max_entries:
            self._drop(next(iter(self._items)))  # oldest first

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
        return self._drop(key)

    async def keys_with_sid(self, sid_hash: str) -> list[str]:
        return list(self._by_sid.get(sid_hash, ()))

    async def keys_with_sub(self, sub_hash: str) -> list[str]:
        return list(self._by_sub.get(sub_hash, ()))

    async def logout_token_seen(self, token_hash: str, now: int) -> bool:
        until = self._logout_tokens.get(token_hash)
        return until is not None and until >= now

    async def remember_logout_token(self, token_hash: str, until: int, now: int) -> bool:
        expiry = self._logout_expiry
        while expiry and expiry[0][0] < now:  # lapsed: gone (amortised O(log n) each)
            lapsed, old = heapq.heappop(expiry)
            if self._logout_tokens.get(old) == lapsed:
                del self._logout_tokens[old]
        if token_hash in self._logout_tokens:  # not lapsed, or it would be gone now
            return False
        self._logout_tokens[token_hash] = until
        heapq.heappush(expiry, (until, token_hash))
        while len(self._logout_tokens) > self._max_entries:
            lapses, old = heapq.heappop(expiry)
            if self._logout_tokens.get(old) == lapses:
                del self._logout_tokens[old]
        return True

    async def close(self) -> None:
        self._items.clear()
        self._by_sid.clear()
        self._by_sub.clear()
        self._logout_tokens.clear()
        self._logout_expiry.clear()
