#!/usr/bin/env bash
# A first run on a fresh machine: build what is missing, start the local control plane,
# install the CRD, run the operator, apply the example Builder and show it Ready.
# With NODE=1 (root), a real node joins the cluster (hack/node.py) and the example Builder's
# daemons run there as real buildkitd containers, on the node's local volumes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cluster_dir=${CLUSTER_DIR:-$root/.local-cluster}
real_node=${NODE:-0}
say() { printf '\n==> %s\n' "$*" >&2; }

say "Python environment"
make -s venv

say "Local control plane (the first build of the Kubernetes binaries takes a while; progress follows)"
cluster_env=$(make -s cluster CLUSTER_DIR="$cluster_dir")
eval "$cluster_env"

if [ "$real_node" = 1 ]; then
  say "Real node (containerd, kubelet, kube-proxy; the first run builds them and the images)"
  make -s node CLUSTER_DIR="$cluster_dir" >/dev/null
fi

say "Builder CRD"
kubectl apply --server-side --field-manager=buildkit-operator-install -f crds/builders.buildkit.dev.yaml >&2
kubectl wait --for=condition=Established crd/builders.buildkit.dev --timeout=60s >&2

say "Operator (logs: $cluster_dir/operator.log)"
pidfile=$cluster_dir/operator.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "already running (pid $(cat "$pidfile"))" >&2
else
  nohup "$root/.venv/bin/buildkit-operator" run --all-namespaces \
    >"$cluster_dir/operator.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "started (pid $!)" >&2
fi

say "Example Builder (examples/builder.yaml)"
kubectl create namespace ci --dry-run=client -o yaml | kubectl apply -f - >&2
if [ "$real_node" = 1 ]; then
  # The same Builder, on the real node and its local volumes.
  "$root/.venv/bin/python" - examples/builder.yaml <<'PY' | kubectl apply -f - >&2
import sys, yaml
builder = yaml.safe_load(open(sys.argv[1]))
builder["spec"]["nodeSelector"]["buildkit-operator.dev/real-node"] = "true"
builder["spec"]["cache"]["storageClassName"] = "node-local"
print(yaml.safe_dump(builder))
PY
else
  kubectl apply -f examples/builder.yaml >&2
fi
if ! kubectl wait --for=jsonpath='{.status.phase}'=Ready builder/team-a -n ci --timeout=180s >&2; then
  echo "the Builder did not become Ready; its status and the operator log follow" >&2
  kubectl get builder team-a -n ci -o yaml >&2 || true
  tail -n 40 "$cluster_dir/operator.log" >&2 || true
  exit 1
fi
kubectl get bk -A
kubectl get deployments,pods,pvc,services,secrets,configmaps -n ci -l app.kubernetes.io/managed-by=buildkit-operator -o wide

cat >&2 <<MSG

The example Builder is Ready. To use this cluster from your shell:
  eval "\$(make -s cluster)"
  kubectl describe builder team-a -n ci
  buildkit-operator connect team-a -n ci      # writes the client certificate, prints buildctl/buildx commands
Stop everything with: make down
MSG
