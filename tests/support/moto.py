"""moto_server (the AWS API in a process) for tests: Cognito user pools now, DynamoDB later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import child_env, free_port, wait_for_port


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        moto = Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
