"""Configuration reload: SIGHUP, and with ``reload: watch`` a change of the file.

A reload is atomic: the new file is read, validated and compiled completely, then
swapped in with one assignment. An invalid file, or one that changes what only a
restart can change, is refused with its errors logged and the old rules keep
serving. Requests already in flight finish under the rules they started with (each
holds its own reference), as nginx's old workers finish theirs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from collections.abc import Callable

from authproxy import metrics
from authproxy.config import parse_config
from authproxy.config.schema import Config
from authproxy.errors import ConfigError
from authproxy.logs import log

# What a running process cannot change: sockets, processes, the provider and session
# machinery built at start-up. Routes, trusted_proxies, assertion keys and the TLS
# certificate reload.
RESTART_KEYS = ("listen", "admin_listen", "workers", "public_url", "proxy_prefix", "oidc", "session", "store",
                "limits", "log", "shutdown_timeout", "reload", "runtime_dir", "tracing", "express_lane")
WATCH_INTERVAL = 1.0  # seconds between checks of the file under reload: watch


class Reloader:
    """``apply(config, text)`` receives the validated configuration and the exact text it
    came from (the supervisor hands that text on to its workers)."""

    def __init__(self, path: str, config: Config, apply: Callable[[Config, str], None], base_dir: str | None = None):
        self.path = path
        self.base_dir = base_dir  # where relative file names resolve (see load_config)
        self.config = config
        self._apply = apply
        self._fingerprint = _fingerprint(path)

    def reload(self, trigger: str) -> bool:
        """Load, check and apply the file; True when the new rules serve from now on."""
        try:
            text = Path(self.path).read_text(encoding="utf-8")
            config = parse_config(text, self.path, os.environ, self.base_dir)
        except ConfigError as exc:
            return self._refused(trigger, [issue.render(exc.filename) for issue in exc.issues])
        except (OSError, UnicodeDecodeError) as exc:
            return self._refused(trigger, [f"{self.path}: cannot read file ({type(exc).__name__})"])
        changed = [key for key in RESTART_KEYS if getattr(config, key) != getattr(self.config, key)]
        if (config.tls is None) != (self.config.tls is None):
            changed.append("tls (on or off)")  # a reload renews the certificate, it cannot add TLS
        if changed:
            return self._refused(trigger, [f"{', '.join(changed)} changed, which needs a restart"])
        try:
            self._apply(config, text)
        except Exception as exc:  # noqa: BLE001 - a reload must never take the serving process down
            return self._refused(trigger, [f"the new rules could not be compiled ({type(exc).__name__})"])
        self.config = config
        metrics.CONFIG_RELOADS.labels("success").inc()
        log().info("config_reloaded", extra={"fields": {"trigger": trigger, "routes": len(config.routes)}})
        return True

    @staticmethod
    def _refused(trigger: str, errors: list[str]) -> bool:
        metrics.CONFIG_RELOADS.labels("failure").inc()
        log().error("config_reload_failed", extra={"fields": {"trigger": trigger, "errors": errors}})
        return False

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Poll the file's content hash (editors and Kubernetes ConfigMaps replace files
        by rename, which inotify on the old inode would miss)."""
        while True:
            await asyncio.sleep(interval)
            fingerprint = _fingerprint(self.path)
            if fingerprint is not None and fingerprint != self._fingerprint:
                self._fingerprint = fingerprint
                self.reload("watch")


def _fingerprint(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return None


def on_signal_reload(reloader: Reloader | None) -> Callable[[], None]:
    def handle() -> None:
        if reloader is None:
            log().warning("sighup_ignored", extra={"fields": {"reason": "no configuration file to reload"}})
        else:
            reloader.reload("signal")

    return handle

