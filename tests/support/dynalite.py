"""npm dynalite (a DynamoDB-compatible server, in memory) for tests."""

from __future__ import annotations

import subprocess

from tests.support.processes import ROOT, LoopbackServer


class Dynalite(LoopbackServer):
    def __init__(self) -> None:
        binary = str(ROOT / "node_modules" / ".bin" / "dynalite")
        super().__init__(
            lambda port: [binary, "--port", str(port), "--host", "127.0.0.1", "--createTableMs", "50"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
