"""deploy/kubernetes/ run for real: the ConfigMap, the Secret and the sidecar Deployment played
with `podman kube play`, in a copy that only adapts what a laptop lacks (host networking on
127.0.0.1 with free ports instead of a pod IP, the repo's image, a stand-in app, moto instead of
DynamoDB, the development provider instead of Cognito); then a real sign-in through the pod, the
access token arriving at the app as Authorization: Bearer, the session in the store, and a clean
SIGTERM shutdown of the read-only, non-root authproxy container."""

from __future__ import annotations

import copy
import json
import secrets

import aiohttp
import pytest
import yaml

from authproxy.demo import idp
from tests.support.containers import authproxy_image, podman, require_podman
from tests.support.moto import MotoServer
from tests.support.deployed import (
    ECHO_APP, DevIdp, create_table, documents, headers_of, jwt_claims, require_pause_binary, secret_data, sign_in, table_items,
    wait_ready,
)
from tests.support.processes import ROOT, free_port, http_get

K8S = ROOT / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    require_podman()
    require_pause_binary()
    image = authproxy_image()
    work = tmp_path_factory.mktemp("deploy-pod")
    suffix = secrets.token_hex(3)
    proxy_port, admin_port, app_port = free_port(), free_port(), free_port()
    public_url = f"http://127.0.0.1:{proxy_port}"
    client_secret, session_secret = secrets.token_hex(24), secrets.token_hex(32)
    moto = MotoServer()
    provider = None
    manifest = work / "pod.yaml"
    try:
        create_table(moto.url)
        provider = DevIdp(client_secret, public_url)

        (configmap,) = documents("configmap.yaml")
        (secret,) = documents("secret.example.yaml")
        (deployment,) = documents("deployment.yaml")

        # The config: only addresses change (loopback, free ports, the local provider and store).
        config = yaml.safe_load(configmap["data"]["config.yaml"])
        shipped = copy.deepcopy(config)
        config["listen"] = f"127.0.0.1:{proxy_port}"
        config["admin_listen"] = f"127.0.0.1:{admin_port}"
        config["public_url"] = public_url
        config["oidc"].update(issuer=provider.url, cognito_domain=provider.url, client_id=idp.DEFAULT_CLIENT_ID)
        config["store"]["dynamodb"]["endpoint_url"] = moto.url
        config["routes"][0]["upstream"] = f"http://127.0.0.1:{app_port}"
        assert config["oidc"]["client_secret"] == shipped["oidc"]["client_secret"]  # still the Secret's files
        assert config["session"] == shipped["session"] and config["routes"][0]["inject"] == shipped["routes"][0]["inject"]
        configmap["metadata"]["name"] += f"-{suffix}"
        configmap["data"]["config.yaml"] = yaml.safe_dump(config, sort_keys=False)

        secret["metadata"]["name"] += f"-{suffix}"
        del secret["stringData"]
        secret["data"] = secret_data({"client-secret": client_secret, "session-secret": session_secret})

        deployment["metadata"]["name"] += f"-{suffix}"
        deployment["spec"]["replicas"] = 1
        spec = deployment["spec"]["template"]["spec"]
        spec["hostNetwork"] = True  # 127.0.0.1 is the pod's loopback and this machine's
        for volume in spec["volumes"]:
            volume["name"] += f"-{suffix}"  # podman keeps emptyDirs as named volumes
            if "configMap" in volume:
                volume["configMap"]["name"] = configmap["metadata"]["name"]
            if "secret" in volume:
                volume["secret"]["secretName"] = secret["metadata"]["name"]
                volume["secret"]["optional"] = False  # podman 4.3 dereferences it unset
        for container in spec["containers"]:
            container.pop("ports", None)
            # probes are the kubelet's; the test asks the same endpoints itself (below)
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                container.pop(probe, None)
            for mount in container.get("volumeMounts", []):
                mount["name"] += f"-{suffix}"
            container["image"] = image
            if container["name"] == "app":
                container["command"] = ["python3", "-c", ECHO_APP]
                container["env"] = [{"name": "LISTEN_ADDRESS", "value": f"127.0.0.1:{app_port}"}]
            else:
                container["env"] = [*container.get("env", []),
                                    {"name": "AWS_ACCESS_KEY_ID", "value": "testing"},
                                    {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"},
                                    {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"}]
        manifest.write_text(yaml.safe_dump_all([configmap, secret, deployment], sort_keys=False))

        podman("kube", "play", str(manifest), timeout=180)
        pod_name = podman("pod", "ps", "--format", "{{.Name}}", "--filter",
                          f"name={deployment['metadata']['name']}").stdout.split()[0]
        containers = {name: f"{pod_name}-{name}" for name in ("app", "authproxy")}

        def logs() -> str:
            return "\n".join(f"--- {name}:\n" + podman("logs", full, check=False).stdout
                             + podman("logs", full, check=False).stderr for name, full in containers.items())

        wait_ready(f"http://127.0.0.1:{admin_port}", logs)
        yield {"url": public_url, "admin": f"http://127.0.0.1:{admin_port}", "idp": provider.url, "store": moto.url,
               "pod": pod_name, "containers": containers, "logs": logs}
    finally:
        if manifest.exists():
            podman("kube", "down", str(manifest), check=False, timeout=120)
            podman("secret", "rm", f"orders-authproxy-{suffix}", check=False)
            volumes = podman("volume", "ls", "--format", "{{.Name}}", check=False).stdout.split()
            ours = [volume for volume in volumes if volume.endswith(f"-{suffix}")]
            if ours:
                podman("volume", "rm", "-f", *ours, check=False)
        if provider is not None:
            provider.stop()
        moto.stop()


async def test_sign_in_through_the_pod_reaches_the_app_with_the_bearer_token(pod):
    http = await sign_in(pod["url"], "/orders/42", "alice", pod["idp"], pod["logs"])
    try:
        async with http.get(pod["url"] + "/orders/42", headers={"Accept": "application/json"}) as response:
            assert response.status == 200
            echo = await response.json()
    finally:
        await http.close()
    headers = headers_of(echo)
    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    claims = jwt_claims(token)
    assert claims["iss"] == pod["idp"] and claims["username"] == "alice" and claims["token_use"] == "access"
    assert headers["x-user-email"] == "alice@example.com" and headers["x-user-groups"] == "admins"
    assert headers["x-user-sub"] == claims["sub"]
    assert "cookie" not in headers or "authproxy" not in headers["cookie"]
    # the session lives in the store (DynamoDB's stand-in), keyed by a hash, holding only sealed data
    (item,) = [item for item in table_items(pod["store"]) if item["sub"]["S"] == claims["sub"]]
    assert token.encode() not in item["payload"]["B"]


async def test_without_a_session_the_app_is_not_reached(pod):
    async with aiohttp.ClientSession() as http:
        async with http.get(pod["url"] + "/orders/42", headers={"Accept": "application/json"},
                            allow_redirects=False) as response:
            assert response.status == 401
        # a spoofed identity header never passes
        async with http.get(pod["url"] + "/orders/42", headers={"Accept": "text/html", "X-User-Email": "x@evil"},
                            allow_redirects=False) as response:
            assert response.status == 302 and "/oauth2/start" in response.headers["Location"]


def test_probe_endpoints_and_metrics_on_the_admin_port(pod):
    assert http_get(pod["admin"] + "/healthz")[0] == 200
    assert http_get(pod["admin"] + "/readyz")[0] == 200
    status, body = http_get(pod["admin"] + "/metrics")
    assert status == 200 and b"authproxy_ready 1.0" in body


def test_container_runs_locked_down(pod):
    state = json.loads(podman("inspect", pod["containers"]["authproxy"]).stdout)[0]
    assert state["Config"]["User"].split(":")[0] == "65532"
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    assert "no-new-privileges" in state["HostConfig"]["SecurityOpt"]
    assert "CAP_NET_RAW" in state["HostConfig"]["CapDrop"] and not state["HostConfig"]["CapAdd"]
    # the secret files arrived and are readable by uid 65532 (authproxy would not be ready otherwise)
    mounts = {mount["Destination"]: mount for mount in state["Mounts"]}
    assert mounts["/etc/authproxy-secrets"]["RW"] is False and mounts["/etc/authproxy"]["RW"] is False


def test_sigterm_drains_and_exits_zero(pod):
    """Last in this module: the pod stops as Kubernetes stops it, with SIGTERM to authproxy as PID 1."""
    podman("pod", "stop", "-t", "30", pod["pod"], timeout=120)
    state = json.loads(podman("inspect", pod["containers"]["authproxy"]).stdout)[0]["State"]
    assert state["ExitCode"] == 0, pod["logs"]()
    assert "Traceback" not in pod["logs"]()
