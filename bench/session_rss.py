"""RSS of one worker holding 10,000 cached sessions (issue 15: <= 100 MiB per worker).

    python bench/session_rss.py [--sessions 10000]          (about 1-2 minutes)

One authproxy (``workers: 1``, the bench's config: dynalite store, session cache 30 s, the
injecting route) after a real sign-in at the test oidc-provider. That session is read back
from the store and copied into ``--sessions`` more, each with its own ticket and access token
(the same sizes: tokens and claims of a real sign-in), sealed with authproxy's own code
(AES-256-GCM under the session secret) into the same table. Each is then requested once on
the injecting route, so the worker decrypts it into its session cache and keeps its rendered
header block. Printed: the worker's VmRSS and VmHWM after warm-up with one session, after all
of them, the growth per 1,000 sessions and the session cache's own estimate of its bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stack import Stack  # noqa: E402

LIMIT_MIB = 100


def memory(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values


async def copies(config_path: Path, cookie: str, count: int) -> list[str]:
    """``count`` sealed sessions in the store, copied from the signed-in one; their Cookie headers."""
    from authproxy.config import load_config
    from authproxy.session.cache import SessionCache
    from authproxy.session.cookies import SessionTicket
    from authproxy.session.crypto import SecretBox
    from authproxy.session.store import Sessions
    from authproxy.store.factory import open_store

    import os

    from tests.support.processes import child_env

    os.environ.update({k: v for k, v in child_env().items() if k.startswith("AWS_")})  # dynalite takes any
    config = load_config(str(config_path))
    secrets = [secret.get_secret_value() for secret in config.session.secrets]
    store = await open_store(config.store)
    sessions = Sessions(store, SecretBox(secrets, b"authproxy session"), SessionCache(10, 60.0), 86400)
    name, _, value = cookie.partition("=")
    ticket = SessionTicket.parse(value)
    assert ticket is not None, "no session ticket in the sign-in's cookie"
    found = await sessions.load(ticket, int(time.time()))
    assert found is not None, "the signed-in session is not in the store"
    original, _ = found
    cookies: list[str] = []
    limit = asyncio.Semaphore(32)

    async def one(n: int) -> None:
        async with limit:
            new = SessionTicket.new()
            token = original.access_token[: -8] + f"{n:08d}"  # one's own token, the same size
            await sessions.create(new, dataclasses.replace(original, access_token=token))
            cookies.append(f"{name}={new.encode()}")

    await asyncio.gather(*(one(n) for n in range(count)))
    await store.close()
    return cookies


async def visit(url: str, cookies: list[str]) -> int:
    ok = 0
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as http:
        async def one(cookie: str) -> None:
            nonlocal ok
            async with limit, http.get(url, headers={"Cookie": cookie}, allow_redirects=False) as response:
                await response.read()
                ok += response.status == 200

        await asyncio.gather(*(one(cookie) for cookie in cookies))
    return ok


def measure(sessions: int) -> tuple[str, bool]:
    """One line saying what a worker's memory did with ``sessions`` cached sessions, and
    whether its peak stayed within ``LIMIT_MIB``."""
    stack = Stack(Path(tempfile.mkdtemp(prefix="authproxy-rss-")), [1], want_apache=False, want_cold=False)
    try:
        stack.start()
        proxy = stack.proxies[1]
        url = proxy.url + "/inject/bench"
        asyncio.run(visit(url, [stack.session_cookie] * 200))  # warm-up: one session, pools, code paths
        before = memory(proxy.pid)
        cookies = asyncio.run(copies(proxy.config_path, stack.session_cookie, sessions))
        started = time.monotonic()
        ok = asyncio.run(visit(url, cookies))
        after = memory(proxy.pid)
        cached = proxy.metric("authproxy_session_cache_entries")
        cache_bytes = proxy.metric("authproxy_session_cache_bytes")
    finally:
        stack.stop()
    growth = (after["VmRSS"] - before["VmRSS"]) / sessions * 1000
    within = after["VmHWM"] <= LIMIT_MIB
    line = (f"worker RSS (1 worker, injecting route): one session {before['VmRSS']:.1f} MiB (peak {before['VmHWM']:.1f}); "
            f"{sessions} sessions {after['VmRSS']:.1f} MiB (peak {after['VmHWM']:.1f}); {growth:.2f} MiB per 1,000 "
            f"sessions; {len(cookies)} requested, {ok} answered 200 in {time.monotonic() - started:.0f} s, {cached:.0f} "
            f"cached, the cache's own estimate {cache_bytes / 1024**2:.1f} MiB; target <= {LIMIT_MIB} MiB: "
            + ("met" if within else "not met"))
    return line, within


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000)
    args = parser.parse_args()
    line, within = measure(args.sessions)
    print(line)
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
