"""The Kubernetes example run with podman: what the pod test and the compose test share (the
stand-in app, the table, readiness, a sign-in through the development provider's forms)."""

from __future__ import annotations

import base64
import json
import re
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

from tests.support.containers import podman
from tests.support.forms import Forms
from tests.support.processes import ROOT, child_env, free_port, http_get, stop_process, wait_for_port

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
