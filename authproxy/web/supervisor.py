"""The supervisor for ``workers > 1``: N worker processes share the port (SO_REUSEPORT).

The supervisor binds no proxy socket itself. It starts the workers, restarts one
that dies (with backoff), forwards SIGTERM/SIGINT, and serves the admin listener:
/readyz is 200 when every running worker reports ready, /metrics is the sum over
workers (each writes a snapshot file once a second; see ``metrics.aggregate``).

Reload: workers read a private copy of the last configuration that validated. On
SIGHUP (or, with ``reload: watch``, a change of the file) the supervisor validates
the file first; only a good one replaces the copy, and then ready workers get SIGHUP
(under ``watch`` they notice the copy change). So a worker restarted after a refused
edit still starts with the last good rules, never with a broken file.
A worker that dies before it was ever ready means the configuration or the port
cannot work, so the supervisor stops everything and exits 1 instead of looping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from authproxy import metrics
from authproxy.config.schema import Config
from authproxy.logs import log
from authproxy.web.admin import admin_app
from authproxy.web.listener import SafeAppRunner
from authproxy.web.reload import Reloader
from authproxy.web.server import STATUS_READY, STATUS_STOPPING

_BACKOFF_START = 0.5
_BACKOFF_MAX = 30.0
_STABLE_AFTER = 30.0  # a worker that ran this long resets the backoff


class Worker:
    """One worker slot: the current process for it and what it last reported."""

    def __init__(self, index: int):
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.state = "starting"
        self.ever_ready = False
        self.restarts = 0
        self.status_reader: asyncio.Task[None] | None = None  # held so the task is not garbage-collected


class Supervisor:
    def __init__(self, config: Config, config_path: str, count: int):
        self.config = config
        self.config_path = config_path
        self.workers = [Worker(index) for index in range(count)]
        self.stopping = False
        self.exit_code = 0
        self._stop = asyncio.Event()
        runtime_dir = config.runtime_dir  # None: tempfile's default ($TMPDIR, else /tmp)
        self._metrics_dir = tempfile.mkdtemp(prefix="authproxy-metrics-", dir=runtime_dir)
        # The last good configuration text, which workers read (see the module docstring).
        self._state_dir = tempfile.mkdtemp(prefix="authproxy-config-", dir=runtime_dir)
        self._good_config = os.path.join(self._state_dir, os.path.basename(config_path))
        shutil.copyfile(config_path, self._good_config)
        self._reloader = Reloader(config_path, config, self._accept_reload)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._reload("signal"))
        watching = asyncio.create_task(self._reloader.watch()) if self.config.reload == "watch" else None
        admin_runner = SafeAppRunner(admin_app(self.readiness, self.exposition), access_log=None)
        try:
            await admin_runner.setup()
            admin = self.config.admin_listen
            try:
                await web.TCPSite(admin_runner, admin.host, admin.port, backlog=128).start()
            except OSError as exc:
                log().error("listen_failed", extra={"fields": {"address": str(admin), "error": exc.strerror or str(exc)}})
                return 1
            log().info("supervisor_started", extra={"fields": {"workers": len(self.workers), "pid": os.getpid()}})
            tasks = [asyncio.create_task(self._keep_running(worker)) for worker in self.workers]
            await self._stop.wait()
            await self._shutdown()
            await asyncio.gather(*tasks, return_exceptions=True)
            log().info("supervisor_stopped", extra={"fields": {"exit_code": self.exit_code}})
            return self.exit_code
        finally:
            if watching is not None:
                watching.cancel()
            await admin_runner.cleanup()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            shutil.rmtree(self._state_dir, ignore_errors=True)

    # --- admin views -------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, object]]:
        states = {str(worker.index): worker.state for worker in self.workers}
        ready = not self.stopping and all(state == "ready" for state in states.values())
        return ready, {"workers": states}

    def exposition(self) -> bytes:
        live = {str(w.process.pid) for w in self.workers if w.process is not None and w.process.returncode is None}
        snapshots = []
        for path in sorted(Path(self._metrics_dir).glob("*.prom")):  # workers', and supervisor.prom
            try:
                text = path.read_text()
            except OSError:
                continue
            snapshots.append((text, path.stem.removeprefix("worker-") in live))
        return metrics.aggregate(snapshots)

    # --- worker lifecycle --------------------------------------------------------

    async def _keep_running(self, worker: Worker) -> None:
        backoff = _BACKOFF_START
        while not self.stopping:
            started = time.monotonic()
            process = await self._spawn(worker)
            if self.stopping:  # the stop signal arrived while this worker was being started
                _signal(process, signal.SIGTERM)
            code = await process.wait()
            worker.state = "exited"
            if self.stopping:
                return
            if not worker.ever_ready:
                log().error("worker_failed_to_start", extra={"fields": {"worker": worker.index, "exit_code": code}})
                self.exit_code = 1
                self._stop.set()
                return
            backoff = _BACKOFF_START if time.monotonic() - started > _STABLE_AFTER else min(backoff * 2, _BACKOFF_MAX)
            worker.restarts += 1
            log().error(
                "worker_exited",
                extra={"fields": {"worker": worker.index, "exit_code": code, "restart_in_s": backoff}},
            )
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=backoff)
            except asyncio.TimeoutError:
                pass

    async def _spawn(self, worker: Worker) -> asyncio.subprocess.Process:
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "authproxy", "worker",
                "--config", self._good_config,
                # the copy lives elsewhere: file names in it resolve next to the original
                "--config-dir", os.path.dirname(os.path.abspath(self.config_path)),
                "--status-fd", str(write_fd),
                "--metrics-dir", self._metrics_dir,
                "--supervisor-pid", str(os.getpid()),
                pass_fds=(write_fd,),
                stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            os.close(write_fd)
        worker.process = process
        worker.state = "starting"
        worker.status_reader = asyncio.create_task(self._read_status(worker, process, read_fd))
        return process

    async def _read_status(self, worker: Worker, process: asyncio.subprocess.Process, read_fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        try:
            while True:
                line = await reader.readline()
                if not line or worker.process is not process:
                    return
                if line == STATUS_READY:
                    worker.state = "ready"
                    worker.ever_ready = True
                elif line == STATUS_STOPPING:
                    worker.state = "stopping"
        finally:
            transport.close()

    async def _shutdown(self) -> None:
        self.stopping = True
        running = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        for process in running:
            _signal(process, signal.SIGTERM)
        # A worker drains for shutdown_timeout, then needs a moment to close and write metrics.
        grace = self.config.shutdown_timeout + 10.0
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), timeout=grace)
        except asyncio.TimeoutError:
            for process in running:
                if process.returncode is None:
                    log().error("worker_killed", extra={"fields": {"pid": process.pid, "after_s": grace}})
                    _signal(process, signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in running))

    def _reload(self, trigger: str) -> None:
        self._reloader.reload(trigger)
        self._write_reload_counts()

    def _accept_reload(self, config: Config, text: str) -> None:
        """A file that validated: it becomes the workers' copy, then they reload it."""
        aside = self._good_config + ".new"
        with open(aside, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(aside, self._good_config)
        self.config = config
        if config.reload == "watch":
            return  # the workers watch their copy
        for worker in self.workers:
            # Only ready workers: one still starting would die of SIGHUP's default action,
            # and it reads the new copy anyway.
            if worker.state == "ready" and worker.process is not None and worker.process.returncode is None:
                _signal(worker.process, signal.SIGHUP)

    def _write_reload_counts(self) -> None:
        """Refused reloads happen here, not in a worker: they join the summed metrics
        through a snapshot of their own (workers count the reloads they apply)."""
        # Named and typed exactly as a worker's exposition names the family (prometheus_client
        # writes counters' HELP/TYPE with _total), or the sum holds two families for one name
        # and Prometheus keeps the worker's zero.
        failures = metrics.CONFIG_RELOADS.labels("failure")._value.get()
        text = (
            "# HELP authproxy_config_reloads_total Configuration reloads, by result (success, failure).\n"
            "# TYPE authproxy_config_reloads_total counter\n"
            f'authproxy_config_reloads_total{{result="failure"}} {failures}\n'
        )
        metrics.write_snapshot(self._metrics_dir, "supervisor", text.encode())


def _signal(process: asyncio.subprocess.Process, signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass
