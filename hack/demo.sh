#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: build virtkube, start the
# server, and show the cluster it brings. The server keeps running in the
# foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
export PATH="$PATH:/usr/local/go/bin"
make build

data_dir=${VIRTKUBE_DATA_DIR:-$PWD/.virtkube}
mkdir -p "$data_dir"
log="$data_dir/virtkube.log"
ready="$data_dir/ready.out"
: >"$ready"
echo "starting: bin/virtkube server --data-dir $data_dir   (log: $log)"
bin/virtkube server --data-dir "$data_dir" >"$ready" 2>>"$log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server' INT TERM EXIT

for _ in $(seq 1 600); do
	grep -q "virtkube is ready" "$ready" && break
	kill -0 $server 2>/dev/null || { echo "virtkube server exited; last log lines:"; tail -30 "$log"; exit 1; }
	sleep 0.2
done
cat "$ready"
export KUBECONFIG="$data_dir/kubeconfig"
echo "\$ kubectl get nodes,crds"
bin/kubectl get nodes,crds
echo "\$ kubectl get kubevirt -n kubevirt"
bin/kubectl get kubevirt -n kubevirt
echo
echo "virtkube is running. In another shell: export KUBECONFIG=$KUBECONFIG; $PWD/bin/kubectl get nodes"
echo "Ctrl-C stops it; its state stays in $data_dir."
wait $server
