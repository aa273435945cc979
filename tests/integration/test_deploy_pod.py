"""deploy/kubernetes/ run for real: the ConfigMap, the Secret and the sidecar Deployment played
with `podman kube play`, in a copy that only adapts what a laptop lacks (host networking on
127.0.0.1 with free ports instead of a pod IP, the repo's image, a stand-in app, moto instead of
DynamoDB, the development provider instead of Cognito); then a real sign-in through the pod, the
access token arriving at the app as Authorization: Bearer, the session in the store, and a clean
SIGTERM shutdown of the read-only, non-root authproxy container."""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import boto3
import pytest
import yaml

from authproxy.demo import idp
from tests.support.containers import authproxy_image, podman, require_podman
from tests.support.moto import MotoServer
from tests.support.processes import ROOT, child_env, free_port, http_get, stop_process, wait_for_port
from tests.unit.test_dev_idp import Forms

K8S = ROOT / "deploy" / "kubernetes"
TABLE = "authproxy-sessions"

# The stand-in app: the echo upstream of `authproxy demo` (it answers with the headers it got),
# from the same image, listening where the manifest tells the app to (LISTEN_ADDRESS).
ECHO_APP = (
    "import os; from aiohttp import web; from authproxy.demo.echo import create_echo_app; "
    "host, port = os.environ['LISTEN_ADDRESS'].rsplit(':', 1); "
    "web.run_app(create_echo_app(), host=host, port=int(port), access_log=None, print=None)"
)


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def require_pause_binary() -> None:
    """`podman kube play` builds its infra (pause) image from catatonit (a Recommends of Debian's
    podman, so --no-install-recommends leaves it out)."""
    if not any(shutil.which(name) or Path(f"/usr/libexec/podman/{name}").exists() for name in ("catatonit",)):
        pytest.fail("catatonit is not installed: `podman kube play` needs it for the pod's infra container "
                    "(apt-get install -y catatonit)", pytrace=False)


def podman_writes_secret_data_verbatim() -> bool:
    """podman 4.3 (Debian bookworm) writes a Secret's `data` values into the volume without
    base64-decoding them (and ignores stringData); later versions decode them as Kubernetes does."""
    version = podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) < (4, 4)


def secret_data(values: dict[str, str]) -> dict[str, str]:
    if podman_writes_secret_data_verbatim():
        for value in values.values():  # must still parse as base64 when the Secret is read
            assert re.fullmatch(r"[0-9a-f]+", value) and len(value) % 4 == 0
        return dict(values)
    return {name: base64.b64encode(value.encode()).decode() for name, value in values.items()}


def create_table(endpoint: str) -> None:
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="eu-west-1")
    client.create_table(TableName=TABLE, AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")


def table_items(endpoint: str) -> list[dict]:
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="eu-west-1")
    return client.scan(TableName=TABLE)["Items"]


class DevIdp:
    """`authproxy dev-idp` on a free loopback port (the provider the pod signs users in with)."""

    def __init__(self, client_secret: str, public_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("authproxy")), "dev-idp", "--port", str(self.port),
             "--client-secret", client_secret, "--redirect-uri", public_url + "/oauth2/callback",
             "--logout-uri", public_url + "/"],
            cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        stop_process(self.process)


def wait_ready(admin_url: str, logs, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http_get(admin_url + "/readyz", timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"authproxy not ready on {admin_url} after {timeout}s:\n{logs()}")


async def sign_in(proxy_url: str, path: str, user: str, idp_url: str, logs=lambda: "") -> aiohttp.ClientSession:
    """A browser's sign-in: the page redirects to the provider, the user clicks their name on
    the provider's page, the callback sets the session cookie and returns to ``path``.
    Returns the client session holding the cookie (close it)."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies for 127.0.0.1
    try:
        async with http.get(proxy_url + path, headers={"Accept": "text/html"}) as page:
            assert page.status == 200 and str(page.url).startswith(idp_url + "/oauth2/authorize"), page.url
            forms = Forms(await page.text()).forms
            form = next(form for form in forms if ("pick", user) in form["buttons"])
            action = urljoin(str(page.url), form["action"])
        async with http.post(action, data={**form["hidden"], "pick": user}, headers={"Accept": "text/html"}) as back:
            assert back.status == 200 and str(back.url) == proxy_url + path, (back.status, back.url, logs())
        return http
    except BaseException:
        await http.close()
        raise


def headers_of(echo: dict) -> dict[str, str]:
    return {name.lower(): value for name, value in echo["headers"]}


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# --- the pod -----------------------------------------------------------------------------

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
