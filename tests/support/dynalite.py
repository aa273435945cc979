"""npm dynalite (a DynamoDB-compatible server) for tests: in memory, or on disk with ``path``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.processes import ROOT, LoopbackServer


class Dynalite(LoopbackServer):
    def __init__(self, path: Path | None = None, port: int | None = None) -> None:
        binary = str(ROOT / "node_modules" / ".bin" / "dynalite")
        storage = ["--path", str(path)] if path is not None else []
        super().__init__(
            lambda port: [binary, "--port", str(port), "--host", "127.0.0.1", "--createTableMs", "50", *storage],
            port=port,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
