# authproxy container image.
#
#   podman build -t authproxy .            (or docker build)
#   podman run --read-only --tmpfs /tmp -v ./config.yaml:/etc/authproxy/config.yaml:ro \
#       -p 8080:8080 authproxy
#
# Runs as uid 65532 with a read-only root filesystem. authproxy writes only to its
# runtime_dir (default $TMPDIR = /tmp): with workers > 1, metrics snapshots and a copy of
# the last good config. Mount a tmpfs (Kubernetes: an emptyDir) there.

ARG DEBIAN_IMAGE=debian:bookworm-slim

# --- builder: a venv holding authproxy and its dependencies ----------------------------
FROM ${DEBIAN_IMAGE} AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# binutils: strip for the extension modules; the builder stage is thrown away.
# Debian versions are not pinned (DL3008): bookworm only takes fixes, and pinned versions
# disappear from the archive when a security update supersedes them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv binutils \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/authproxy

# Dependencies first (from pyproject.toml alone), so a change to the code reuses this layer.
# Binary wheels only: no compiler in the builder either.
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
 && /opt/authproxy/bin/pip install --only-binary=:all: -r /tmp/requirements.txt

# Trim what authproxy never loads. botocore ships every AWS service's models (25 MB);
# authproxy calls DynamoDB, and credential providers may call STS (web identity, IRSA)
# and SSO. boto3's resource models likewise. Then tests, C sources and stubs, and
# symbols of the extension modules. Bytecode is compiled here: the root is read-only at run time.
RUN site=$(/opt/authproxy/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && find "$site/botocore/data" -mindepth 1 -maxdepth 1 -type d \
        ! -name dynamodb ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} + \
 && find "$site/boto3/data" -mindepth 1 -maxdepth 1 -type d ! -name dynamodb -exec rm -rf {} + \
 && find "$site" -depth -type d \( -name tests -o -name test -o -name __pycache__ \) -exec rm -rf {} + \
 && find "$site" -name '*.so' -exec strip --strip-unneeded {} + \
 && find "$site" \( -name '*.pyi' -o -name '*.c' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.h' \) -delete \
 && /opt/authproxy/bin/python -m compileall -q -j 0 /opt/authproxy/lib

# --- app: the project itself, staged apart from the dependencies ----------------------
# Installed under /stage (same paths as in the venv), so a code change rebuilds and ships
# a layer of a few hundred kB, not the whole venv.
FROM builder AS app
COPY README.md ./
COPY authproxy ./authproxy
RUN /opt/authproxy/bin/pip install --no-deps --root /stage . \
 && find /stage -depth -type d -name __pycache__ -exec rm -rf {} + \
 && /opt/authproxy/bin/python -m compileall -q -j 0 -s /stage -p / /stage/opt/authproxy/lib

# --- venv: the dependencies without pip and setuptools (no installer at run time) ------
FROM builder AS venv
RUN /opt/authproxy/bin/pip uninstall -q -y pip setuptools \
 && rm -f /opt/authproxy/bin/activate* /opt/authproxy/bin/Activate.ps1

# --- runtime: Python, CA certificates and the venv --------------------------------------
FROM ${DEBIAN_IMAGE}

# python3-minimal + libpython3.11-stdlib: the interpreter and the standard library, without
# what the python3 package adds (pydoc, 2to3, idle's helpers). ca-certificates: TLS to the
# provider and AWS.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-minimal libpython3.11-stdlib ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log

COPY --from=venv /opt/authproxy /opt/authproxy
COPY --from=app /stage/ /

# TMPDIR: authproxy's runtime_dir default; mount a tmpfs/emptyDir at /tmp.
# Bytecode was compiled in the builder; nothing tries to write it under a read-only root.
ENV PATH=/opt/authproxy/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp

# Late, so a new version reuses every layer above.
ARG VERSION=dev
ARG SOURCE_URL=https://github.com/authproxy/authproxy
LABEL org.opencontainers.image.title="authproxy" \
      org.opencontainers.image.description="OIDC authentication proxy: code flow, server-side tokens, header injection per route" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["authproxy"]
CMD ["run", "--config", "/etc/authproxy/config.yaml"]
