# virtkube build. `make build` puts the binaries in $(BIN), bin/ unless told.

KUBE_VERSION := v1.37.2
VERSION      ?= v0.1.0-dev
GO           ?= go
GIT_COMMIT     := $(shell git rev-parse HEAD 2>/dev/null)
GIT_TREE_STATE := $(shell test -z "$$(git status --porcelain 2>/dev/null)" && echo clean || echo dirty)
BUILD_DATE     := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
COMPONENT_BASE := k8s.io/component-base/version
LDFLAGS := -s -w \
	-X $(COMPONENT_BASE).gitVersion=$(KUBE_VERSION) \
	-X $(COMPONENT_BASE).gitMajor=1 \
	-X $(COMPONENT_BASE).gitMinor=37 \
	-X $(COMPONENT_BASE).gitTreeState=clean \
	-X github.com/virtkube/virtkube/internal/version.Version=$(VERSION) \
	-X github.com/virtkube/virtkube/internal/version.GitCommit=$(GIT_COMMIT) \
	-X github.com/virtkube/virtkube/internal/version.GitTreeState=$(GIT_TREE_STATE) \
	-X github.com/virtkube/virtkube/internal/version.BuildDate=$(BUILD_DATE)

# Where `make build` puts the binaries (`make build BIN=/tmp/x` for a private copy).
BIN ?= bin

# Names virtkube answers to when called through a link (see cmd/virtkube).
LINKS := kubectl virt-api virt-controller virt-handler hostpath-provisioner cdi-importer

.PHONY: build generate test clean
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/virtkube ./cmd/virtkube
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/virtctl ./cmd/virtctl
	@rm -f $(BIN)/virt-launcher # a link to virtkube before it was a program of its own
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/virt-launcher ./cmd/virt-launcher
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/container-disk ./cmd/container-disk
	@for l in $(LINKS); do ln -sf virtkube $(BIN)/$$l; done
	@ln -sf virtctl $(BIN)/kubectl-virt

generate:
	$(GO) run ./hack/crdgen -out deploy/crds

# The whole suite; end-to-end tests use the binaries from `make build`.
test: build
	VIRTKUBE_BIN=$(abspath $(BIN))/virtkube $(GO) test -timeout 45m ./...

clean:
	rm -rf $(BIN)
