"""The session store interface, and the record it keeps.

Rules every backend follows (the contract suite in tests/contract checks them):

- ``get`` is strongly consistent and treats an item past ``expires_at`` as absent
  (DynamoDB deletes expired items lazily, often days later).
- ``create`` never overwrites; every later write is conditional on the item still
  existing (token writes also on the expected ``version``), so a write racing a
  sign-out can never bring the session back ("no resurrection").
- Only token writes change ``version``; recording activity (``touch``) does not, so a
  refresh in flight is never invalidated by a request that merely passed by.
- The refresh lease is fenced: ``acquire_refresh_lease`` succeeds for one caller at a
  time across every replica (lease free or lapsed, version unchanged) and names an
  ``owner`` (a random token); ``renew`` and ``release`` act only for that owner at that
  version; a token write (``update``) ends whichever lease is in place.
- Every conditional write carries a write id (``create``, ``update``) or the lease
  owner, so a write whose answer was lost and that is sent again recognises its own
  earlier success instead of reporting a conflict (see store/dynamodb.py).
- ``write_budget``: the longest one store call may take, all of the backend's own
  attempts included. The refresh lease is sized from it (session/refresh.py).
- Back-channel logout (OpenID Connect Back-Channel Logout 1.0, 2.7): a session created
  with ``sid_hash`` / ``sub_hash`` is found by them (``keys_with_sid``, ``keys_with_sub``);
  the raw ``sid`` and issuer-qualified ``sub`` never reach the store (oidc/logout.py hashes
  them). Lookups are for deletion only and may trail a just-created session by the index's
  replication lag (DynamoDB's global secondary indexes are eventually consistent).
- Logout tokens (2.6 step 8), in the same shared store, so a replay to another replica fails
  too: ``logout_token_seen`` is a strongly consistent read of whether a token's ``jti`` is
  recorded (and not lapsed); ``remember_logout_token`` records it until the token expires,
  with a conditional write that says whether it was new. The endpoint reads, ends the
  sessions, and records last, so a failure never leaves a token recorded whose logout was
  not carried out (web/backchannel.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from authproxy.errors import RETRY_AFTER, AuthproxyError


class StoreError(AuthproxyError):
    """A store operation failed; subclasses say how."""


class StoreUnavailable(StoreError):
    """The store could not be reached or failed on its side (transient). Never a silent
    sign-out: the session may be fine, the store is not answering."""

    status = 503
    error = "session_store_unavailable"
    message = "sessions cannot be checked right now; try again"
    retry_after = RETRY_AFTER


class StoreRejected(StoreError):
    """The store refused the request for good (validation, missing table, access denied,
    item too large): retrying cannot help, so "try again" would be a lie; an operator has to
    act. The cause is logged, never shown."""

    status = 500
    error = "session_store_rejected"
    message = "the session store refused the request; the operators have to fix its setup"


class RecordTooLarge(StoreRejected):
    """The session does not fit in one item (DynamoDB: 400 KB, names and values included):
    usually an ID or access token carrying very many groups or claims."""

    def __init__(self, size: int, limit: int):
        self.size = size
        self.limit = limit
        super().__init__(f"session item of about {size} bytes is over the store's limit of {limit} bytes")


class VersionConflict(StoreError):
    """The item changed (or vanished) since it was read: re-read and decide again.
    ``current``: the item as the store holds it, when the store said (None: gone or unknown)."""

    def __init__(self, message: str, current: SessionRecord | None = None):
        self.current = current
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    key: str  # hash of the cookie's session id
    sub: str
    payload: bytes  # sealed: unreadable without the cookie's secret
    expires_at: int  # epoch seconds; the DynamoDB TTL attribute
    version: int
    created_at: int
    last_seen_at: int
    refresh_lease_until: int = 0  # epoch seconds (the taker's clock); 0: no lease
    lease_owner: str = ""  # random token of the lease's holder; "" with no lease
    write_id: str = ""  # id of the last create/update that wrote this item
    # Set once, at creation (oidc/logout.py): SHA-256 of the issuer and the ID token's sid /
    # sub, for back-channel logout. "" on sessions created before this release (or without sid).
    sid_hash: str = ""
    sub_hash: str = ""


# DynamoDB's item limit: 400 KB, attribute names and values counted (Developer Guide,
# "Service, account, and table quotas": Item size). Every backend enforces it, so a
# session too large for production fails in development the same way, at sign-in.
MAX_ITEM_BYTES = 400_000  # "400 KB"; the service takes a little more (about 409,600), moto 405,000
_ATTRIBUTE_NAMES = ("pk", "sub", "payload", "expires_at", "version", "created_at", "last_seen_at",
                    "refresh_lease_until", "lease_owner", "write_id", "sid_hash", "sub_hash")
_NUMBER_BYTES = 21  # the most a DynamoDB number can take
# key (sha256 hex), sub (OIDC: at most 255 ASCII), lease owner, write id, sid and sub hashes (sha256 hex)
_SMALL_STRINGS = 64 + 255 + 64 + 32 + 64 + 64


def item_size(payload: bytes, sub: str = "") -> int:
    """An upper bound of the item's size as DynamoDB counts it, for this payload."""
    names = sum(len(name) for name in _ATTRIBUTE_NAMES)
    return names + len(payload) + 5 * _NUMBER_BYTES + _SMALL_STRINGS + max(0, len(sub.encode()) - 255)


def check_item_size(payload: bytes, sub: str = "", limit: int = MAX_ITEM_BYTES) -> None:
    """Raise ``RecordTooLarge`` before a write the store would refuse anyway."""
    size = item_size(payload, sub)
    if size > limit:
        raise RecordTooLarge(size, limit)


@dataclass(frozen=True, slots=True)
class LeaseResult:
    """What an acquire found: ``acquired``, or the item as it was (the holder's lease and
    version) when it could not be taken; ``current`` None: the session is gone."""

    acquired: bool
    current: SessionRecord | None = None
    previous_owner: str = ""  # acquired: whose lapsed lease it replaced (a back-off marker says how many failures)


class SessionStore(Protocol):
    name: str  # "memory" | "dynamodb": the metrics' backend label
    write_budget: float  # seconds: the longest one call may take, retries included

    async def get(self, key: str, now: int) -> SessionRecord | None: ...

    async def create(self, record: SessionRecord, write_id: str) -> None:
        """Store a new record (version 1); an existing key is a VersionConflict,
        unless the item there is this very write's (``write_id``)."""

    async def update(self, key: str, expected_version: int, payload: bytes, write_id: str) -> SessionRecord:
        """Write new sealed tokens, bump the version and end any refresh lease;
        VersionConflict if the item is gone or its version changed (``current`` says how)."""

    async def touch(self, key: str, last_seen_at: int) -> None:
        """Record activity (idle timeout) without changing the version, so it never
        races a refresh; VersionConflict if the item is gone."""

    async def acquire_refresh_lease(
        self, key: str, expected_version: int, now: int, until: int, owner: str
    ) -> LeaseResult:
        """Take the refresh lease for ``owner`` until ``until``: only when no lease is in
        place or it lapsed before ``now``, and the version is ``expected_version``."""

    async def renew_refresh_lease(self, key: str, version: int, owner: str, until: int,
                                  new_owner: str | None = None) -> bool:
        """Move our lease's end to ``until`` (and name it ``new_owner``: a back-off marker);
        False when it is no longer ours at ``version``."""

    async def release_refresh_lease(self, key: str, version: int, owner: str) -> None:
        """Give back our lease (after a failed refresh), if it is still ours at ``version``."""

    async def delete(self, key: str) -> SessionRecord | None:
        """Remove the item; returns it as it was (None when absent or unknown)."""

    async def keys_with_sid(self, sid_hash: str) -> list[str]:
        """Keys of the sessions created with ``sid_hash``, expired ones included: they are
        looked up to be deleted."""

    async def keys_with_sub(self, sub_hash: str) -> list[str]:
        """Keys of every session created with ``sub_hash``."""

    async def logout_token_seen(self, token_hash: str, now: int) -> bool:
        """Whether a logout token (by a hash of its issuer and jti) is recorded and its record
        has not lapsed (``until`` >= ``now``); strongly consistent, changes nothing."""

    async def remember_logout_token(self, token_hash: str, until: int, now: int) -> bool:
        """Record a logout token until ``until``; True when it was not already recorded (or
        its record lapsed before ``now``), False: someone recorded it first."""

    async def close(self) -> None: ...
