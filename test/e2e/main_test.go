// Package e2e drives real `virtkube server` processes the way a user does:
// kubectl, the Kubernetes API, and (in later suites) real guests.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/virtkube/virtkube/test/framework"
)

// shared is one server for the tests that do not stop or restart it.
var shared *framework.Server

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// Tests use controller-runtime's client; its log goes nowhere.
	ctrllog.SetLogger(logr.Discard())
	dir, err := os.MkdirTemp("", "virtkube-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// VIRTKUBE_E2E_KEEP=1 keeps the shared server's data dir and log.
	if os.Getenv("VIRTKUBE_E2E_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "keeping", dir)
	}
	shared, err = framework.NewServer(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := shared.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, shared.LogTail(100))
	}
	if err := shared.Stop(time.Minute); err != nil {
		fmt.Fprintln(os.Stderr, "stop shared server:", err)
		if code == 0 {
			code = 1
		}
	}
	if err := shared.Reset(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	if err := framework.RemoveIsolatedNetwork(); err != nil {
		fmt.Fprintln(os.Stderr, "remove the test network:", err)
	}
	return code
}
