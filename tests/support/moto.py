"""moto_server (the AWS API in a process) for tests: Cognito user pools now, DynamoDB later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import LoopbackServer


class MotoServer(LoopbackServer):
    def __init__(self) -> None:
        moto = str(Path(sys.executable).with_name("moto_server"))
        super().__init__(
            lambda port: [moto, "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
