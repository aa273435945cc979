"""The command line as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from authproxy import __version__
from tests.support.processes import ROOT, ProxyProcess, child_env, http_get


def authproxy(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "authproxy", *args],
        cwd=ROOT, env={**child_env(), **(env or {})}, capture_output=True, text=True, timeout=60,
    )


def test_version():
    result = authproxy("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"authproxy {__version__}"


def test_check_config_on_the_example():
    result = authproxy("check-config", "config.example.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "ok: 2 route(s) (api-a, web)" in result.stdout


def test_check_config_lists_every_error(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "listen: nowhere\nroutes:\n  - name: a\n    upstream: ${NOT_SET_ANYWHERE}\n    auth: public\n    colour: blue\n"
    )
    result = authproxy("check-config", str(broken))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("authproxy: invalid configuration (3 problem(s))")
    assert f"{broken}:1: listen:" in result.stderr
    assert f"{broken}:4: routes[0].upstream: environment variable NOT_SET_ANYWHERE" in result.stderr
    assert f"{broken}:6: routes[0].colour: unknown key" in result.stderr


def test_run_without_config():
    result = authproxy("run", env={"AUTHPROXY_CONFIG": ""})
    assert result.returncode == 2 and "--config" in result.stderr


def test_no_command_prints_help():
    result = authproxy()
    assert result.returncode == 2 and "check-config" in result.stderr


def test_healthcheck_reads_admin_listen_from_the_config_and_ignores_http_proxy(upstream, tmp_path):
    proxy = ProxyProcess({"routes": [{"name": "all", "upstream": upstream.url, "auth": "public"}]}, tmp_path)
    env = {**child_env(), "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    try:
        ready = subprocess.run([sys.executable, "-m", "authproxy", "healthcheck", "--config", str(proxy.config_path)],
                               capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
        assert ready.returncode == 0, ready.stderr
        assert f"127.0.0.1:{proxy.admin_port}/readyz: ready" in ready.stdout
    finally:
        proxy.stop()
    gone = subprocess.run([sys.executable, "-m", "authproxy", "healthcheck", "--url", proxy.admin_url + "/readyz",
                           "--timeout", "1"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert gone.returncode == 1 and "not ready" in gone.stderr


def test_dev_idp_in_a_pools_layout_with_the_updated_issuer(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "authproxy", "dev-idp", "--port", "0", "--pool-id", "eu-west-1_DevPool1",
         "--issuer-format", "updated", "--rotation-grace", "0"],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("issuer: "):
                break
        issuer = lines[-1].split(": ", 1)[1].strip()
        domain = next(line for line in lines if "cognito_domain:" in line).split(": ", 1)[1].strip()
        assert issuer.endswith("/eu-west-1_DevPool1") and not issuer.startswith(domain)  # another origin, a path
        status, body = http_get(issuer + "/.well-known/openid-configuration")
        assert status == 200
        discovery = json.loads(body)
        assert discovery["issuer"] == issuer and discovery["authorization_endpoint"].startswith(domain)
        assert "end_session_endpoint" in discovery
    finally:
        process.terminate()
        code = process.wait(10)
        process.stdout.close()
    assert code == 0
