"""Podman for tests: the repo's image built and run with the tests' own podman setup.

API (other test modules import these; keep them stable):

``podman_env() -> dict[str, str]``
    ``os.environ`` plus ``CONTAINERS_CONF`` and ``CONTAINERS_STORAGE_CONF`` naming files
    under the tests' cache directory (runc, cgroupfs, no default ulimits; overlay storage
    with its own graphroot and runroot). The system's podman configuration and storage are
    never read or written. Pass it as ``env=`` to ``podman-compose`` or anything else that
    runs podman: they inherit the configuration from the environment.
``podman(*args, check=True, timeout=600, input=None) -> subprocess.CompletedProcess``
    Runs ``podman ARGS`` with that environment, text output captured.
``ensure_base_image() -> str``
    Makes sure ``docker.io/library/debian:bookworm-slim`` is in the tests' storage (there
    is no container registry here): a ``debootstrap --variant=minbase`` of bookworm, slimmed
    like the published image, then ``podman import``. About 30 s once; cached afterwards.
``authproxy_image() -> str``
    Builds the repo's Dockerfile once per test session (layer cache kept in the tests'
    storage) and returns its tag, ``localhost/authproxy:test``.
``require_podman() -> None``
    Fails the calling test (never skips it) with a clear message when podman, runc or
    debootstrap is missing: a skipped container test must not pass for a green run.
``run_container(*args, name=None) -> Container``
    ``podman run -d --network host ARGS`` (loopback traffic only; use free ports from
    tests/support/processes.py). ``Container`` has ``id``, ``logs()``, ``state()`` (podman
    inspect's State), ``exec(*args)``, ``wait()`` and ``remove()``. ``cleanup_containers()``
    removes every container this process started (call it from a fixture's teardown);
    containers left by a killed test process are removed on the next ``run_container``.
    Containers started another way (podman-compose, kube play) are the caller's to remove.

After each build, untagged images in the tests' storage are pruned (the build's own
stages are tagged ``localhost/authproxy-build-cache:*`` to keep the layer cache): tag any
image of your own that you want to keep.

The cache directory is ``$AUTHPROXY_TEST_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/authproxy-tests``;
podman's files live in its ``podman/`` subdirectory. Parallel callers (pytest-xdist workers,
several sessions) serialise the one-off steps with file locks.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import ROOT

BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
IMAGE_TAG = "localhost/authproxy:test"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_CONTAINER_CA = "/run/host-ca/ca-certificates.crt"  # where builds see the host's bundle
_CACHE_REPO = "localhost/authproxy-build-cache"
_CACHED_STAGES = ("builder", "venv", "app")  # the stages under the final image, kept for the next build

_image: str | None = None  # built once per session (per process; the file lock covers the rest)
_started: list[str] = []  # container ids this process started, for cleanup_containers()


def cache_dir() -> Path:
    explicit = os.environ.get("AUTHPROXY_TEST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "authproxy-tests"


def _podman_dir() -> Path:
    directory = cache_dir() / "podman"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, path)


def podman_env() -> dict[str, str]:
    directory = _podman_dir()
    containers_conf = directory / "containers.conf"
    storage_conf = directory / "storage.conf"
    # default_ulimits: raising RLIMIT_NOFILE is not permitted on these machines.
    # runc: crun refuses the hybrid cgroup layout here. tmp_dir/static_dir: podman's own
    # state next to our storage, so nothing is shared with the system's podman.
    _write_if_changed(
        containers_conf,
        "[containers]\n"
        "default_ulimits = []\n"
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{directory / "events.log"}"\n'
        f'tmp_dir = "{directory / "run" / "libpod"}"\n'
        f'static_dir = "{directory / "storage" / "libpod"}"\n'
        f'volume_path = "{directory / "storage" / "volumes"}"\n',
    )
    _write_if_changed(
        storage_conf,
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{directory / "storage"}"\n'
        f'runroot = "{directory / "run"}"\n',
    )
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(containers_conf)
    env["CONTAINERS_STORAGE_CONF"] = str(storage_conf)
    # a containers.conf in the user's home would be read on top of ours
    env.pop("CONTAINERS_CONF_OVERRIDE", None)
    return env


def podman(*args: str, check: bool = True, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout, input=input
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"podman {' '.join(args)} exited with {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def require_podman() -> None:
    import pytest

    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: the container tests need Debian's podman, runc and "
            "debootstrap (`make setup` installs them, or apt-get install -y podman runc debootstrap)",
            pytrace=False,
        )


@contextmanager
def _locked(name: str) -> Iterator[None]:
    with open(_podman_dir() / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the base image ------------------------------------------------------------------

def _apt_mirrors() -> tuple[str, str]:
    """The Debian archive and security URIs this machine's apt uses (deb822 or one-line)."""
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if path.is_file() and path.suffix in (".list", ".sources", ""):
            texts.append(path.read_text(errors="replace"))
    uris = re.findall(r"^URIs:\s*(\S+)", "\n".join(texts), re.M)
    uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm", "\n".join(texts), re.M)
    archive = next((u for u in uris if u.rstrip("/").endswith("/debian")), "http://deb.debian.org/debian")
    security = next((u for u in uris if "security" in u), "http://deb.debian.org/debian-security")
    return archive.rstrip("/"), security.rstrip("/")


# What the published slim image has (debuerreotype's --slimify and its apt settings).
_DPKG_EXCLUDES = """\
# This is the "slim" variant of the Debian base image.
# Many files which are normally unnecessary in containers are excluded,
# and this configuration file keeps them that way.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""
_APT_CONF = {
    "docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
        '/var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
        '/var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    ),
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-no-languages": 'Acquire::Languages "none";\n',
}


def _slim(root: Path, archive: str, security: str) -> None:
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*", "var/cache/apt/*.bin",
                    "var/lib/apt/lists/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
                    "usr/share/groff/*", "usr/share/lintian/overrides/*", "var/log/*.log", "var/log/apt/*"):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != "lock":
                path.unlink()
    for doc in (root / "usr/share/doc").glob("*"):
        if doc.is_dir() and not doc.is_symlink():
            for path in doc.iterdir():
                if path.name != "copyright":
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    (root / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/dpkg/dpkg.cfg.d/docker").write_text(_DPKG_EXCLUDES)
    for name, text in _APT_CONF.items():
        (root / "etc/apt/apt.conf.d" / name).write_text(text)
    # The published image's sources: the release, its updates and security.
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {archive}\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {security}\nSuites: bookworm-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    (root / "etc/hostname").write_text("")
    (root / "etc/machine-id").write_text("")  # each container gets its own


def _unmount_below(root: Path) -> None:
    """debootstrap mounts /proc and /sys in the target; an interrupted run leaves them."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def ensure_base_image() -> str:
    require_podman()
    with _locked("base-image"):
        if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
            return BASE_IMAGE
        archive, security = _apt_mirrors()
        work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=_podman_dir()))
        root = work / "rootfs"
        try:
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(root), archive],
                capture_output=True, text=True, timeout=900,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"debootstrap failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                )
            _unmount_below(root)
            _slim(root, archive, security)
            tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(
                ["podman", "import", "--change", 'CMD ["bash"]', "-", BASE_IMAGE],
                stdin=tar.stdout, env=podman_env(), capture_output=True, text=True, timeout=600,
            )
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0 or imported.returncode != 0:
                raise RuntimeError(f"podman import failed:\n{imported.stderr[-3000:]}")
        finally:
            _unmount_below(root)
            shutil.rmtree(work, ignore_errors=True)
        return BASE_IMAGE


# --- the authproxy image -------------------------------------------------------------

def _pip_conf() -> Path:
    """pip inside the build verifies TLS against this machine's CA bundle, mounted read-only.
    Only the bundle: this machine's other pip settings (local wheel directories) are not
    needed to reach PyPI and would not exist inside the build."""
    path = _podman_dir() / "build-pip.conf"
    _write_if_changed(path, f"[global]\ncert = {_CONTAINER_CA}\n")
    return path


def build_image(tag: str = IMAGE_TAG, *, extra: tuple[str, ...] = ()) -> str:
    """``podman build`` of the repo's Dockerfile (no session cache; authproxy_image() has one)."""
    from authproxy import __version__

    ensure_base_image()
    common = ["build", "--network", "host", "--layers", "--force-rm",
              "--build-arg", f"VERSION={__version__}",
              "-v", f"{HOST_CA_BUNDLE}:{_CONTAINER_CA}:ro", "-v", f"{_pip_conf()}:/etc/pip.conf:ro",
              "-f", str(ROOT / "Dockerfile"), *extra]
    with _locked("build"):
        podman(*common, "-t", tag, str(ROOT), timeout=1800)
        # Every build with changed code leaves the previous image and app stage behind,
        # untagged. Tag the stages worth caching (all already built by now,
        # so this takes a second), then prune the untagged rest: storage stays bounded and
        # the next build still starts from the cached dependencies.
        for stage in _CACHED_STAGES:
            podman(*common, "--target", stage, "-t", f"{_CACHE_REPO}:{stage}", str(ROOT), timeout=600)
        podman("image", "prune", "-f", check=False)
    return tag


def authproxy_image() -> str:
    global _image
    if _image is None:
        _image = build_image()
    return _image


# --- running containers ----------------------------------------------------------------

class Container:
    def __init__(self, container_id: str):
        self.id = container_id

    def logs(self) -> str:
        result = podman("logs", self.id, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict:
        import json

        return json.loads(podman("inspect", "--format", "{{json .State}}", self.id).stdout)

    def exec(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return podman("exec", self.id, *args, check=check, timeout=timeout)

    def wait(self, timeout: float = 60) -> int:
        return int(podman("wait", self.id, timeout=timeout).stdout.strip().splitlines()[-1])

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.id, check=False, timeout=120)
        if self.id in _started:
            _started.remove(self.id)


_OWNER_LABEL = "authproxy-tests.owner"
_stale_removed = False


def _remove_stale_containers() -> None:
    """Containers left by a test process that was killed (its pid is gone) would keep
    serving on their loopback ports: remove them before starting new ones."""
    listed = podman("ps", "-a", "--filter", f"label={_OWNER_LABEL}",
                    "--format", "{{.ID}} {{index .Labels \"%s\"}}" % _OWNER_LABEL, check=False)
    for line in listed.stdout.splitlines():
        container_id, _, owner = line.partition(" ")
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            podman("rm", "-f", "-t", "0", container_id, check=False)


def run_container(*args: str, name: str | None = None) -> Container:
    """``podman run -d --network host ARGS``: all traffic stays on 127.0.0.1."""
    global _stale_removed
    require_podman()
    if not _stale_removed:
        _remove_stale_containers()
        _stale_removed = True
    naming = ["--name", name] if name else []
    container_id = podman("run", "-d", "--network", "host", "--label", f"{_OWNER_LABEL}={os.getpid()}", *naming, *args,
                          timeout=120).stdout.strip().splitlines()[-1]
    _started.append(container_id)
    return Container(container_id)


def cleanup_containers() -> None:
    for container_id in list(_started):
        Container(container_id).remove()
