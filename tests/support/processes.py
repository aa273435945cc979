"""Real processes for integration tests: the test upstream and authproxy itself.

Everything binds 127.0.0.1 on free ports; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports below the kernel's ephemeral range (net.ipv4.ip_local_port_range): the kernel never gives
# one of them to an outgoing connection as its source port. A port from bind(0) is ephemeral, so it
# can be taken between our pick and the server's bind, by a connection anywhere on the machine or
# by bind(0) handing the same port out again. A CI run lost its compose stack that way.
_LISTEN_PORTS = range(20000, min(32768, _ephemeral_low()))
_handed_out: set[int] = set()
_pick = random.Random()


def free_port() -> int:
    """A loopback port that nothing holds now, and that no outgoing connection will take."""
    if len(_LISTEN_PORTS) > 1000:
        for _ in range(200):
            port = _pick.choice(_LISTEN_PORTS)
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    # no SO_REUSEADDR: a port with a connection in TIME_WAIT is not taken either
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket() as sock:  # a kernel whose ephemeral range leaves no room below it
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def child_env() -> dict[str, str]:
    """The environment for child processes: dummy AWS credentials, no metadata probing."""
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="eu-west-1",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LoopbackServer:
    """A server process started on a free 127.0.0.1 port; ``command`` gets the port."""

    def __init__(self, command: Callable[[int], list[str]], port: int | None = None, **popen: object) -> None:
        self.port = port or free_port()
        self.process = subprocess.Popen(command(self.port), cwd=ROOT, env=child_env(), **popen)  # type: ignore[call-overload]
        wait_for_port(self.port, process=self.process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.process)


class StubIdpProcess(LoopbackServer):
    """The scripted provider of tests/peers/stub_idp.py (hostile ID tokens, refresh outages)."""

    def __init__(self) -> None:
        super().__init__(lambda port: [sys.executable, "-m", "tests.peers.stub_idp", "--port", str(port)])


def stub_idp_proxy(upstream_url: str, idp: StubIdpProcess, workdir: Path, route: dict) -> ProxyProcess:
    """authproxy signing users in at ``idp`` (a public client), with one login ``route``."""
    port = free_port()
    return ProxyProcess(
        {
            "public_url": f"http://127.0.0.1:{port}",
            "oidc": {"issuer": idp.url, "client_id": "stub-client", "client_auth": "none"},
            "session": {"secrets": ["x" * 40]},
            "routes": [{"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream_url, "auth": "login",
                        **route}],
        },
        workdir,
        port=port,
    )


class UpstreamProcess(LoopbackServer):
    """The test upstream (tests/support/upstream.py)."""

    def __init__(self) -> None:
        super().__init__(lambda port: [sys.executable, "-m", "tests.support.upstream", "--port", str(port)])


class ProxyProcess:
    """``authproxy run`` on a config built from ``settings`` (listen ports filled in)."""

    def __init__(
        self,
        settings: dict,
        workdir: Path,
        *,
        name: str = "authproxy",
        env: dict[str, str] | None = None,
        port: int | None = None,
        wait: bool = True,
    ):
        self.port = port or free_port()
        self.admin_port = free_port()
        config = {"listen": f"127.0.0.1:{self.port}", "admin_listen": f"127.0.0.1:{self.admin_port}", **settings}
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "authproxy", "run", "--config", str(self.config_path)],
                cwd=ROOT,
                env={**child_env(), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()  # never leave a half-started proxy (and its workers) behind
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"authproxy exited with {self.process.returncode}:\n{self.logs()}")
            try:
                status, _ = http_get(self.admin_url + "/readyz", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"authproxy not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict]:
        text = self.logs()
        # Up to the last newline: a batch of access lines is one write(), which a reader can see
        # half done when it spans pages.
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.startswith("{")]

    def access_records(self) -> list[dict]:
        return [record for record in self.log_records() if record.get("type") == "access"]

    async def access_record(self, request_id: str, timeout: float = 5.0) -> dict:
        """The access line of one request; it is written just after the response leaves."""
        return (await self.access_lines(lambda record: record["request_id"] == request_id, timeout))[0]

    async def access_lines(self, wanted: Callable[[dict], bool], timeout: float = 5.0) -> list[dict]:
        """The access lines ``wanted`` picks, once there is one: a line is written after its
        response leaves (batched with others in the same event-loop pass), so it is waited for."""
        deadline = time.monotonic() + timeout
        while True:
            found = [record for record in self.access_records() if wanted(record)]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no such access line after {timeout}s")
            await asyncio.sleep(0.05)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``, scraped now."""
        from tests.support.exposition import valid_exposition

        status, body = http_get(self.admin_url + "/metrics")
        assert status == 200
        return sum(
            sample.value
            for family in valid_exposition(body.decode())
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def peak_rss_bytes(self) -> int:
        """VmHWM: the highest resident set size this process has had."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmHWM not found")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
