#!/usr/bin/env bash
# Storage figures of issue 7 against a running `virtkube server` (a
# measurement, not a test): upload of an image through the upload proxy
# beside `dd` of the same file to the same disk, an http import beside `curl`
# of the same file, and a VM with a blank DataVolume from create to Running.
#
#   [BRIDGE=virtkube0] hack/bench-storage.sh DATA_DIR [SIZE_MIB] [BLANK_SIZE]
#
# DATA_DIR is the server's --data-dir (its kubeconfig and hostpath pool live
# there); SIZE_MIB defaults to 2048, BLANK_SIZE to 10Gi. Needs bin/ from
# `make build`, python3 and curl, and a server that can start VMs (without KVM,
# useEmulation in the KubeVirt CR, as `go run ./test/bench` sets it). Leaves
# nothing behind. The http source is served on the host's address on the pod
# network (the server's --bridge, BRIDGE), where the importer pod reaches it.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: $0 DATA_DIR [SIZE_MIB] [BLANK_SIZE]}
mib=${2:-2048}
blank=${3:-10Gi}
export KUBECONFIG=$data/kubeconfig
kubectl=bin/kubectl
ns=bench-storage-$$
tmp=$(mktemp -d -p "$data" bench-storage.XXXXXX) # on the pool's disk
http=""
cleanup() {
	[ -n "$http" ] && kill "$http" 2>/dev/null
	$kubectl delete ns "$ns" --wait=false >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT
now() { date +%s.%N; }
rate() { awk -v mib="$1" -v s="$2" 'BEGIN { printf "%.0f MiB/s (%.1f s)", mib / s, s }'; }

$kubectl create ns "$ns" >/dev/null
# Incompressible bytes, so no layer can make the copy cheaper than dd's.
head -c "$((mib << 20))" /dev/urandom >"$tmp/image.raw"
sync

t0=$(now)
dd if="$tmp/image.raw" of="$tmp/dd.raw" bs=4M conv=fsync status=none
t1=$(now)
rm -f "$tmp/dd.raw"
echo "dd to the pool's disk (fsync):          $(rate "$mib" "$(echo "$t1 - $t0" | bc)")"

t0=$(now)
bin/virtctl image-upload dv upload -n "$ns" --size "$((mib + 64))Mi" --image-path "$tmp/image.raw" --insecure >/dev/null
t1=$(now)
echo "virtctl image-upload dv (to Succeeded): $(rate "$mib" "$(echo "$t1 - $t0" | bc)")"

gw=$(ip -4 -o addr show dev "${BRIDGE:-virtkube0}" | awk '{ split($4, a, "/"); print a[1]; exit }')
[ -n "$gw" ] || { echo "no IPv4 address on bridge ${BRIDGE:-virtkube0}; set BRIDGE to the server's --bridge" >&2; exit 1; }
port=$(python3 -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$gw")
python3 -m http.server "$port" --bind "$gw" --directory "$tmp" >/dev/null 2>&1 &
http=$!
until curl -fsI "http://$gw:$port/image.raw" >/dev/null 2>&1; do sleep 0.1; done
t0=$(now)
curl -fs -o "$tmp/curl.raw" "http://$gw:$port/image.raw"
sync "$tmp/curl.raw"
t1=$(now)
rm -f "$tmp/curl.raw"
echo "curl of the same file (sync):           $(rate "$mib" "$(echo "$t1 - $t0" | bc)")"

t0=$(now)
$kubectl apply -n "$ns" -f - >/dev/null <<EOF
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: web}
spec:
  source: {http: {url: "http://$gw:$port/image.raw"}}
  storage: {resources: {requests: {storage: $((mib + 64))Mi}}}
EOF
$kubectl wait -n "$ns" dv/web --for=jsonpath='{.status.phase}'=Succeeded --timeout=30m >/dev/null
t1=$(now)
echo "DataVolume http import (to Succeeded):  $(rate "$mib" "$(echo "$t1 - $t0" | bc)")"

t0=$(now)
$kubectl apply -n "$ns" -f - >/dev/null <<EOF
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: blank}
spec:
  runStrategy: Always
  dataVolumeTemplates:
  - metadata: {name: blank-disk}
    spec:
      source: {blank: {}}
      storage: {resources: {requests: {storage: $blank}}}
  template:
    spec:
      domain:
        resources: {requests: {memory: 64Mi}}
        devices: {disks: [{name: disk, disk: {bus: virtio}}], autoattachGraphicsDevice: false}
      volumes: [{name: disk, dataVolume: {name: blank-disk}}]
EOF
# (kubectl wait fails at once while the VMI does not exist yet.)
until [ "$($kubectl get -n "$ns" vmi/blank -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ]; do sleep 0.1; done
t1=$(now)
printf 'VM with a %s blank DataVolume, create to Running: %.1f s\n' "$blank" "$(echo "$t1 - $t0" | bc)"
