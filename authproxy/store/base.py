"""The session store interface, and the record it keeps.

Rules every backend follows (the contract suite in tests/contract checks them):

- ``get`` is strongly consistent and treats an item past ``expires_at`` as absent
  (DynamoDB deletes expired items lazily, often days later).
- ``create`` never overwrites; every later write is conditional on the item still
  existing (token writes also on the expected ``version``), so a write racing a
  sign-out can never bring the session back ("no resurrection").
- Only token writes change ``version``; recording activity (``touch``) does not, so a
  refresh in flight is never invalidated by a request that merely passed by.
- ``acquire_refresh_lease`` succeeds for one caller at a time across every replica:
  the lease is free (absent or past) and the version is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from authproxy.errors import AuthproxyError


class StoreError(AuthproxyError):
    """A store operation failed; subclasses say how."""


class StoreUnavailable(StoreError):
    """The store could not be reached or failed on its side (transient)."""


class VersionConflict(StoreError):
    """The item changed (or vanished) since it was read: re-read and decide again."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    key: str  # hash of the cookie's session id
    sub: str
    payload: bytes  # sealed: unreadable without the cookie's secret
    expires_at: int  # epoch seconds; the DynamoDB TTL attribute
    version: int
    created_at: int
    last_seen_at: int
    refresh_lease_until: int = 0


class SessionStore(Protocol):
    name: str  # "memory" | "dynamodb": the metrics' backend label

    async def get(self, key: str, now: int) -> SessionRecord | None: ...

    async def create(self, record: SessionRecord) -> None:
        """Store a new record (version 1); an existing key is a VersionConflict."""

    async def update(self, key: str, expected_version: int, payload: bytes) -> SessionRecord:
        """Write new sealed tokens, bump the version and end any refresh lease;
        VersionConflict if the item is gone or its version changed."""

    async def touch(self, key: str, last_seen_at: int) -> None:
        """Record activity (idle timeout) without changing the version, so it never
        races a refresh; VersionConflict if the item is gone."""

    async def acquire_refresh_lease(self, key: str, expected_version: int, now: int, until: int) -> bool:
        """Take the refresh lease until ``until``; False when someone else holds it or the item changed."""

    async def release_refresh_lease(self, key: str, until: int) -> None:
        """Give back a lease taken with ``until`` (after a failed refresh), if it is still ours."""

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...
