"""A plain-HTTP forward proxy in a thread that records every request it passes on, for tests
that count what a process asked of which server (give the process ``HTTP_PROXY`` pointing
here and an empty ``NO_PROXY``). One request per connection (HTTP/1.0 answers), so every
request is seen, not only each connection's first."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through ourselves


class CountingProxy:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []  # ("127.0.0.1:PORT", "/path")
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                target = urlsplit(self.path)
                if target.hostname not in ("127.0.0.1", "localhost"):  # tests never leave the machine
                    self.send_error(403)
                    return
                with proxy._lock:
                    proxy.requests.append((f"{target.hostname}:{target.port or 80}", target.path))
                try:
                    with _DIRECT.open(self.path, timeout=10) as answer:  # noqa: S310 - loopback only
                        status, body, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "")
                except urllib.error.HTTPError as exc:
                    status, body, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="counting-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment that sends a child's HTTP client calls through this proxy."""
        return {"HTTP_PROXY": self.url, "http_proxy": self.url, "NO_PROXY": "", "no_proxy": ""}

    def to(self, host_port: str) -> list[str]:
        """The paths requested of ``host_port`` so far."""
        with self._lock:
            return [path for target, path in self.requests if target == host_port]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
