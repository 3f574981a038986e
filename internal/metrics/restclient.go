package metrics

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
)

// restRequests is KubeVirt's kubevirt_rest_client_requests_total (code,
// method, host) with the resource each request was about.
//
// client-go takes one request-metrics adapter per process, the first
// registered; inside `virtkube server` the embedded Kubernetes components
// own it. So virtkube counts at the transport of its own clients instead
// (see Instrument), which also sees the resource.
var restRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "kubevirt_rest_client_requests_total",
	Help: "Number of HTTP requests, partitioned by status code, method, host and resource.",
}, []string{"code", "method", "host", "resource"})

func init() { Registry.MustRegister(restRequests) }

// Instrument returns a copy of cfg whose requests are counted in
// kubevirt_rest_client_requests_total.
func Instrument(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt} })
	return cfg
}

type countingTransport struct{ next http.RoundTripper }

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	code := "<error>"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	restRequests.WithLabelValues(code, req.Method, req.URL.Host, Resource(req.URL.Path)).Inc()
	return resp, err
}

// Resource names the resource an API path is about, with its subresource:
// "pods" for /api/v1/namespaces/ns/pods/p, "virtualmachineinstances/status"
// for /apis/kubevirt.io/v1/namespaces/ns/virtualmachineinstances/v/status,
// "" for paths that are not resources (discovery, /healthz).
func Resource(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return ""
	}
	if len(parts) >= 1 && parts[0] == "watch" {
		parts = parts[1:]
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return "namespaces"
	case 1, 2:
		return parts[0]
	}
	return parts[0] + "/" + parts[2]
}
