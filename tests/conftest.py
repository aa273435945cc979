from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.processes import UpstreamProcess

# Nothing in the tests may probe a cloud metadata address or find real credentials.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamProcess]:
    server = UpstreamProcess()
    yield server
    server.stop()
