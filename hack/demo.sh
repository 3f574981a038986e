#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: build virtkube, start the
# server, boot the seed walkthrough's VMI (testvmi-nocloud2) with the test
# guest as its containerDisk, wait until it runs and show its console. The
# server keeps running in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
export PATH="$PATH:/usr/local/go/bin"
make build

data_dir=${VIRTKUBE_DATA_DIR:-$PWD/.virtkube}
mkdir -p "$data_dir"
log="$data_dir/virtkube.log"

# The guest: built from Debian packages, served as a containerDisk by a real
# OCI registry on loopback (Debian's docker-registry).
hack/test-guest/build.sh _output/test-guest >/dev/null
if ! command -v docker-registry >/dev/null; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
fi
registry_port=${VIRTKUBE_REGISTRY_PORT:-5000}
mkdir -p "$data_dir/registry"
cat >"$data_dir/registry/config.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $data_dir/registry/data
http:
  addr: 127.0.0.1:$registry_port
YAML
docker-registry serve "$data_dir/registry/config.yml" >>"$data_dir/registry/registry.log" 2>&1 &
registry=$!
for _ in $(seq 1 100); do
	curl -fs "http://127.0.0.1:$registry_port/v2/" >/dev/null && break
	sleep 0.1
done
image=$(go run ./hack/push-containerdisk -registry "127.0.0.1:$registry_port" -repo virtkube/test-guest -tag latest _output/test-guest/disk.img)
echo "containerDisk pushed: $image"

ready="$data_dir/ready.out"
: >"$ready"
echo "starting: bin/virtkube server --data-dir $data_dir   (log: $log)"
bin/virtkube server --data-dir "$data_dir" >"$ready" 2>>"$log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server; kill $registry 2>/dev/null' INT TERM EXIT
for _ in $(seq 1 600); do
	grep -q "virtkube is ready" "$ready" && break
	kill -0 $server 2>/dev/null || { echo "virtkube server exited; last log lines:"; tail -30 "$log"; exit 1; }
	sleep 0.2
done
cat "$ready"
export KUBECONFIG="$data_dir/kubeconfig"
kubectl=bin/kubectl

echo "\$ kubectl get nodes,crds"
$kubectl get nodes,crds

# Without usable KVM (no /dev/kvm, or a nested PVM one), allow software
# emulation as KubeVirt's docs say: useEmulation in the KubeVirt CR.
if [ ! -e /dev/kvm ] || [ -d /sys/module/kvm_pvm ]; then
	echo "\$ kubectl patch kubevirt kubevirt -n kubevirt ... useEmulation: true   (no usable KVM here)"
	$kubectl patch kubevirt kubevirt -n kubevirt --type=merge \
		-p '{"spec":{"configuration":{"developerConfiguration":{"useEmulation":true}}}}'
fi

# The seed's VMI, image swapped for the test guest.
sed "s|kubevirt/fedora-cloud-container-disk-demo:latest|$image|; s|password: fedora|virtkube-marker: hello-from-the-seed|" \
	test/testdata/seed/testvmi-nocloud2.yaml >"$data_dir/testvmi-nocloud2.yaml"
echo "\$ kubectl apply -f testvmi-nocloud2.yaml"
$kubectl delete vmi testvmi-nocloud2 --ignore-not-found --wait=true >/dev/null
start=$(date +%s.%N)
$kubectl apply -f "$data_dir/testvmi-nocloud2.yaml"
$kubectl wait vmi testvmi-nocloud2 --for=condition=Ready --timeout=5m
echo "Ready after $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s (create to Ready, guest booting under the chosen accelerator)"
echo "\$ kubectl get vmi"
$kubectl get vmi
echo "\$ kubectl get pods -o wide"
$kubectl get pods -o wide

# The guest's serial console (kept in the launcher pod's sockets dir).
pod_uid=$($kubectl get pods -l kubevirt.io/domain=testvmi-nocloud2 -o jsonpath='{.items[0].metadata.uid}')
console="$data_dir/kubelet/pods/$pod_uid/volumes/kubernetes.io~empty-dir/sockets/serial0.log"
for _ in $(seq 1 600); do
	grep -q "VIRTKUBE-MARKER" "$console" 2>/dev/null && grep -q "GUEST-IP" "$console" 2>/dev/null && break
	sleep 0.2
done
echo "--- console of testvmi-nocloud2 ---"
tr -d '\r' <"$console" | grep -E "VIRTKUBE|USER-DATA|BLOCKDEV|GUEST-IP|CLOUD-INIT" || true
echo "-----------------------------------"

# The guest has the pod's IP (bridge binding, the default): its web server
# answers at the address kubectl shows.
ip=$($kubectl get vmi testvmi-nocloud2 -o jsonpath='{.status.interfaces[0].ipAddress}')
echo "\$ curl http://$ip/"
if exec 3<>"/dev/tcp/$ip/80"; then
	printf 'GET / HTTP/1.0\r\nHost: %s\r\n\r\n' "$ip" >&3
	sed -n '/^\r$/,$p' <&3 | tail -n +2
	exec 3<&-
fi
echo
echo "virtkube is running. In another shell: export KUBECONFIG=$KUBECONFIG; $PWD/bin/kubectl get vmi"
echo "Ctrl-C stops it; its state stays in $data_dir."
wait $server
