# virtkube build. `make build` puts the binaries in bin/.

KUBE_VERSION := v1.37.2
VERSION      ?= v0.1.0-dev
GO           ?= go
COMPONENT_BASE := k8s.io/component-base/version
LDFLAGS := -s -w \
	-X $(COMPONENT_BASE).gitVersion=$(KUBE_VERSION) \
	-X $(COMPONENT_BASE).gitMajor=1 \
	-X $(COMPONENT_BASE).gitMinor=37 \
	-X $(COMPONENT_BASE).gitTreeState=clean \
	-X github.com/virtkube/virtkube/internal/version.Version=$(VERSION)

# Names virtkube answers to when called through a link (see cmd/virtkube).
LINKS := kubectl

.PHONY: build generate test clean
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/virtkube ./cmd/virtkube
	@for l in $(LINKS); do ln -sf virtkube bin/$$l; done

generate:
	$(GO) run ./hack/crdgen -out deploy/crds

# The whole suite; end-to-end tests use the binaries from `make build`.
test: build
	VIRTKUBE_BIN=$(CURDIR)/bin/virtkube $(GO) test -timeout 45m ./...

clean:
	rm -rf bin
