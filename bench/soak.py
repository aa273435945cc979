"""Soak: mixed traffic over two authproxy replicas sharing one session table.

    python bench/soak.py                 10 minutes (make soak)
    python bench/soak.py --minutes 2     a shorter check

What runs, all on 127.0.0.1 on free ports, stopped when the run ends:
- dynalite (DynamoDB-compatible, npm) holding the session table both replicas share;
- the oidc-provider peer, rotating refresh tokens on every use, access tokens of
  ``--access-ttl`` seconds (so sessions refresh, across replicas, all the time);
- the test upstream (echo, uploads, WebSocket echo);
- two ``authproxy run`` processes with the same configuration.

Virtual users (``--users``) each loop: sign in (the provider's login form), then for a
while browse the login route on either replica, upload bodies, open WebSockets and
exchange frames, then sign out; some sign out with a socket open and expect it closed
with 1008. Every answer is checked; anything unexpected is a failure, listed by kind.
Refresh-token reuse shows at the provider as a grant error: also a failure.

Memory: the replicas' RSS is sampled every few seconds; growth is the mean of the last
samples over the mean of those just after warm-up (the first fifth of the run, at least
30 s). The run passes with zero unexpected failures and growth under 5 %.

Results are appended to bench/RESULTS.md. Exit status 0 when the run passes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.support.dynalite import Dynalite  # noqa: E402
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, sign_in_at_provider  # noqa: E402
from tests.support.processes import ProxyProcess, UpstreamProcess, free_port  # noqa: E402

RSS_INTERVAL = 5.0
CACHE_TTL = 4.0  # store.cache.ttl: how long a sign-out stays unseen on the other replica
GROWTH_LIMIT = 0.05


@dataclass
class Tally:
    ok: collections.Counter[str] = field(default_factory=collections.Counter)
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def good(self, operation: str) -> None:
        self.ok[operation] += 1

    def bad(self, operation: str, detail: str) -> None:
        self.failed[operation] += 1
        self.examples.setdefault(operation, detail[:300])


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.tally = Tally()
        self.rss: list[tuple[float, list[int]]] = []  # (seconds since start, RSS bytes per replica)
        self.started = 0.0
        self.deadline = 0.0

    # --- the stack ----------------------------------------------------------------------

    def start(self) -> None:
        self.table = Dynalite()
        self.upstream = UpstreamProcess()
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        self.provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"],
                                     accessTokenTtl=self.args.access_ttl, rotateRefreshToken=True)
        config = {
            "public_url": public,
            "log": {"level": "warning"},
            "oidc": {"issuer": self.provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                     "scopes": ["openid", "email", "offline_access"], "authorize_params": {"prompt": "consent"}},
            "session": {"secrets": ["s" * 40], "refresh_before_expiry": f"{max(1, self.args.access_ttl // 3)}s"},
            "store": {"backend": "dynamodb", "cache": {"ttl": f"{CACHE_TTL}s"},
                      "dynamodb": {"table": "soak", "region": "eu-west-1", "endpoint_url": self.table.url,
                                   "create_table": True}},
            "routes": [
                {"name": "app", "match": {"path_prefix": "/app"}, "upstream": self.upstream.url, "strip_prefix": True,
                 "auth": "login", "max_body": "4MiB", "inject": {"X-User": "{sub}"}},
            ],
        }
        self.public = public
        self.replicas = [ProxyProcess(config, self.work, name="replica-0", port=port),
                         ProxyProcess(config, self.work, name="replica-1")]

    def stop(self) -> None:
        for process in (*getattr(self, "replicas", ()), getattr(self, "provider", None),
                        getattr(self, "upstream", None), getattr(self, "table", None)):
            if process is not None:
                process.stop()

    # --- one virtual user -------------------------------------------------------------------

    def replica(self) -> ProxyProcess:
        return random.choice(self.replicas)

    async def user(self, number: int) -> None:
        rng = random.Random(number)
        while time.monotonic() < self.deadline:
            name = f"user{number}-{rng.randrange(1000)}"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                             headers={"Accept": "text/html"},
                                             timeout=aiohttp.ClientTimeout(total=60)) as browser:
                if not await self.sign_in(browser, name):
                    continue
                # stay signed in across a few access-token lifetimes: refreshes, with rotation
                until = min(self.deadline, time.monotonic() + rng.uniform(1.5, 4) * self.args.access_ttl)
                while time.monotonic() < until:
                    action = rng.choices([self.browse, self.upload, self.websocket], weights=[6, 2, 1])[0]
                    await action(browser, rng)
                    await asyncio.sleep(rng.uniform(0.0, 0.3))  # think time
                if rng.random() < 0.2:
                    await self.sign_out_with_socket_open(browser)
                else:
                    await self.sign_out(browser)

    async def guarded(self, operation: str, step) -> bool:  # type: ignore[no-untyped-def]
        try:
            await step()
        except AssertionError as exc:
            self.tally.bad(operation, str(exc))
            return False
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.tally.bad(operation, f"{type(exc).__name__}: {exc}")
            return False
        self.tally.good(operation)
        return True

    async def sign_in(self, browser: aiohttp.ClientSession, name: str) -> bool:
        async def step() -> None:
            replica = self.replica()
            async with browser.get(replica.url + "/app/home", allow_redirects=False) as response:
                assert response.status == 302, f"protected page without a session: {response.status}"
                start = response.headers["Location"]
            async with browser.get(start, allow_redirects=False) as response:
                assert response.status == 302, f"/oauth2/start: {response.status}"
                authorize = response.headers["Location"]
            callback = await sign_in_at_provider(browser, authorize, name, self.public + "/oauth2/callback")
            async with browser.get(callback, allow_redirects=False) as response:
                assert response.status == 302, f"callback: {response.status} {(await response.text())[:200]}"
                assert response.headers["Location"] == "/app/home"

        return await self.guarded("sign_in", step)

    async def browse(self, browser: aiohttp.ClientSession, rng: random.Random) -> None:
        async def step() -> None:
            async with browser.get(self.replica().url + f"/app/page/{rng.randrange(100)}?q={rng.randrange(9)}",
                                   allow_redirects=False) as response:
                assert response.status == 200, f"browse: {response.status} {(await response.text())[:200]}"
                echo = await response.json()
                assert any(name == "X-User" for name, _ in echo["headers"]), "no identity header"

        await self.guarded("browse", step)

    async def upload(self, browser: aiohttp.ClientSession, rng: random.Random) -> None:
        size = rng.choice([0, 1, 1000, 64 * 1024, 700 * 1024, 3 * 1024 * 1024])

        async def body():  # type: ignore[no-untyped-def]
            remaining = size
            while remaining > 0:
                piece = min(remaining, 32 * 1024)
                yield b"u" * piece
                remaining -= piece

        async def step() -> None:
            async with browser.post(self.replica().url + "/app/upload", data=body(),
                                    allow_redirects=False) as response:
                assert response.status == 200, f"upload: {response.status}"
                assert (await response.json())["received"] == size, "upload: wrong size upstream"

        await self.guarded("upload", step)

    async def websocket(self, browser: aiohttp.ClientSession, rng: random.Random) -> None:
        async def step() -> None:
            async with browser.ws_connect(self.replica().ws_url + "/app/ws", headers={"Origin": self.public},
                                          autoclose=False) as ws:
                for index in range(rng.randint(1, 5)):
                    await ws.send_str(f"frame {index}")
                    assert await ws.receive_str(timeout=10) == f"frame {index}", "websocket echo"
                await ws.close()
                assert ws.close_code == 1000, f"websocket close code {ws.close_code}"

        await self.guarded("websocket", step)

    async def sign_out(self, browser: aiohttp.ClientSession) -> None:
        async def step() -> None:
            replica = self.replica()
            async with browser.get(replica.url + "/oauth2/sign_out", headers={"Sec-Fetch-Site": "same-origin"},
                                   allow_redirects=False) as response:
                assert response.status == 302, f"sign_out: {response.status}"
            async with browser.get(replica.url + "/app/after", allow_redirects=False) as response:
                assert response.status == 302, f"still signed in after sign-out: {response.status}"

        await self.guarded("sign_out", step)

    async def sign_out_with_socket_open(self, browser: aiohttp.ClientSession) -> None:
        async def step() -> None:
            replica = self.replica()
            async with browser.ws_connect(replica.ws_url + "/app/ws", autoclose=False) as ws:
                await ws.send_str("before")
                assert await ws.receive_str(timeout=10) == "before"
                async with browser.get(replica.url + "/oauth2/sign_out", headers={"Sec-Fetch-Site": "same-origin"},
                                       allow_redirects=False) as response:
                    assert response.status == 302, f"sign_out: {response.status}"
                async with asyncio.timeout(CACHE_TTL * 2 + 5):
                    message = await ws.receive()
                    while message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        message = await ws.receive()
                code = message.data if message.type is aiohttp.WSMsgType.CLOSE else ws.close_code
                assert code == 1008, f"socket after sign-out: {message.type} {code}"

        await self.guarded("sign_out_with_socket", step)

    # --- the run ----------------------------------------------------------------------------

    async def sample_rss(self) -> None:
        while time.monotonic() < self.deadline:
            self.rss.append((time.monotonic() - self.started, [rss_bytes(r.pid) for r in self.replicas]))
            await asyncio.sleep(RSS_INTERVAL)

    async def report_progress(self) -> None:
        while time.monotonic() < self.deadline:
            await asyncio.sleep(30)
            elapsed = time.monotonic() - self.started
            print(f"[{elapsed:5.0f} s] ok {dict(self.tally.ok)} failed {dict(self.tally.failed)}", flush=True)

    async def run(self) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + self.args.minutes * 60
        await asyncio.gather(self.sample_rss(), self.report_progress(),
                             *(self.user(number) for number in range(self.args.users)))

    def growth(self) -> tuple[list[float], list[float], list[float]]:
        """Per replica: RSS MiB after warm-up, at the end, and the growth between them."""
        duration = self.args.minutes * 60
        warm_up = max(30.0, duration / 5)
        window = max(2, int(20 / RSS_INTERVAL))
        after = [sample for at, sample in self.rss if at >= warm_up]
        if len(after) < 2:
            after = self.rss[len(self.rss) // 2:]
        first, last = after[:window], after[-window:]
        start = [sum(s[i] for s in first) / len(first) for i in range(len(self.replicas))]
        end = [sum(s[i] for s in last) / len(last) for i in range(len(self.replicas))]
        growth = [(e - s) / s if s else 0.0 for s, e in zip(start, end, strict=True)]
        return [s / 2**20 for s in start], [e / 2**20 for e in end], growth


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` and its children (the workers, when there are any)."""
    total = 0
    for candidate in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(child) for child in found]


def metric_sum(replicas: list[ProxyProcess], name: str, **labels: str) -> float:
    return sum(replica.metric(name, **labels) for replica in replicas)


def write_results(soak: Soak, started_at: datetime.datetime, passed: bool, figures: dict[str, object]) -> str:
    start_mib, end_mib, growth = soak.growth()
    operations = sorted(set(soak.tally.ok) | set(soak.tally.failed))
    lines = [
        "",
        f"## Soak: {started_at:%Y-%m-%d %H:%M} UTC, {soak.args.minutes:g} min, {'PASS' if passed else 'FAIL'}",
        "",
        "Appended by `bench/soak.py` (`make soak`). Two replicas sharing a dynalite table, the oidc-provider peer "
        f"rotating refresh tokens with {soak.args.access_ttl} s access tokens, {soak.args.users} virtual users "
        f"(sign in, browse, upload up to 3 MiB, WebSockets, sign out), store.cache.ttl {CACHE_TTL:g} s; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        "| operation | ok | unexpected failures |",
        "|---|---|---|",
        *(f"| {op} | {soak.tally.ok[op]} | {soak.tally.failed[op]} |" for op in operations),
        "",
        f"- refreshes: {figures['refreshes']:.0f} by the replicas, {figures['refresh_grants']} refresh grants at the "
        f"provider, {figures['grant_errors']} grant errors (a reused rotated token would be one)",
        f"- sign-ins {figures['logins']:.0f}, sign-outs {figures['logouts']:.0f}, upstream errors "
        f"{figures['upstream_errors']:.0f}, sockets closed at sign-out {soak.tally.ok['sign_out_with_socket']}",
        "- RSS per replica after warm-up -> end: " + ", ".join(
            f"{s:.1f} -> {e:.1f} MiB ({g * 100:+.1f} %)" for s, e, g in zip(start_mib, end_mib, growth, strict=True))
        + f" (limit +{GROWTH_LIMIT * 100:.0f} %)",
    ]
    if soak.tally.examples:
        lines.append("- first failure of each kind: " + "; ".join(
            f"{op}: {detail}" for op, detail in sorted(soak.tally.examples.items())))
    text = "\n".join(lines) + "\n"
    with open(HERE / "RESULTS.md", "a", encoding="utf-8") as results:
        results.write(text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the traffic runs (default 10)")
    parser.add_argument("--users", type=int, default=6, help="concurrent virtual users (default 6)")
    parser.add_argument("--access-ttl", type=int, default=15, help="access token lifetime in seconds (default 15)")
    args = parser.parse_args()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="authproxy-soak-") as work:
        soak = Soak(args, Path(work))
        try:
            soak.start()
            print(f"soak: {args.minutes:g} min, {args.users} users, replicas {[r.url for r in soak.replicas]}",
                  flush=True)
            asyncio.run(soak.run())
            figures = {
                "refreshes": metric_sum(soak.replicas, "authproxy_token_refresh_total", result="success"),
                "refresh_grants": soak.provider.grants("refresh_token"),
                "grant_errors": len([e for e in soak.provider.events if e.startswith("grant.error")]),
                "logins": metric_sum(soak.replicas, "authproxy_logins_total", result="success"),
                "logouts": metric_sum(soak.replicas, "authproxy_logouts_total"),
                "upstream_errors": metric_sum(soak.replicas, "authproxy_upstream_errors_total"),
            }
            for replica in soak.replicas:
                tracebacks = replica.logs().count("Traceback")
                if tracebacks:
                    soak.tally.bad("logs", f"{tracebacks} tracebacks in {replica.log_path.name}")
            if figures["grant_errors"]:
                soak.tally.bad("refresh", f"{figures['grant_errors']} grant errors at the provider")
        finally:
            soak.stop()
        _, _, growth = soak.growth()
        passed = not soak.tally.failed and all(g < GROWTH_LIMIT for g in growth) and sum(soak.tally.ok.values()) > 0
        print(write_results(soak, started_at, passed, figures), flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
