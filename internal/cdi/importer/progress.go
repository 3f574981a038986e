package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The progress metrics, as CDI's importer and clone source pods name them:
// a gauge of the percentage done, 0 to 100, labelled with OwnerUIDLabel.
const (
	// ProgressMetric is the progress of ModeImport and ModeUpload.
	ProgressMetric = "kubevirt_cdi_import_progress_total"
	// CloneProgressMetric is the progress of ModeCloneSource.
	CloneProgressMetric = "kubevirt_cdi_clone_progress_total"
	// OwnerUIDLabel is the progress metrics' label holding --owner-uid.
	OwnerUIDLabel = "ownerUID"
)

// progressLogStep is how many percent apart progress is logged.
const progressLogStep = 25

// progress is the program's progress metric, and a few log lines about it.
type progress struct {
	registry *prometheus.Registry
	gauge    prometheus.Gauge
	log      logr.Logger

	mu     sync.Mutex
	logged int // the last progressLogStep logged
}

// newProgress registers the gauge metric{ownerUID} in a registry of its own.
func newProgress(metric, ownerUID string, log logr.Logger) *progress {
	vec := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metric,
		Help: "Percentage of the claim's disk written (or, for a clone source, sent) so far.",
	}, []string{OwnerUIDLabel})
	reg := prometheus.NewRegistry()
	reg.MustRegister(vec)
	return &progress{registry: reg, gauge: vec.WithLabelValues(ownerUID), log: log}
}

// set shows pct (0 to 100; anything else is brought into that range).
func (p *progress) set(pct float64) {
	switch {
	case math.IsNaN(pct) || pct < 0:
		pct = 0
	case pct > 100:
		pct = 100
	}
	p.gauge.Set(pct)
	step := int(pct) / progressLogStep
	p.mu.Lock()
	defer p.mu.Unlock()
	if step > p.logged {
		p.log.Info("progress", "percent", math.Floor(pct*100)/100)
	}
	p.logged = step
}

// server serves /metrics, /healthz and, in ModeUpload, the upload paths.
type server struct {
	http   *http.Server
	failed chan error    // the reason Serve ended by itself
	served chan struct{} // closed once Serve has returned
}

// serve starts the program's server on addr; ready, if not nil, is told
// the address it listens on. Requests' contexts end with ctx.
func serve(ctx context.Context, addr string, prog *progress, up *uploadServer, ready func(string)) (*server, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(prog.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	if up != nil {
		up.register(mux)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", FlagListen, err)
	}
	s := &server{
		http: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 30 * time.Second,
			BaseContext:       func(net.Listener) context.Context { return ctx },
		},
		failed: make(chan error, 1),
		served: make(chan struct{}),
	}
	go func() {
		defer close(s.served)
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.failed <- fmt.Errorf("serve on %s: %w", ln.Addr(), err)
		}
	}()
	if ready != nil {
		ready(ln.Addr().String())
	}
	return s, nil
}

// stop lets requests in flight (the answer to a finished upload) complete,
// for a few seconds at most, and returns once the server is down.
func (s *server) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.http.Close()
	}
	<-s.served
}

// maxMetricsBytes bounds the metrics page ScrapeProgress reads.
const maxMetricsBytes = 1 << 20

// ScrapeProgress reads the progress an importer, upload or clone source pod
// shows at url (http://<pod IP>:8443/metrics): the value of the gauge metric
// (ProgressMetric or CloneProgressMetric) whose OwnerUIDLabel is ownerUID, a
// percentage from 0 to 100. ok is false while the pod shows no such value.
// A nil c is http.DefaultClient.
func ScrapeProgress(ctx context.Context, c *http.Client, url, metric, ownerUID string) (percent float64, ok bool, err error) {
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, fmt.Errorf("scrape progress %s: %w", url, err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := c.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("scrape progress: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("scrape progress %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(io.LimitReader(resp.Body, maxMetricsBytes))
	if err != nil {
		return 0, false, fmt.Errorf("scrape progress %s: %w", url, err)
	}
	family, found := families[metric]
	if !found {
		return 0, false, nil
	}
	for _, m := range family.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() != OwnerUIDLabel || l.GetValue() != ownerUID {
				continue
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true, nil
			case m.Untyped != nil:
				return m.GetUntyped().GetValue(), true, nil
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true, nil
			}
		}
	}
	return 0, false, nil
}
