#!/usr/bin/env bash
# Installs what building and testing virtkube needs on Debian 12, and checks
# the Go toolchain. Safe to run again: it installs only what is missing.
set -euo pipefail

# Debian packages: build tools; QEMU and libvirt for virt-launcher (one
# libvirtd per launcher, so the system libvirt service is not needed);
# nftables (nft) for kube-proxy and the tests that read rules back; ping for
# the network tests.
# The test guest's own packages are installed by hack/test-guest/build.sh.
packages=(make git ca-certificates
	qemu-system-x86 qemu-utils
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients nftables iputils-ping)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's libvirt resolves its QEMU user at start-up, before it reads
# qemu.conf (where virt-launcher sets root); create it as the
# libvirt-daemon-system package would.
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
	useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin -g libvirt-qemu libvirt-qemu
getent group kvm >/dev/null || groupadd --system kvm

# Go 1.26 or newer (the go.mod's go line). Debian 12's own golang is too old;
# the machines this project targets carry Go in /usr/local/go.
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
	echo "install-deps: Go 1.26 or newer is required (https://go.dev/doc/install); none found in PATH or /usr/local/go/bin" >&2
	exit 1
fi
need=$(awk '/^go /{print $2; exit}' "$(dirname "$0")/../go.mod")
have=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
	echo "install-deps: Go $need or newer is required, found $have" >&2
	exit 1
fi
