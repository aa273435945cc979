"""deploy/compose/ run for real with podman-compose: the shipped file plus the try-it-locally
override (the development provider), plus a test override that only adapts what this machine
lacks: host networking on 127.0.0.1 with free ports, the repo's image for authproxy and the
provider, the echo upstream standing in for services A and B, moto on loopback standing in for
DynamoDB Local, and Debian's Prometheus binary in the base image standing in for prom/prometheus.
Then alice and bob sign in through it, and Prometheus scrapes authproxy with the shipped rules."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.support.deployed import (
    ECHO_APP, TABLE, headers_of, jwt_claims, require_pause_binary, sign_in, table_items, wait_ready,
)
from tests.support.containers import authproxy_image, ensure_base_image, podman_env, require_podman
from tests.support.moto import MotoServer
from tests.support.processes import ROOT, free_port, http_get

COMPOSE = ROOT / "deploy" / "compose"
PROMETHEUS = ROOT / "deploy" / "prometheus"
PODMAN_COMPOSE = Path(sys.executable).with_name("podman-compose")


class _Override(list):
    """A list that replaces the merged files' value instead of extending it (the compose
    spec's `!override` tag, which podman-compose 1.6 implements)."""


class _Dumper(yaml.SafeDumper):
    pass


class _Reset(list):
    """`!reset []`: drop the merged files' value altogether."""


_Dumper.add_representer(_Override, lambda dumper, data: dumper.represent_sequence("!override", list(data)))
_Dumper.add_representer(_Reset, lambda dumper, data: dumper.represent_sequence("!reset", []))


def _override(value: list) -> _Override:
    return _Override(value)


def dump(document: dict) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False)


def compose_files() -> list[Path]:
    return [COMPOSE / "docker-compose.yml", COMPOSE / "docker-compose.local.yml"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_podman()
    require_pause_binary()
    assert PODMAN_COMPOSE.exists(), "podman-compose (PyPI, >= 1.6) belongs in the test extras"
    prometheus_binary = shutil.which("prometheus")
    assert prometheus_binary, "Debian's prometheus package provides the Prometheus that scrapes the stack"
    image, base = authproxy_image(), ensure_base_image()
    work = tmp_path_factory.mktemp("deploy-compose")
    project = f"authproxy-test-{secrets.token_hex(3)}"
    ports = {name: free_port() for name in ("proxy", "admin", "idp", "a", "b", "prometheus")}
    public_url = f"http://127.0.0.1:{ports['proxy']}"
    issuer = f"http://127.0.0.1:{ports['idp']}"
    moto = MotoServer()
    files = [*compose_files(), work / "docker-compose.test.yml"]
    command = [str(PODMAN_COMPOSE), "--in-pod", "false", "-p", project, *[arg for f in files for arg in ("-f", str(f))]]

    def compose(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*command, *args], env=podman_env(), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode:
            raise AssertionError(f"podman-compose {' '.join(args)}: {result.returncode}\n{result.stdout[-3000:]}\n"
                                 f"{result.stderr[-3000:]}")
        return result

    def logs() -> str:
        return "\n".join(f"--- {service}:\n" + compose("logs", service, check=False).stdout[-4000:]
                         for service in ("authproxy", "dev-idp", "prometheus"))

    try:
        # authproxy's config: the shipped one, with loopback addresses and free ports only
        config = yaml.safe_load((COMPOSE / "authproxy.yaml").read_text())
        config["listen"], config["admin_listen"] = f"127.0.0.1:{ports['proxy']}", f"127.0.0.1:{ports['admin']}"
        config["store"]["dynamodb"]["endpoint_url"] = moto.url
        upstreams = {route["name"]: route for route in config["routes"]}
        upstreams["service-a"]["upstream"] = f"http://127.0.0.1:{ports['a']}"
        upstreams["service-b"]["upstream"] = f"http://127.0.0.1:{ports['b']}"
        (work / "authproxy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        # Prometheus: the shipped rules as they are; the scrape target where authproxy listens here
        scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
        scrape["global"]["scrape_interval"] = scrape["global"]["evaluation_interval"] = "1s"
        scrape["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{ports['admin']}"]}]
        (work / "prometheus.yml").write_text(yaml.safe_dump(scrape, sort_keys=False))

        local = yaml.safe_load((COMPOSE / "docker-compose.local.yml").read_text())["services"]
        provider_args = [arg.replace("9400", str(ports["idp"])).replace("8080", str(ports["proxy"]))
                         .replace("--host=0.0.0.0", "--host=127.0.0.1") for arg in local["dev-idp"]["command"]]
        environment = {name: value.replace("9400", str(ports["idp"])).replace("8080", str(ports["proxy"]))
                       for name, value in local["authproxy"]["environment"].items()}
        assert environment["OIDC_ISSUER"] == issuer and environment["PUBLIC_URL"] == public_url
        host = {"network_mode": "host"}  # no port mappings either (below)
        echo = {"image": image, "entrypoint": ["python3", "-c", ECHO_APP], "read_only": True, **host}
        override = {"services": {
            "authproxy": {
                **host, "ports": _Reset(), "image": image,
                "command": ["run", "--config", "/etc/authproxy-test/config.yaml"],
                "volumes": _override([f"{work / 'authproxy.yaml'}:/etc/authproxy-test/config.yaml:ro"]),
                "environment": {**environment, "AWS_EC2_METADATA_DISABLED": "true"},
                # DynamoDB Local has no image here: moto on this machine's loopback stands in
                "depends_on": _override(["service-a", "service-b"]),
            },
            "dev-idp": {**host, "image": image, "command": provider_args},
            "service-a": {**echo, "environment": {"LISTEN_ADDRESS": f"127.0.0.1:{ports['a']}"}},
            "service-b": {**echo, "environment": {"LISTEN_ADDRESS": f"127.0.0.1:{ports['b']}"}},
            "dynamodb": {"profiles": ["shipped-only"]},
            "prometheus": {
                **host, "ports": _Reset(), "image": base, "user": "65532:65532", "read_only": True, "tmpfs": ["/prometheus"],
                "entrypoint": ["/usr/bin/prometheus"],
                "command": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                            f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
                "volumes": _override([f"{prometheus_binary}:/usr/bin/prometheus:ro",
                                      f"{work / 'prometheus.yml'}:/etc/prometheus/prometheus.yml:ro",
                                      f"{PROMETHEUS / 'alerts.yml'}:/etc/prometheus/alerts.yml:ro"]),
            },
        }}
        files[-1].write_text(dump(override))
        compose("up", "-d", "--no-build")
        wait_ready(f"http://127.0.0.1:{ports['admin']}", logs)
        yield {"url": public_url, "idp": issuer, "store": moto.url, "prometheus": f"http://127.0.0.1:{ports['prometheus']}",
               "logs": logs, "compose": compose}
    finally:
        compose("down", "-t", "10", check=False)
        moto.stop()


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, dict | None]:
    async with http.get(url, headers={"Accept": "application/json"}, allow_redirects=False) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def test_alice_reaches_both_services_with_her_bearer_token(stack):
    http = await sign_in(stack["url"], "/a/hello", "alice", stack["idp"], stack["logs"])
    try:
        status, echo = await fetch(http, stack["url"] + "/a/hello")
        assert status == 200 and echo["path"] == "/hello"  # strip_prefix: service A sees its own path
        headers = headers_of(echo)
        scheme, _, token = headers["authorization"].partition(" ")
        claims = jwt_claims(token)
        assert scheme == "Bearer" and claims["username"] == "alice" and claims["iss"] == stack["idp"]
        assert headers["x-user-email"] == "alice@example.com"
        status, echo = await fetch(http, stack["url"] + "/b/report")
        assert status == 200 and echo["path"] == "/report"
        headers = headers_of(echo)
        assert headers["authorization"] == f"Bearer {token}" and headers["x-user-groups"] == "admins"
    finally:
        await http.close()
    # the session is in the store the compose file configures (the table created at start-up)
    assert any(item["sub"]["S"] == claims["sub"] for item in table_items(stack["store"]))


async def test_bob_is_refused_by_the_admins_only_service(stack):
    http = await sign_in(stack["url"], "/a/", "bob", stack["idp"], stack["logs"])
    try:
        status, echo = await fetch(http, stack["url"] + "/a/")
        assert status == 200 and headers_of(echo)["authorization"].startswith("Bearer ")
        status, body = await fetch(http, stack["url"] + "/b/report")
        assert status == 403 and "admins" in json.dumps(body)
    finally:
        await http.close()
    async with aiohttp.ClientSession() as anonymous:
        assert (await fetch(anonymous, stack["url"] + "/b/report"))[0] == 401


def test_prometheus_scrapes_authproxy_with_the_shipped_alert_rules(stack):
    shipped = {rule["alert"] for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
               for rule in group["rules"]}
    deadline = time.monotonic() + 60
    targets: list = []
    while time.monotonic() < deadline:
        try:
            status, body = http_get(stack["prometheus"] + "/api/v1/targets")
            targets = json.loads(body)["data"]["activeTargets"] if status == 200 else []
        except OSError:
            targets = []
        if targets and all(target["health"] == "up" for target in targets):
            break
        time.sleep(0.5)
    assert [target["labels"]["job"] for target in targets] == ["authproxy"], (targets, stack["logs"]())
    assert targets[0]["health"] == "up", targets
    status, body = http_get(stack["prometheus"] + "/api/v1/rules")
    assert status == 200
    loaded = {rule["name"] for group in json.loads(body)["data"]["groups"] for rule in group["rules"]}
    assert loaded == shipped
    # and it has authproxy's samples
    status, body = http_get(stack["prometheus"] + "/api/v1/query?query=authproxy_build_info")
    assert status == 200 and json.loads(body)["data"]["result"], body


def test_store_table_was_created_by_authproxy(stack):
    import boto3

    client = boto3.client("dynamodb", endpoint_url=stack["store"], region_name="eu-west-1")
    assert TABLE in client.list_tables()["TableNames"]
