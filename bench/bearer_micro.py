"""The bearer check's own cost, in-process: ``Gate._bearer`` on a cache hit against a full
verification (cache off), and the pieces of a miss.

    python bench/bearer_micro.py [--rounds 5] [--number 20000]

No sockets, no provider: the keys are loaded in memory (an RS256 key of 2048 bits, as Cognito
and oidc-provider sign with, and a P-256 key for ES256), so the figures are the Python work per
request on this machine, best of ``--rounds``. Not a substitute for ``make bench`` (the whole
request through a real process); a way to see what the verified-token cache saves.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from joserfc import jwt  # noqa: E402
from joserfc.jwk import ECKey, KeySet, RSAKey  # noqa: E402

from authproxy.config import parse_config  # noqa: E402
from authproxy.oidc.jwks import JwksCache  # noqa: E402
from authproxy.oidc.token_cache import token_key  # noqa: E402
from authproxy.oidc.verify import verify_token  # noqa: E402
from authproxy.policy.routes import Route  # noqa: E402
from authproxy.web.gate import Gate  # noqa: E402

ISSUER = "https://idp.example.test"
API = "https://api.example.test"
CONFIG = f"""
oidc: {{issuer: "{ISSUER}", client_id: web, client_secret: s, audiences: ["{API}"]}}
verified_tokens: {{max_entries: MAX}}
routes: [{{name: api, upstream: "http://127.0.0.1:1", auth: bearer}}]
"""


class Keys:
    def __init__(self, keys: KeySet):
        self.cache = JwksCache(self._fetch)
        self._keys = keys

    async def _fetch(self) -> KeySet:
        return self._keys

    async def key_set(self, iss: str) -> JwksCache:
        return self.cache


class Link:
    def __init__(self, keys: KeySet):
        self.provider_keys = Keys(keys)

    def remote_keys(self, config):  # no further issuers here
        raise AssertionError


def per_call_us(loop: asyncio.AbstractEventLoop, gate: Gate, route: Route, token: str, number: int, rounds: int) -> float:
    async def many() -> None:
        bearer = gate._bearer
        for _ in range(number):
            identity, _ = await bearer(token, route)
            assert identity is not None

    best = min(timeit.repeat(lambda: loop.run_until_complete(many()), number=1, repeat=rounds))
    return best / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    now = int(time.time())
    loop = asyncio.new_event_loop()
    print(f"{'key':8} {'hit (µs)':>10} {'miss (µs)':>10} {'verify_token (µs)':>18} {'sha256 (µs)':>12}")
    for name, key, alg in (("RS256", RSAKey.generate_key(2048, parameters={"kid": "r"}, private=True), "RS256"),
                           ("ES256", ECKey.generate_key("P-256", parameters={"kid": "e"}, private=True), "ES256")):
        keys = KeySet.import_key_set({"keys": [key.as_dict(private=False)]})
        token = jwt.encode({"alg": alg, "kid": key.kid, "typ": "at+jwt"},
                           {"iss": ISSUER, "aud": API, "sub": "alice", "client_id": "web", "exp": now + 3600,
                            "iat": now, "scope": "orders/read", "email": "alice@example.com", "groups": ["admins"]}, key)
        figures = []
        for max_entries in (10_000, 0):
            config = parse_config(CONFIG.replace("MAX", str(max_entries)), "bench.yaml", {})
            gate = Gate(config, Link(keys), None, None, None)
            route = Route(config.routes[0])
            loop.run_until_complete(gate._bearer(token, route))  # load the keys, fill the cache
            figures.append(per_call_us(loop, gate, route, token, args.number if max_entries else args.number // 10,
                                       args.rounds))
        rules = gate.issuers["oidc"].rules
        verify = min(timeit.repeat(lambda: verify_token(token, keys, rules, now), number=2000, repeat=args.rounds))
        digest = min(timeit.repeat(lambda: token_key(token), number=100_000, repeat=args.rounds))
        print(f"{name:8} {figures[0]:10.2f} {figures[1]:10.2f} {verify / 2000 * 1e6:18.2f} {digest / 100_000 * 1e6:12.2f}")
    loop.close()


if __name__ == "__main__":
    main()
