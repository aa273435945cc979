"""Hot reload through a real process: SIGHUP and file watching, under load, with an
invalid file refused, and in-flight requests finishing under the rules they started with."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import aiohttp
import pytest
import yaml

from tests.support.processes import ProxyProcess


def routes(upstream, *extra):
    return [{"name": "main", "match": {"path_prefix": "/"}, "upstream": upstream.url, "auth": "public"}, *extra]


def rewrite(proxy, settings):
    """Replace the config file the way editors and ConfigMaps do: write aside, rename over."""
    config = yaml.safe_load(proxy.config_path.read_text())
    config.update(settings)
    aside = proxy.config_path.with_suffix(".new")
    aside.write_text(yaml.safe_dump(config, sort_keys=False))
    aside.rename(proxy.config_path)


async def wait_for(predicate, timeout=10.0):
    """Poll ``predicate`` (a coroutine function, or a plain function) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if await result if asyncio.iscoroutine(result) else result:
            return True
        await asyncio.sleep(0.05)
    return False


async def status_of(http, url):
    async with http.get(url) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize("workers", [1, 2])
async def test_reload_under_load_with_zero_failed_requests(upstream, tmp_path, workers):
    upstream_route = {"name": "orders", "match": {"path_prefix": "/orders"}, "upstream": upstream.url + "/v2",
                      "auth": "public", "strip_prefix": True}
    proxy = ProxyProcess({"workers": workers, "routes": routes(upstream)}, tmp_path)
    try:
        statuses: list[int] = []
        stop = asyncio.Event()

        async def load():
            async with aiohttp.ClientSession() as http:
                for _ in range(5000):  # bounded in count and, through stop, in time
                    if stop.is_set():
                        return
                    try:
                        statuses.append(await status_of(http, proxy.url + "/orders/x"))
                    except aiohttp.ClientError:
                        statuses.append(-1)

        loaders = [asyncio.create_task(load()) for _ in range(4)]
        assert await wait_for(lambda: len(statuses) >= 20)  # the load runs before the reload
        rewrite(proxy, {"routes": [upstream_route, *routes(upstream)]})
        proxy.signal(signal.SIGHUP)
        async with aiohttp.ClientSession() as http:

            async def orders_moved():
                async with http.get(proxy.url + "/orders/x") as response:
                    return (await response.json())["path"] == "/v2/x"

            assert await wait_for(orders_moved), proxy.logs()[-2000:]
            # an invalid file is refused; the last good rules keep serving
            proxy.config_path.write_text(proxy.config_path.read_text().replace("auth: public", "auth: sometimes", 1))
            proxy.signal(signal.SIGHUP)

            def refused():
                return any(record.get("event") == "config_reload_failed" for record in proxy.log_records())

            assert await wait_for(refused), proxy.logs()[-2000:]
            assert await orders_moved()
            stop.set()
            await asyncio.gather(*loaders)
            assert len(statuses) > 50 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
            # worker metrics reach the supervisor once a second: wait for them, then check exactly
            assert await wait_for(lambda: proxy.metric("authproxy_config_reloads_total", result="success") >= workers)
            assert proxy.metric("authproxy_config_reloads_total", result="success") == workers  # each worker applied it
            assert proxy.metric("authproxy_config_reloads_total", result="failure") == 1  # refused once, before any worker
            failures = [record for record in proxy.log_records() if record.get("event") == "config_reload_failed"]
            assert failures and any("sometimes" in error for error in failures[0]["errors"])
            if workers > 1:
                # a worker that dies now restarts with the last good rules, not the broken file
                def workers_now():
                    return {int(pid) for pid in subprocess.run(["pgrep", "-P", str(proxy.pid)], capture_output=True,
                                                               text=True).stdout.split()}

                worker = min(workers_now())
                os.kill(worker, signal.SIGKILL)
                # the supervisor restarts it (after a backoff of 0.5 s): a new pid, and then ready
                assert await wait_for(lambda: worker not in workers_now() and len(workers_now()) == workers, 20)

                async def ready():
                    async with http.get(proxy.admin_url + "/readyz") as response:
                        return response.status == 200

                assert await wait_for(ready, 20), proxy.logs()[-2000:]
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
                    for _ in range(20):  # new connections, spread over both workers
                        async with fresh.get(proxy.url + "/orders/x") as response:
                            assert (await response.json())["path"] == "/v2/x"
    finally:
        assert proxy.stop() == 0


async def test_in_flight_requests_finish_under_their_rules_and_watch_reloads(upstream, tmp_path):
    proxy = ProxyProcess({"reload": "watch", "routes": routes(upstream)}, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            slow = asyncio.create_task(status_of(http, proxy.url + "/slow/1500"))
            assert await wait_for(lambda: proxy.metric("authproxy_requests_in_flight") >= 1)  # the request is in
            # the file changes while the request is in flight: now "/" is no longer routed (404)
            rewrite(proxy, {"routes": [{"name": "only", "match": {"path_prefix": "/only"}, "upstream": upstream.url,
                                        "auth": "public"}]})

            async def gone():
                return await status_of(http, proxy.url + "/x") == 404

            assert await wait_for(gone), proxy.logs()[-2000:]  # picked up by the watch, no signal sent
            assert await slow == 200  # started under the old rules, finished under them
            assert await status_of(http, proxy.url + "/only/x") == 200
            # a change that needs a restart is refused and named
            rewrite(proxy, {"listen": "127.0.0.1:1"})
            assert await wait_for(lambda: _logged(proxy, "listen changed"))
            assert await status_of(http, proxy.url + "/only/x") == 200
    finally:
        assert proxy.stop() == 0


async def _logged(proxy, words):
    return any(words in " ".join(record.get("errors", [])) for record in proxy.log_records())
