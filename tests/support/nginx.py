"""The real nginx (Debian package nginx, /usr/sbin/nginx) for tests, in a private prefix.

    with Nginx("server { listen 127.0.0.1:{port}; location / { proxy_pass http://127.0.0.1:1234; } }") as nginx:
        ... nginx.url ...

The body goes inside ``http { }``; ``{port}`` (nginx's listen port), ``{prefix}`` (the private
directory) and any keyword placeholders (``Nginx(body, app="127.0.0.1:8000")`` fills ``{app}``)
are replaced as plain text (nginx's own braces stay as they are). nginx runs in the foreground
with a single process (``master_process off``), as the current user; its pid file, logs and
every temp path live in the prefix, which is removed on ``stop()`` (logs stay readable).
``nginx -t`` checks the configuration first; a bad one raises ``NginxError`` with nginx's message.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.processes import ROOT, child_env, free_port, stop_process

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DEPLOY_EXAMPLE = ROOT / "deploy" / "nginx" / "authproxy.conf"

MAIN_CONF = """\
daemon off;
master_process off;
pid "{prefix}/nginx.pid";
error_log "{prefix}/error.log" {error_log_level};
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    access_log "{prefix}/access.log";
    client_body_temp_path "{prefix}/client_body";
    proxy_temp_path "{prefix}/proxy";
    fastcgi_temp_path "{prefix}/fastcgi";
    uwsgi_temp_path "{prefix}/uwsgi";
    scgi_temp_path "{prefix}/scgi";
{body}
}}
"""


class NginxError(RuntimeError):
    """nginx refused the configuration or did not start; the message is nginx's."""


def fill(template: str, **values: object) -> str:
    """``template`` with each ``{name}`` replaced by ``values[name]``, as plain text."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template


class Nginx:
    def __init__(
        self,
        config_body: str,
        port: int | None = None,
        *,
        error_log_level: str = "notice",
        start: bool = True,
        **placeholders: object,
    ) -> None:
        self.port = port or free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="authproxy-nginx-"))
        self.conf_path = self.prefix / "nginx.conf"
        self._error_log_path = self.prefix / "error.log"
        self._access_log_path = self.prefix / "access.log"
        self._logs: dict[str, str] = {}  # the logs, kept once the prefix is removed
        self.process: subprocess.Popen | None = None
        body = fill(config_body, port=self.port, prefix=self.prefix, **placeholders)
        self.config = MAIN_CONF.format(prefix=self.prefix, error_log_level=error_log_level, body=body)
        self.conf_path.write_text(self.config)
        try:
            self.test()
            if start:
                self.start()
        except BaseException:
            self.stop()
            raise

    def _command(self, *args: str) -> list[str]:
        # -e: nginx opens its error log before reading the config; keep even that one in the prefix.
        return [NGINX, "-p", str(self.prefix), "-c", str(self.conf_path), "-e", str(self._error_log_path), *args]

    def test(self) -> str:
        """``nginx -t``; its output, or NginxError with it."""
        result = subprocess.run(self._command("-t"), capture_output=True, text=True, timeout=30, env=child_env())
        output = (result.stderr + result.stdout).strip()
        if result.returncode != 0:
            raise NginxError(f"nginx -t failed:\n{output}\n--- {self.conf_path}:\n{self.config}")
        return output

    def start(self, timeout: float = 15.0) -> None:
        """Start nginx; return once it has bound its sockets (its pid file names it) and
        127.0.0.1:port accepts connections. NginxError, with nginx's messages, otherwise."""
        pid_file = self.prefix / "nginx.pid"
        with open(self.prefix / "output.log", "wb") as output:  # the child keeps its own descriptor
            self.process = subprocess.Popen(self._command(), cwd=self.prefix, env=child_env(), stdout=output, stderr=output)
        deadline = time.monotonic() + timeout
        problem = f"not ready after {timeout}s"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                problem = f"exited with {self.process.returncode}"
                break
            # nginx writes its pid file only once every listen socket is bound (a taken port
            # fails before that, after its bind retries), so a port someone else holds is no "ready".
            try:
                ours = pid_file.read_text().strip() == str(self.process.pid)
            except FileNotFoundError:
                ours = False
            if ours:
                with socket.socket() as probe:
                    probe.settimeout(0.5)
                    if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                        return
            time.sleep(0.02)
        stop_process(self.process)
        output_text = (self.prefix / "output.log").read_text(errors="replace")
        raise NginxError(f"nginx did not start ({problem}):\n{output_text}{self.error_log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self, path: Path) -> str:
        if path.name in self._logs:
            return self._logs[path.name]
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def error_log(self) -> str:
        return self._read(self._error_log_path)

    def access_log(self) -> str:
        return self._read(self._access_log_path)

    async def logged(self, text: str, timeout: float = 10.0) -> str:
        """The access log once it holds ``text``: nginx writes a request's line in its log phase,
        after the response has gone out, so a client that has read the response can be first."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.access_log()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return log

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        if self.prefix.exists():
            self._logs = {path.name: self._read(path) for path in (self._error_log_path, self._access_log_path)}
            shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# deploy/nginx/authproxy.conf names these addresses; a test swaps them for its own (and nothing else).
EXAMPLE_AUTHPROXY = "server authproxy:8080;"
EXAMPLE_APP = "server app:3000;"
EXAMPLE_LISTEN = "listen 80;"


def deploy_example(authproxy: str, app: str) -> str:
    """deploy/nginx/authproxy.conf as a body for ``Nginx``: the authproxy and app upstream
    addresses replaced by ``authproxy`` and ``app`` (host:port, or a URL like
    ``http://127.0.0.1:8080``), and ``listen 80`` by ``listen 127.0.0.1:{port}``."""
    lines = DEPLOY_EXAMPLE.read_text().splitlines(keepends=True)
    for original, address in (
        (EXAMPLE_AUTHPROXY, f"server {_host_port(authproxy)};"),
        (EXAMPLE_APP, f"server {_host_port(app)};"),
        (EXAMPLE_LISTEN, "listen 127.0.0.1:{port};"),
    ):
        # directives only: the header comment names these addresses too
        found = [i for i, line in enumerate(lines) if line.split("#", 1)[0].strip() == original]
        if len(found) != 1:
            raise AssertionError(f"{DEPLOY_EXAMPLE} should have the directive {original!r} once, not {len(found)} times")
        lines[found[0]] = lines[found[0]].replace(original, address, 1)
    return "".join(lines)

def _host_port(address: str) -> str:
    return address.split("://", 1)[-1].rstrip("/")

