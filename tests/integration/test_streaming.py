"""256 MiB each way through a real authproxy process with flat memory."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from tests.support.processes import ProxyProcess

SIZE = 256 * 1024 * 1024
CHUNK = b"s" * (1 << 20)
# A proxy that buffered a body would grow by the body's size; streaming stays within a few buffers.
ALLOWED_GROWTH = 48 * 1024 * 1024


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    server = ProxyProcess(
        {"routes": [{"name": "bulk", "upstream": upstream.url, "max_body": 0, "auth": "public", "timeouts": {"read": "120s"}}]},
        tmp_path_factory.mktemp("streaming"),
    )
    yield server
    server.stop()


async def warm_up(proxy):
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.get(proxy.url + "/download/100000") as response:
                await response.read()


@pytest.mark.timeout(180)
async def test_upload_256_mib_streams(proxy):
    await warm_up(proxy)
    baseline = proxy.peak_rss_bytes()
    digest = hashlib.sha256()

    async def body():
        for _ in range(SIZE // len(CHUNK)):
            digest.update(CHUNK)
            yield CHUNK

    async with aiohttp.ClientSession() as session:
        async with session.post(proxy.url + "/upload", data=body(), headers={"Content-Length": str(SIZE)}) as response:
            result = await response.json()
    assert result["received"] == SIZE
    assert result["sha256"] == digest.hexdigest()
    growth = proxy.peak_rss_bytes() - baseline
    print(f"peak RSS {proxy.peak_rss_bytes() / 2**20:.0f} MiB, grew by {growth / 2**20:.1f} MiB")
    assert growth < ALLOWED_GROWTH, f"peak RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("chunked", [False, True])
async def test_download_256_mib_streams(proxy, chunked):
    await warm_up(proxy)
    baseline = proxy.peak_rss_bytes()
    received = 0
    url = proxy.url + f"/download/{SIZE}" + ("?chunked=1" if chunked else "")
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 200
            async for chunk in response.content.iter_any():
                received += len(chunk)
    assert received == SIZE
    growth = proxy.peak_rss_bytes() - baseline
    print(f"peak RSS {proxy.peak_rss_bytes() / 2**20:.0f} MiB, grew by {growth / 2**20:.1f} MiB")
    assert growth < ALLOWED_GROWTH, f"peak RSS grew by {growth / 2**20:.0f} MiB"
