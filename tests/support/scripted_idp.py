"""A scripted identity provider and a fake clock for refresh tests without a network.

``ScriptedProvider`` rotates refresh tokens on every use with reuse detection, the way
oidc-provider (``rotateRefreshToken``) and Cognito (rotation, grace period 0) do: a
refresh token that was already redeemed is refused with invalid_grant and revokes the
whole grant. ``FakeClock`` is one clock for wall time and monotonic time, and its
``sleep`` moves it forward, so retry loops run at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from authproxy.oidc.client import IdpRejected, IdpUnavailable, TokenResponse


class FakeClock:
    """Wall and monotonic time moved only by the test. ``sleep`` waits until the test has
    moved the clock past its end (``advance``/``run``), so background retries never race."""

    def __init__(self, wall: float):
        self.offset = wall - 1000.0  # wall = monotonic + offset
        self.monotonic_now = 1000.0
        self._timers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.monotonic_now

    def wall(self) -> float:
        return self.monotonic_now + self.offset

    def skewed(self, seconds: float) -> Callable[[], float]:
        """A wall clock ``seconds`` ahead of this one (another replica's)."""
        return lambda: self.wall() + seconds

    def advance(self, seconds: float) -> None:
        self.monotonic_now += seconds
        due = [timer for timer in self._timers if timer[0] <= self.monotonic_now]
        self._timers = [timer for timer in self._timers if timer[0] > self.monotonic_now]
        for _, future in due:
            if not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        self._timers.append((self.monotonic_now + seconds, future))
        await future

    async def run(self, seconds: float, step: float = 0.1) -> None:
        """Let ``seconds`` pass in steps, letting every task run after each."""
        passed = 0.0
        while passed < seconds:
            self.advance(step)
            passed += step
            await settle()

    async def drive(self, awaitable, step: float = 0.1, limit: float = 3600.0):
        """Await ``awaitable`` while the clock moves on in steps (it may sleep on this clock)."""
        task = asyncio.ensure_future(awaitable)
        passed = 0.0
        await settle()
        while not task.done():
            if passed > limit:
                task.cancel()
                raise AssertionError(f"still waiting after {limit} fake seconds")
            self.advance(step)
            passed += step
            await settle()
        return task.result()


async def settle() -> None:
    """Let every ready task run until none is left (bounded)."""
    for _ in range(50):
        await asyncio.sleep(0)


class ScriptedProvider:
    """Refresh grants against one grant whose live refresh token is ``live``.

    ``outcome``: "ok" | "down" (IdpUnavailable) | "rejected" (invalid_request) | "invalid_grant".
    ``id_tokens``: whether a refresh returns a new ID token ("IT-n").
    ``during``: awaited inside each refresh grant (another replica acting meanwhile).
    """

    def __init__(self, *, rotate: bool = True, id_tokens: bool = False, expires_in: int = 3600):
        self.rotate = rotate
        self.id_tokens = id_tokens
        self.expires_in = expires_in
        self.outcome = "ok"
        self.live = "RT-1"
        self.redeemed: set[str] = set()
        self.grants = 0
        self.attempts = 0  # every refresh grant asked for, whatever the answer
        self.invalid_grants = 0
        self.revoked: list[str] = []
        self.grant_revoked = False
        self.during: Callable[[], Awaitable[None]] | None = None

    async def refresh(self, refresh_token: str) -> TokenResponse:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.during is not None:
            during, self.during = self.during, None
            await during()
        if self.outcome == "down":
            raise IdpUnavailable("token", "token: HTTP 503")
        if self.outcome == "rejected":
            raise IdpRejected("token", "invalid_request", 400)
        if self.outcome == "invalid_grant":
            self.invalid_grants += 1
            raise IdpRejected("token", "invalid_grant", 400)
        if self.grant_revoked or refresh_token != self.live:
            self.invalid_grants += 1
            if refresh_token in self.redeemed:
                self.grant_revoked = True  # reuse detected: the whole grant dies (RFC 9700 4.14.2)
            raise IdpRejected("token", "invalid_grant", 400)
        self.grants += 1
        n = self.grants + 1
        if self.rotate:
            self.redeemed.add(refresh_token)
            self.live = f"RT-{n}"
        return TokenResponse(access_token=f"AT-{n}", id_token=f"IT-{n}" if self.id_tokens else None,
                             refresh_token=self.live if self.rotate else None, expires_in=self.expires_in,
                             token_type="Bearer", scope=None)

    async def revoke(self, token: str, hint: str = "refresh_token") -> None:
        self.revoked.append(token)
        if token == self.live:
            self.grant_revoked = True
