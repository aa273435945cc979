"""Lifecycle of one serving process: start-up, serve, drain, shutdown.

Used directly with ``workers: 1`` (this process also serves the admin listener)
and by each worker under the supervisor (which then serves the admin listener).
On SIGTERM/SIGINT the listener closes at once, in-flight requests get up to
``shutdown_timeout`` to finish, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import ssl
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from authproxy import __version__, metrics
from authproxy.config.schema import Config, ListenAddress, TlsConfig
from authproxy.logs import AccessLog, log
from authproxy.proxy.forward import Forwarder
from authproxy.web.admin import Readiness, admin_app, readiness_probe
from authproxy.web.gate import Gate
from authproxy.web.handler import ProxyHandler, Rules, server_options
from authproxy.web.listener import SafeAppRunner, SafeServer
from authproxy.web.reload import Reloader, on_signal_reload

if TYPE_CHECKING:
    from authproxy.oidc.service_tokens import ServiceTokens
    from authproxy.store.base import SessionStore
    from authproxy.tracing.otel import Tracing
    from authproxy.web.provider import IssuerKeys
    from authproxy.web.signin import SignIn

# A worker tells its supervisor its state by writing one of these lines to a pipe.
STATUS_READY = b"ready\n"
STATUS_STOPPING = b"stopping\n"
_FINAL_CLOSE = 0.5  # seconds aiohttp may take to close connections after our own drain
SNAPSHOT_INTERVAL = 1.0  # seconds; the supervisor's /metrics lags the workers by at most this
FLUSH_EXTRA = 5.0  # seconds past shutdown_timeout to save refreshed tokens (the supervisor waits 10)


class Parts:
    """What one serving process holds open for its lifetime, built once at start-up and
    closed once at the end; configuration reloads swap only the ``Rules`` built on it."""

    def __init__(self, config: Config, readiness: Readiness):
        self.clock = time.time  # the web edge's one wall clock: sign-in, sessions' checks, tokens, assertions
        self.readiness = readiness
        self.forwarder = Forwarder(client_idle_timeout=config.limits.client_idle_timeout)
        self.idp_http: aiohttp.ClientSession | None = None
        self.provider: IssuerKeys | None = None  # a ProviderLink with an oidc section
        self.sign_in: SignIn | None = None
        self.service_tokens: ServiceTokens | None = None
        self.store: SessionStore | None = None
        self.loading: asyncio.Task[None] | None = None  # the provider's discovery and keys
        self.tracing: Tracing | None = None  # spans are made only when tracing: is configured

    async def open(self, config: Config) -> None:
        if config.tracing is not None:
            # Only now: OpenTelemetry is an optional extra (authproxy/tracing/__init__.py).
            from authproxy import tracing
            from authproxy.tracing.otel import Tracing

            self.tracing = tracing.active = Tracing(config.tracing)
        await self.forwarder.start()
        if config.oidc is None:
            return  # bearer issuers alone get their key sources in rules()
        # Only now: the provider link brings joserfc and cryptography.
        from authproxy.oidc.service_tokens import ServiceTokens
        from authproxy.web.provider import ProviderLink

        provider = self.provider = ProviderLink(config.oidc, self._provider_http(config.oidc.ca_file), self.readiness)
        self.service_tokens = ServiceTokens(lambda: provider.client)
        if config.session is not None and config.public_url is not None:
            from authproxy.store.factory import open_store
            from authproxy.web.signin import SignIn

            self.store = await open_store(config.store)
            if self.tracing is not None:
                self.store = self.tracing.store(self.store)
            self.sign_in = SignIn(config, provider, self.store, self.clock)
        self.loading = asyncio.create_task(provider.load())

    def _provider_http(self, ca_file: str | None) -> aiohttp.ClientSession:
        # trust_env: HTTPS_PROXY/HTTP_PROXY/NO_PROXY apply to the provider's calls when set
        # (botocore honours them for DynamoDB on its own). Upstreams are never proxied.
        traced = self.tracing.client_trace_configs() if self.tracing is not None else None  # IdP call spans
        self.idp_http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=True,
                                              connector=aiohttp.TCPConnector(ssl=provider_tls(ca_file)),
                                              trace_configs=traced)
        return self.idp_http

    def rules(self, config: Config) -> Rules:
        """The compiled rules of ``config`` (at start-up and at each reload)."""
        if self.provider is None and config.bearer_issuers:
            # No oidc section: the bearer issuers' keys alone, from the first configuration
            # (start-up or a reload) that names one; each is warmed as it is named.
            from authproxy.web.provider import IssuerKeys

            self.provider = IssuerKeys(self._provider_http(None), warm_each=True)
        signer = None
        if config.assertion is not None and config.public_url is not None:
            from authproxy.policy.assertion import AssertionSigner

            keys = [key.get_secret_value() for key in config.assertion.signing_keys]
            signer = AssertionSigner(keys, str(config.public_url).rstrip("/"), config.assertion.lifetime)
        gate = Gate if self.tracing is None else self.tracing.gate
        return Rules(config, gate(config, self.provider, self.sign_in, self.service_tokens, signer, self.clock))

    def rules_in_force(self, config: Config) -> None:
        """After a reload's rules serve: forget the key sources of issuers it removed or changed
        (requests still under the old rules hold their own references)."""
        if self.provider is not None:
            self.provider.keep_only(config.bearer_issuers)

    async def close(self) -> None:
        if self.loading is not None:
            self.loading.cancel()
        if self.provider is not None:
            self.provider.close()
        await self.forwarder.close()
        if self.idp_http is not None:
            await self.idp_http.close()
        if self.store is not None:
            await self.store.close()
        if self.tracing is not None:
            from authproxy import tracing

            tracing.active = None
            await asyncio.to_thread(self.tracing.shutdown)  # exports what is still queued


async def serve(
    config: Config,
    *,
    config_path: str | None = None,
    reuse_port: bool = False,
    status_fd: int | None = None,
    serve_admin: bool = True,
    metrics_dir: str | None = None,
    config_dir: str | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit code.

    Under a supervisor (``metrics_dir`` set) the metrics snapshot is written once a
    second and a last time after draining, for the supervisor to sum.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    readiness = Readiness()
    parts = Parts(config, readiness)
    background: list[asyncio.Task[None]] = []
    runner: web.ServerRunner | None = None
    admin_runner: web.AppRunner | None = None
    try:
        await parts.open(config)
        serving = ProxyHandler if parts.tracing is None else parts.tracing.proxy_handler
        handler = serving(parts.rules(config), parts.forwarder, AccessLog(config.log), parts.sign_in)
        listener_tls = listener_tls_context(config.tls) if config.tls is not None else None

        def apply(new: Config, _text: str) -> None:
            if listener_tls is not None and new.tls is not None:
                # New handshakes get the renewed certificate; open connections keep theirs.
                listener_tls.load_cert_chain(new.tls.cert_file, new.tls.key_file)
            rules = parts.rules(new)
            if parts.sign_in is not None:
                parts.sign_in.routes_changed(new)
            handler.rules = rules  # one assignment: a request sees the old rules or the new, never a mix
            parts.rules_in_force(new)

        reloader = Reloader(config_path, config, apply, config_dir) if config_path is not None else None
        loop.add_signal_handler(signal.SIGHUP, on_signal_reload(reloader))
        if reloader is not None and config.reload == "watch":
            background.append(asyncio.create_task(reloader.watch()))
        # Draining is ours (see _drain); aiohttp's own wait then only closes what is left.
        # The express lane serves with ProxyHandler's own methods; a traced handler (a
        # subclass that reads more of aiohttp's request) is served by aiohttp's lane only.
        express = serving is ProxyHandler and config.express_lane
        runner = web.ServerRunner(SafeServer(handler, express=express, **server_options(config)),
                                  shutdown_timeout=_FINAL_CLOSE)
        await runner.setup()
        if not await _listen(runner, config.listen, reuse_port=reuse_port, ssl_context=listener_tls):
            return 1
        if serve_admin:
            admin_runner = SafeAppRunner(admin_app(readiness_probe(readiness)), access_log=None)
            await admin_runner.setup()
            if not await _listen(admin_runner, config.admin_listen, backlog=128):
                return 1

        _tune_garbage_collector()
        readiness.done("startup")
        if status_fd is not None:
            background.append(asyncio.create_task(_report_when_ready(readiness, status_fd)))
        log().info("started", extra={"fields": {
            "version": __version__, "listen": str(config.listen),
            "admin_listen": str(config.admin_listen) if serve_admin else None,
            "routes": len(config.routes), "pid": os.getpid()}})
        snapshots = asyncio.create_task(_write_snapshots(metrics_dir)) if metrics_dir else None
        await stop.wait()
        log().info("stopping", extra={"fields": {"shutdown_timeout_s": config.shutdown_timeout}})
        readiness.pending("shutdown", "shutting down")
        _report(status_fd, STATUS_STOPPING)
        await _shut_down(runner, parts.sign_in, config.shutdown_timeout)
        handler.access_log.flush()  # the drained requests' lines, before the process says it stopped
        if snapshots is not None:
            snapshots.cancel()
            metrics.write_snapshot(metrics_dir, f"worker-{os.getpid()}")  # type: ignore[arg-type]
        log().info("stopped", extra={"fields": {"pid": os.getpid()}})
        return 0
    finally:
        for task in background:
            task.cancel()
        if runner is not None:
            await runner.cleanup()
        await parts.close()
        if admin_runner is not None:
            await admin_runner.cleanup()


async def _listen(runner: web.BaseRunner, address: ListenAddress, *, reuse_port: bool = False, backlog: int = 1024,
                  ssl_context: ssl.SSLContext | None = None) -> bool:
    """Start listening on ``address``; False (logged) when the address cannot be had."""
    site = web.TCPSite(runner, address.host, address.port, reuse_port=reuse_port or None, backlog=backlog,
                       ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        log().error("listen_failed", extra={"fields": {"address": str(address), "error": exc.strerror or str(exc)}})
        return False
    return True


async def _shut_down(runner: web.ServerRunner, sign_in: SignIn | None, timeout: float) -> None:
    """Drain the listener, and save the refreshed tokens the store has not taken yet:
    while requests drain, and again for what the drained requests left; all before the
    store closes and before the supervisor's hard kill (shutdown_timeout + 10 s)."""
    loop = asyncio.get_running_loop()
    flush_until = loop.time() + timeout + FLUSH_EXTRA
    flushing = (asyncio.create_task(sign_in.sessions.flush(flush_until - loop.time(), final=False))
                if sign_in is not None else None)
    await _drain(runner, timeout)
    if flushing is not None and sign_in is not None:
        await flushing
        await sign_in.sessions.flush(max(0.0, flush_until - loop.time()))


def provider_tls(ca_file: str | None) -> ssl.SSLContext | bool:
    """Certificate checks for the provider: the system's CAs, or only ``oidc.ca_file``'s (and
    the bearer issuers' without a ca_file of their own)."""
    return ssl.create_default_context(cafile=ca_file) if ca_file is not None else True


def listener_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def _tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the request path.

    Each request allocates a few hundred short-lived objects, so with CPython's default
    thresholds (700, 10, 10) a full collection, which walks every tracked object
    (modules, the compiled config, aiohttp's internals), runs every couple of hundred
    requests. Freezing what start-up built moves it out of the collector's sight, and
    higher thresholds make young collections rarer. Measured here: 15 % less CPU per
    proxied request, no change in peak RSS (bench/RESULTS.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


IDLE_GRACE = 0.5  # seconds an idle keep-alive connection may still bring a request after SIGTERM


async def _drain(runner: web.ServerRunner, timeout: float) -> None:
    """Stop accepting, wait for in-flight requests up to ``timeout``, then close the rest.

    A keep-alive client may be sending its next request on an idle connection just as the
    signal arrives; closing that connection at once would answer the request with a reset
    (RFC 9112 9.6). Every response from now on says ``Connection: close``, so connections
    leave by themselves; idle ones get ``IDLE_GRACE`` before they are closed."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    if isinstance(runner.server, SafeServer):
        runner.server.draining = True  # from now on every response says Connection: close
    for site in list(runner.sites):
        await site.stop()
    grace_ends = started + min(IDLE_GRACE, timeout)
    while (metrics.STATS.in_flight > 0 or loop.time() < grace_ends) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle connections close now; busy ones after their response
    while metrics.STATS.in_flight > 0 and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if metrics.STATS.in_flight > 0:
        log().warning("shutdown_timeout_reached", extra={"fields": {"in_flight": metrics.STATS.in_flight}})
    await runner.cleanup()


async def _write_snapshots(directory: str) -> None:
    name = f"worker-{os.getpid()}"
    while True:
        try:
            metrics.write_snapshot(directory, name)
        except OSError as exc:
            log().warning("metrics_snapshot_failed", extra={"fields": {"error": exc.strerror or str(exc)}})
        await asyncio.sleep(SNAPSHOT_INTERVAL)


async def _report_when_ready(readiness: Readiness, status_fd: int) -> None:
    """A worker is ready for its supervisor only once everything it needs has loaded
    (the provider's keys, under sign-in), not merely once it listens."""
    await readiness.wait()
    _report(status_fd, STATUS_READY)


def _report(status_fd: int | None, status: bytes) -> None:
    if status_fd is None:
        return
    try:
        os.write(status_fd, status)
    except OSError:  # the supervisor is gone; keep serving what is in flight
        pass
