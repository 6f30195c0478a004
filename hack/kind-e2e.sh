#!/usr/bin/env bash
# make kind-e2e: the chart and the image on a kind cluster, then the e2e tests against it.
#
#   1. kind cluster (reused when it exists), 2. the nicotask image loaded into it,
#   3. a Temporal dev server in the cluster, 4. tests/kind: helm install of charts/nicotask
#   (two operator replicas), operator, worker and shim Ready, a cancel through the shim's
#   Service by its cluster DNS name from a pod, `helm test`, 5. `kubectl nico` smoke,
#   6. the e2e tests with KUBECONFIG from kind and Temporal through a port-forward. The e2e
#   tests start their own operator, worker and shim (next to the emulated BMCs), so the
#   release is uninstalled first (its CRDs stay).
#
# Two routes (docs/deploy.md, "Trying it on kind"); KIND_ROUTE=docker|podman picks one,
# otherwise docker when a Docker engine answers, else podman:
#   docker  kind's stock node image, `docker build`, Temporal from temporalio/temporal
#           (needs Docker and network access to the registries).
#   podman  offline, as root: KIND_EXPERIMENTAL_PROVIDER=podman, the node image the project
#           builds (python -m nicotask_dev.devenv.kindimage), the nicotask image and a
#           Temporal image (the dev environment's `temporal` CLI) built with podman;
#           NetworkPolicies enforced by kube-router's policy controller (kindnetpol).
#           Host settings it makes: /lib/modules is created when missing (kind mounts it;
#           removed again when it was created empty), podman gets its own containers.conf
#           through CONTAINERS_CONF for this script only (runc, ulimits under the host's).
#
# kind comes from PATH, else it is built once from the Go module proxy (kindtool.py).
# Needs `make venv`. KEEP_CLUSTER=1 keeps the cluster. Extra arguments go to the e2e pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-nicotask-e2e}
NAMESPACE=${NAMESPACE:-nicotask-system}
TEMPORAL_PORT=${TEMPORAL_PORT:-17233}
BIN=.venv/bin
PY=$BIN/python
WORK=$PWD/.run/kind
mkdir -p "$WORK"

[ -x "$PY" ] || { echo "kind-e2e: run 'make venv' first" >&2; exit 2; }
HELM=$("$PY" -m nicotask_dev.devenv.helm)
KUBECTL=$BIN/kubectl
KIND=$(command -v kind || "$PY" -m nicotask_dev.devenv.kindtool)

ROUTE=${KIND_ROUTE:-}
if [ -z "$ROUTE" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ROUTE=docker; else ROUTE=podman; fi
fi
echo "=== kind-e2e: route $ROUTE ($KIND)"
phase() { echo "=== kind-e2e: $1 (${SECONDS}s)"; }

MADE_MODULES=0
CREATE_ARGS=()
if [ "$ROUTE" = podman ]; then
  [ "$(id -u)" = 0 ] || { echo "kind-e2e: the podman route needs root (rootful podman)" >&2; exit 2; }
  export KIND_EXPERIMENTAL_PROVIDER=podman
  if [ ! -e /lib/modules ]; then mkdir -p /lib/modules; MADE_MODULES=1; fi
  cat >"$WORK/containers.conf" <<'CONF'
# kind-e2e (podman route): runc (crun fails on cgroup v1 hosts) and default ulimits
# below the host's hard limits (podman's defaults are refused where they are lower).
[containers]
default_ulimits = ["nofile=19999:19999", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF=$WORK/containers.conf
  phase "node image"
  NODE_IMAGE=$("$PY" -m nicotask_dev.devenv.kindimage)
  "$PY" -m nicotask_dev.devenv.kindimage --config >"$WORK/kind-config.yaml"
  CREATE_ARGS=(--image "$NODE_IMAGE" --config "$WORK/kind-config.yaml")
else
  command -v docker >/dev/null || { echo "kind-e2e: docker is not on PATH" >&2; exit 2; }
fi

PF_PID=""
KUBECONFIG=$WORK/kubeconfig-$CLUSTER
export KUBECONFIG
cleanup() {
  [ -n "$PF_PID" ] && kill "$PF_PID" 2>/dev/null || true
  [ "${KEEP_CLUSTER:-0}" = 1 ] || "$KIND" delete cluster --name "$CLUSTER" || true
  [ "$MADE_MODULES" = 1 ] && rmdir /lib/modules 2>/dev/null || true
  [ "${KEEP_CLUSTER:-0}" = 1 ] || rm -f "$KUBECONFIG"
}
trap cleanup EXIT

if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  phase "kind create cluster"
  created=$SECONDS
  "$KIND" create cluster --name "$CLUSTER" "${CREATE_ARGS[@]}" --wait 240s
  echo "=== kind-e2e: cluster created in $((SECONDS - created))s"
fi
"$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
"$KUBECTL" wait --for=condition=Ready node --all --timeout=120s
"$KUBECTL" get nodes -o wide

if [ "$ROUTE" = podman ]; then
  # The static CNI config enforces no NetworkPolicy: kube-router's policy controller
  # (its image is in the node image) does, before the chart's policies exist.
  phase "NetworkPolicy enforcer (kube-router)"
  "$PY" -m nicotask_dev.devenv.kindnetpol --manifest | "$KUBECTL" apply -f -
  "$KUBECTL" -n kube-system rollout status daemonset/kube-router --timeout=120s
fi

phase "images"
if [ "$ROUTE" = podman ]; then
  APP_IMAGE=$("$PY" -m nicotask_dev.devenv.image)
  TEMPORAL_IMAGE=$("$PY" -m nicotask_dev.devenv.kindtemporal)
  for tag in "$APP_IMAGE" "$TEMPORAL_IMAGE"; do
    archive=$WORK/$(echo "$tag" | tr '/:' '__').tar
    podman save --format docker-archive -o "$archive" "$tag"
    "$KIND" load image-archive "$archive" --name "$CLUSTER"
    rm -f "$archive"
  done
else
  APP_IMAGE=${IMAGE_REPO:-nicotask}:${IMAGE_TAG:-e2e}
  TEMPORAL_IMAGE=${TEMPORAL_IMAGE:-temporalio/temporal:latest}
  docker build -t "$APP_IMAGE" .
  "$KIND" load docker-image "$APP_IMAGE" --name "$CLUSTER"
fi

phase "Temporal in the cluster"
"$KUBECTL" create namespace temporal --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" apply -n temporal -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: temporal}
spec:
  replicas: 1
  selector: {matchLabels: {app: temporal}}
  template:
    metadata: {labels: {app: temporal}}
    spec:
      containers:
        - name: temporal
          image: $TEMPORAL_IMAGE
          args: [server, start-dev, --ip, 0.0.0.0, --namespace, default, --headless]
          ports: [{containerPort: 7233, name: grpc}]
          readinessProbe: {tcpSocket: {port: grpc}, periodSeconds: 2}
          volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: temporal}
spec:
  selector: {app: temporal}
  ports: [{name: grpc, port: 7233, targetPort: grpc}]
YAML
"$KUBECTL" -n temporal rollout status deployment/temporal --timeout=300s

phase "chart on the cluster (tests/kind)"
NICOTASK_KIND_IMAGE=$APP_IMAGE NICOTASK_KIND_NAMESPACE=$NAMESPACE \
NICOTASK_KIND_TEMPORAL=temporal.temporal.svc.cluster.local:7233 NICOTASK_KIND_WORK=$WORK \
  "$BIN/pytest" tests/kind -q -rA -p no:cacheprovider  # -rA: each check by name in the log (helm test, policies)
# (It exits non-zero for a missing task; with pipefail a pipe into grep would fail too.)
smoke=$(PATH="$PWD/$BIN:$PATH" "$KUBECTL" nico report does-not-exist -n default 2>&1 || true)
grep -q 'not found' <<<"$smoke" || { echo "kind-e2e: kubectl nico smoke failed: $smoke" >&2; exit 1; }

# The e2e suite runs its own operator, worker and shim next to the emulated BMCs: the
# release goes (in the documented order: tasks first, while its operator still removes
# their finalizers), its CRDs stay; the suite installs its own admission policy.
"$KUBECTL" delete nicotasks --all -A --wait --timeout=90s
"$HELM" uninstall nicotask -n "$NAMESPACE" --wait --timeout 3m

"$KUBECTL" -n temporal port-forward service/temporal "$TEMPORAL_PORT:7233" >/dev/null &
PF_PID=$!
for _ in $(seq 1 30); do
  (exec 3<>"/dev/tcp/127.0.0.1/$TEMPORAL_PORT") 2>/dev/null && break
  sleep 1
done

phase "e2e tests against the cluster"
NICOTASK_USE_EXISTING_CLUSTER=1 \
NICOTASK_TEMPORAL_ADDRESS="127.0.0.1:$TEMPORAL_PORT" \
  "$BIN/pytest" tests/e2e -q -m "not slow" "$@"
phase "done"
