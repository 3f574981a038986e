package virtapi

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/virtkube/virtkube/internal/metrics"
)

// virt-api's request metrics, by handler: a webhook's path, a
// subresource ("virtualmachineinstances/console", "version"), or "other".
// A console or VNC request lasts as long as its websocket.
var (
	apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubevirt_virt_api_requests_total",
		Help: "Requests virt-api answered, by status code, method and handler.",
	}, []string{"code", "method", "handler"})
	apiDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kubevirt_virt_api_request_duration_seconds",
		Help:    "Time virt-api took to answer, by method and handler.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}, []string{"method", "handler"})
)

func init() { metrics.Registry.MustRegister(apiRequests, apiDuration) }

type routeKey struct{}

// withMetrics adds /metrics to mux and counts and times every request.
func withMetrics(mux *http.ServeMux) http.Handler {
	mux.Handle("/metrics", metrics.Handler())
	byRoute := promhttp.WithLabelFromCtx("handler", func(ctx context.Context) string {
		r, _ := ctx.Value(routeKey{}).(string)
		return r
	})
	h := promhttp.InstrumentHandlerDuration(apiDuration, promhttp.InstrumentHandlerCounter(apiRequests, mux, byRoute), byRoute)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, route(r.URL.Path))))
	})
}

// route is the handler label of a request path.
func route(path string) string {
	if r := metrics.Resource(path); r != "" {
		return r
	}
	for _, h := range hooks {
		if h.path == path {
			return path
		}
	}
	if path == "/healthz" || path == "/metrics" {
		return path
	}
	return "other"
}
