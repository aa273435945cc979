"""Method-override headers (hardening item 5): stripped unless the route allows them, so a
POST-only public route cannot be used as a DELETE by a framework that honours them."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.processes import ProxyProcess

OVERRIDES = {"X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "DELETE", "X_Method_Override": "DELETE",
             "x-method-override": "DELETE"}


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    process = ProxyProcess({"routes": [
        {"name": "posts", "match": {"path_prefix": "/posts", "methods": ["POST"]}, "upstream": upstream.url,
         "auth": "public"},
        {"name": "legacy", "match": {"path_prefix": "/legacy", "methods": ["POST"]}, "upstream": upstream.url,
         "auth": "public", "allow_method_override": True},
    ]}, tmp_path_factory.mktemp("override"))
    yield process
    process.stop()


async def received(proxy, path):
    async with aiohttp.ClientSession() as session:
        async with session.post(proxy.url + path, data=b"x", headers=OVERRIDES) as response:
            assert response.status == 200
            return {name.lower() for name, _ in (await response.json())["headers"]}


async def test_stripped_by_default(proxy):
    assert not received_overrides(await received(proxy, "/posts/1"))


async def test_passed_where_the_route_allows_them(proxy):
    # the "_" spelling never passes (no header with "_" does), the others do
    assert received_overrides(await received(proxy, "/legacy/1")) == {"x-http-method-override", "x-http-method",
                                                                      "x-method-override"}


def received_overrides(names):
    return names & {"x-http-method-override", "x-http-method", "x-method-override", "x_method_override"}
