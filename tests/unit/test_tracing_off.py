"""Tracing off costs nothing: a process that serves a request through ``serve()`` without
``tracing:`` never loads OpenTelemetry (installed here: the test extra brings it) nor
authproxy's traced classes, and passes a client's trace context on untouched. The same
script with ``tracing:`` loads them and sends its own context: the check can tell."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.support.otlp import SERVER, OtlpReceiver
from tests.support.processes import ROOT, child_env, free_port

THEIRS = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# Serves one request in-process through the real serve(), with an upstream of its own that
# answers with the headers it received; then stops itself as a pod would (SIGTERM).
SCRIPT = r"""
import asyncio, json, os, signal, sys

import aiohttp
from aiohttp import web

async def echo(request):
    return web.json_response({name.lower(): value for name, value in request.headers.items()})

async def main():
    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    upstream_port = runner.addresses[0][1]

    from authproxy.config import parse_config
    from authproxy.web.server import serve

    path, port = sys.argv[1], int(sys.argv[2])
    text = open(path).read().replace("UPSTREAM_PORT", str(upstream_port))
    serving = asyncio.create_task(serve(parse_config(text, path, os.environ, None)))
    seen = None
    async with aiohttp.ClientSession() as http:
        for _ in range(400):  # until it listens
            try:
                async with http.get(f"http://127.0.0.1:{port}/app/x", headers={"traceparent": sys.argv[3]}) as answer:
                    seen = await answer.json()
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.025)
    os.kill(os.getpid(), signal.SIGTERM)
    code = await serving
    await runner.cleanup()
    loaded = sorted(name for name in sys.modules
                    if name.split(".")[0] == "opentelemetry" or name.startswith("authproxy.tracing."))
    print(json.dumps({"code": code, "seen": seen, "loaded": loaded}))

asyncio.run(main())
"""


def run(tmp_path, **extra) -> dict:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{free_port()}", "shutdown_timeout": "1s",
        "log": {"access": False},
        "routes": [{"name": "app", "match": {"path_prefix": "/app"}, "upstream": "http://127.0.0.1:UPSTREAM_PORT",
                    "auth": "public"}],
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {name: value for name, value in child_env().items() if not name.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(path), str(port), THEIRS], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0 and report["seen"] is not None, result.stderr
    return report


def test_tracing_off_loads_nothing_and_leaves_the_trace_context_alone(tmp_path):
    report = run(tmp_path)
    assert report["loaded"] == []
    assert report["seen"]["traceparent"] == THEIRS  # not a participant: passed on as sent


def test_tracing_on_loads_the_sdk_and_sends_its_own_context(tmp_path):
    receiver = OtlpReceiver()
    try:
        report = run(tmp_path, tracing={"endpoint": receiver.url})
        assert "opentelemetry.sdk.trace" in report["loaded"] and "authproxy.tracing.handler" in report["loaded"]
        sent = report["seen"]["traceparent"]
        assert sent != THEIRS and sent.split("-")[1] != THEIRS.split("-")[1]  # the client is not trusted
        # the spans were exported before the process exited (Parts.close flushes)
        spans = receiver.snapshot()
        server = [span for span in spans if span.kind == SERVER]
        assert len(server) == 1 and server[0].trace_id == sent.split("-")[1]
    finally:
        receiver.stop()
