#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, builds bin/, runs unit, integration and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
export PATH="$PATH:/usr/local/go/bin"
make build
# The test guest (kernel + busybox from Debian packages), built once.
hack/test-guest/build.sh _output/test-guest
VIRTKUBE_BIN="$PWD/bin/virtkube" go test -count=1 -timeout 60m ./...
