// Package metrics is what virtkube's components share for Prometheus: one
// registry (controller-runtime's, so its workqueue_* and rest_client_*
// metrics come along), the /metrics handler over it, and KubeVirt's
// kubevirt_rest_client_requests_total for the components' API clients.
//
// Every virtkube component registers into Registry. Run alone (a pod on a
// real cluster) each serves it on its own /metrics; inside `virtkube
// server` they all run in one process and one /metrics serves them all.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Registry is the registry of every virtkube component in this process.
var Registry = ctrlmetrics.Registry

// Handler serves Registry in Prometheus' text or protobuf formats.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Serve serves Handler at /metrics on ln until ctx is done.
func Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// RegisterWhile registers c with Registry until ctx is done: a component
// that runs again in the same process (tests) registers afresh.
func RegisterWhile(ctx context.Context, c prometheus.Collector) error {
	if err := Registry.Register(c); err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { Registry.Unregister(c) })
	return nil
}
