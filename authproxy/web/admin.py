"""The admin listener: /healthz, /readyz, /metrics on their own port.

Readiness reflects this process only. A dependency shared by every replica (the
session store, the identity provider once loaded) must not pull every replica out
of service at once; its outage shows in metrics instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from authproxy import metrics


class Readiness:
    """Named start-up conditions; ready when none is pending."""

    def __init__(self) -> None:
        self._pending: dict[str, str] = {"startup": "starting"}
        self._ready = asyncio.Event()
        metrics.READY.set(0)

    def pending(self, name: str, reason: str) -> None:
        self._pending[name] = reason
        self._ready.clear()
        metrics.READY.set(0)

    def done(self, name: str) -> None:
        self._pending.pop(name, None)
        metrics.READY.set(0 if self._pending else 1)
        if not self._pending:
            self._ready.set()

    async def wait(self) -> None:
        """Until nothing is pending (start-up dependencies such as the provider loaded)."""
        await self._ready.wait()

    @property
    def ready(self) -> bool:
        return not self._pending

    def reasons(self) -> dict[str, str]:
        return dict(self._pending)


def admin_app(
    ready: Callable[[], tuple[bool, dict[str, object]]],
    exposition: Callable[[], bytes] | None = None,
) -> web.Application:
    """``ready`` returns (is ready, JSON detail); ``exposition`` renders /metrics."""
    render = exposition or metrics.exposition

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        is_ready, detail = ready()
        body = {"status": "ready" if is_ready else "not_ready", **detail}
        return web.Response(
            status=200 if is_ready else 503,
            text=json.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def metrics_endpoint(_: web.Request) -> web.Response:
        response = web.Response(body=render(), headers={"Cache-Control": "no-store"})
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


def readiness_probe(readiness: Readiness) -> Callable[[], tuple[bool, dict[str, object]]]:
    def probe() -> tuple[bool, dict[str, object]]:
        reasons = readiness.reasons()
        return (not reasons, {"pending": reasons} if reasons else {})

    return probe


__all__ = ["Readiness", "admin_app", "readiness_probe"]
