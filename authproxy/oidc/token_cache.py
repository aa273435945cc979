"""Bearer tokens already verified, so a token's signature is checked once, not per request.

Keyed by the SHA-256 of the token, and the token is kept nowhere in an entry: a dump of the
cache (or a core file) holds no credential, and a hit still proves the caller holds the exact
bytes that were verified (the caller puts the presented token back into what it answers). Bounded: least recently used entries go first once ``max_entries`` are held.

An entry answers only while each of these holds, else it is dropped and the token is
verified in full again:

- the clock is before its deadline: the token's ``exp`` plus the rules' leeway (RFC 7519
  4.1.4), and at most ``max_age`` after it was verified, so a cached verdict is never older
  than that whatever the token says;
- the key that verified it is still published under its kid with the same thumbprint
  (``Verified.key_still_published``): a key the issuer rotates out stops vouching for its
  tokens at the first JWKS refetch that misses it (RFC 8725 3.8: the keys must be the
  issuer's, now, not once);
- the caller asks under the same rules: the entry remembers the issuer (its ``TokenRules``)
  that verified it, and the caller compares it with the issuer its route would choose for
  the token's ``iss`` (``Entry.issuer``). A token's ``iss`` selects one issuer per
  configuration, so one entry per token hash is enough, and a hit needs no payload parse.

Claims that depend on the clock still hold at every hit: ``exp`` through the deadline, and
``nbf`` and ``iat`` (RFC 7519 4.1.5, 4.1.6) through ``Entry.earliest``, the first moment
both pass, worked out once from the claims: a clock stepped back before it is refused by the
caller with the verifier's own reason (``verify.check_times``). The fixed checks (signature,
``iss``, ``aud``, ``client_id``, ``typ``, ``token_use``) are what the cache saves.

Pure: the clock comes in; used from the event loop only.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from authproxy import metrics
from authproxy.oidc.jwks import Verified


@dataclass(frozen=True, slots=True)
class Entry:
    """One verified token: what the caller built from it once (``value``), and what a hit must still check."""

    value: Any  # the caller's, built once (the gate keeps the Identity without its token)
    issuer: object  # the issuer whose rules verified the token (compared by identity)
    iss: str  # the token's iss, to find the issuer the caller's route would choose
    verified: Verified
    deadline: float  # exp + leeway, and at most max_age after verification
    earliest: float  # before this, nbf or iat is in the future (beyond the leeway)


def token_key(token: str) -> bytes:
    """What the cache is keyed by: the token's SHA-256 (the token itself is never kept)."""
    return hashlib.sha256(token.encode()).digest()


class VerifiedTokenCache:
    """Verified tokens by ``token_key``; bounded LRU, see the module docstring."""

    __slots__ = ("max_entries", "max_age", "_entries", "_stats")

    def __init__(self, max_entries: int, max_age: float, stats: metrics.VerifiedTokenStats | None = None):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1 (leave the cache out to turn it off)")
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._stats = stats if stats is not None else metrics.VerifiedTokenStats()
        self._stats.entries = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> Entry | None:
        """The entry for ``key`` when it may still answer at ``now`` (its deadline not reached,
        its key still published), else None (a stale entry is dropped)."""
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            return None
        if now >= entry.deadline or not entry.verified.key_still_published():
            del entries[key]
            self._stats.entries = len(entries)
            return None
        entries.move_to_end(key)
        return entry

    def put(self, key: bytes, value: Any, issuer: object, iss: str, verified: Verified, leeway: float, now: float) -> None:
        """Remember a token ``issuer``'s rules just accepted at ``now``."""
        expires = _finite(verified.claims.get("exp"))
        if expires is None:
            return  # verify_token requires a finite numeric exp; nothing to bound an entry by otherwise
        deadline = min(expires + leeway, now + self.max_age)
        if not deadline > now:  # also false for a NaN max_age or leeway: never kept without a deadline
            return
        starts = []
        for name in ("nbf", "iat"):
            claim = verified.claims.get(name)
            if claim is not None:
                start = _finite(claim)
                if start is None:
                    return  # verify_token refuses a malformed nbf or iat: nothing such is answered from here
                starts.append(start)
        earliest = max(starts) - leeway if starts else float("-inf")
        entries = self._entries
        entries[key] = Entry(value, issuer, iss, verified, deadline, earliest)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        self._stats.entries = len(entries)

    def discard(self, key: bytes) -> None:
        if self._entries.pop(key, None) is not None:
            self._stats.entries = len(self._entries)

    def hit(self) -> None:
        self._stats.hits += 1

    def miss(self) -> None:
        self._stats.misses += 1


def _finite(value: object) -> float | None:
    """A NumericDate claim as a finite float, else None (NaN, Infinity, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
