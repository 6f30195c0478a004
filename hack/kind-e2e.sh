#!/usr/bin/env bash
# make kind-e2e: the chart and the image on a kind cluster, then the e2e tests against it.
#
#   1. kind cluster (reused when it exists), 2. docker build + kind load docker-image,
#   3. a Temporal dev server in the cluster, 4. helm install of charts/nicotask with that
#   image, waiting until operator, worker and shim are Ready (image, probes, RBAC, Temporal),
#   5. `kubectl nico` smoke against the cluster, 6. the e2e tests with KUBECONFIG from kind
#   and Temporal through a port-forward. The e2e tests start their own operator and worker
#   (next to the emulated BMCs), so the chart's operator and worker are scaled to 0 first.
#
# Needs docker and kind on PATH and `make venv`. KEEP_CLUSTER=1 keeps the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-nicotask-e2e}
IMAGE_REPO=${IMAGE_REPO:-nicotask}
IMAGE_TAG=${IMAGE_TAG:-e2e}
NAMESPACE=${NAMESPACE:-nicotask-system}
TEMPORAL_IMAGE=${TEMPORAL_IMAGE:-temporalio/temporal:latest}
TEMPORAL_PORT=${TEMPORAL_PORT:-17233}
BIN=.venv/bin

for tool in docker kind; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is not on PATH" >&2; exit 2; }
done
[ -x "$BIN/python" ] || { echo "kind-e2e: run 'make venv' first" >&2; exit 2; }
HELM=$("$BIN/python" -m nicotask_dev.devenv.helm)
KUBECTL=$BIN/kubectl

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 180s
fi
KUBECONFIG=$(mktemp -t "kind-$CLUSTER.XXXXXX")
export KUBECONFIG
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

PF_PID=""
cleanup() {
  [ -n "$PF_PID" ] && kill "$PF_PID" 2>/dev/null || true
  [ "${KEEP_CLUSTER:-0}" = 1 ] || kind delete cluster --name "$CLUSTER"
  rm -f "$KUBECONFIG"
}
trap cleanup EXIT

docker build -t "$IMAGE_REPO:$IMAGE_TAG" .
kind load docker-image "$IMAGE_REPO:$IMAGE_TAG" --name "$CLUSTER"

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
          args: [server, start-dev, --ip, 0.0.0.0, --namespace, default]
          ports: [{containerPort: 7233, name: grpc}]
          readinessProbe: {tcpSocket: {port: grpc}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: temporal}
spec:
  selector: {app: temporal}
  ports: [{name: grpc, port: 7233, targetPort: grpc}]
YAML
"$KUBECTL" -n temporal rollout status deployment/temporal --timeout=300s

"$HELM" upgrade --install nicotask charts/nicotask -n "$NAMESPACE" --create-namespace \
  --set image.repository="$IMAGE_REPO" --set image.tag="$IMAGE_TAG" --set image.pullPolicy=Never \
  --set temporal.address=temporal.temporal.svc.cluster.local:7233 \
  --set operator.replicas=2 --wait --timeout 5m
"$KUBECTL" apply --server-side -f charts/nicotask/crds/
for component in operator worker shim; do
  "$KUBECTL" -n "$NAMESPACE" rollout status "deployment/nicotask-$component" --timeout=180s
done
PATH="$PWD/$BIN:$PATH" "$KUBECTL" nico report does-not-exist -n default 2>&1 \
  | grep -q 'not found' || { echo "kind-e2e: kubectl nico smoke failed" >&2; exit 1; }

# The e2e suite runs its own operator and worker next to the emulated BMCs.
"$KUBECTL" -n "$NAMESPACE" scale deployment/nicotask-operator deployment/nicotask-worker --replicas=0

"$KUBECTL" -n temporal port-forward service/temporal "$TEMPORAL_PORT:7233" >/dev/null &
PF_PID=$!
for _ in $(seq 1 30); do
  (exec 3<>"/dev/tcp/127.0.0.1/$TEMPORAL_PORT") 2>/dev/null && break
  sleep 1
done

NICOTASK_USE_EXISTING_CLUSTER=1 \
NICOTASK_TEMPORAL_ADDRESS="127.0.0.1:$TEMPORAL_PORT" \
  "$BIN/pytest" tests/e2e -q "$@"
