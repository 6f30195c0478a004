#!/usr/bin/env bash
# Build the nicotask image with podman (cached by content) and print its tag.
# Installs podman, runc and mmdebstrap with apt-get when missing (as root).
# Usage: hack/build-image.sh [--force]      (or: make image)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
# The image build is dev tooling (nicotask-dev, dev/); the image itself gets only the runtime wheel.
PYTHONPATH=dev${PYTHONPATH:+:$PYTHONPATH} exec "$PY" -m nicotask_dev.devenv.image "$@"
