#!/usr/bin/env bash
# Installs what building and testing virtkube needs on Debian 12, and checks
# the Go toolchain. Safe to run again: it installs only what is missing.
set -euo pipefail

# Debian packages: build tools now; QEMU, libvirt and friends join this list
# as the parts that use them land.
packages=(make git ca-certificates)

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
