# syntax=docker/dockerfile:1
# One image, three commands: `operator`, `worker`, `shim` (ENTRYPOINT is `nicotask`).
#   docker build -t ghcr.io/nicotask/nicotask:0.1.0 .
#   docker run --rm ghcr.io/nicotask/nicotask:0.1.0 operator
# Runs as UID 10001 and works with a read-only root filesystem (writable /tmp).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a wheel of nicotask (the runtime package, operator/; not the dev tooling in
#      dev/), installed with its dependencies into /opt/nicotask. Every package comes from
#      the lock files (requirements/*.txt, `make lock`), pinned and hash-checked: one commit,
#      one set of packages.
FROM ${PYTHON_IMAGE} AS build
# A package index mirror, if the build host uses one (empty: PyPI).
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies first, in their own layer: a change to the code alone reuses it.
# Runtime dependencies only (nicotask[server], no [dev] extras). An optional build secret
# `pip-cert` is the CA bundle of a TLS-intercepting mirror or proxy (hack/build-image.sh
# passes the host's).
COPY requirements/build.txt requirements/runtime.txt ./requirements/
RUN --mount=type=secret,id=pip-cert,required=false \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes -r requirements/build.txt \
 && python -m venv /opt/nicotask \
 && /opt/nicotask/bin/pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY operator ./operator
# The wheel is built with the locked build backend, and installed without resolving again.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/nicotask/bin/pip install --no-deps /wheels/*.whl \
 && /opt/nicotask/bin/pip uninstall -y -q pip setuptools \
 && /opt/nicotask/bin/python -m compileall -q /opt/nicotask

# ---- runtime: the same Python, the venv, no build tools, non-root
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/nicotask/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 nicotask \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin nicotask
COPY --from=build /opt/nicotask /opt/nicotask
USER 10001:10001
WORKDIR /tmp
# operator /healthz, worker /healthz, shim API (and its /metrics), operator /metrics,
# worker /metrics: the defaults of the NICOTASK_*_PORT settings and of the chart
EXPOSE 8080 8081 8088 9090 9091
ENTRYPOINT ["nicotask"]
CMD ["--help"]
