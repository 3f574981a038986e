package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtkube/virtkube/test/framework"
)

// One VMI on the shared server shows in /metrics (--metrics-address, named
// in the server's ready message) under KubeVirt's names: the phase count
// and the time-from-creation histogram of virt-controller, the domain
// counters virt-handler reads from the launcher (moving while the guest
// runs), the API client and workqueue metrics, and virt-api's requests.
func TestMetricsFollowAVMI(t *testing.T) {
	s := shared
	url := metricsURL(t, s)
	image := testGuestImage(t, s, "metrics")
	ns := s.Namespace(t)
	c := crClient(t, s)
	ctx := ctxT(t, 5*time.Minute)
	node := strings.ToLower(hostname(t))

	before := scrape(t, url)
	runningBefore := before.sum("kubevirt_vmi_phase_count", `phase="running"`)
	toRunningBefore := before.sum("kubevirt_vmi_phase_transition_time_from_creation_seconds_count", `phase="Running"`)

	v := newVMI(ns, "metered", node, image)
	if err := c.Create(ctx, v); err != nil {
		t.Fatal(err)
	}
	waitVMI(t, c, ns, "metered", "Running and Ready", runningAndReady)

	this := fmt.Sprintf(`namespace=%q`, ns)
	var cpu float64
	framework.Eventually(t, time.Minute, 500*time.Millisecond, func(context.Context) (bool, string) {
		m := scrape(t, url)
		if got := m.sum("kubevirt_vmi_phase_count", `phase="running"`, fmt.Sprintf("node=%q", node)); got < runningBefore+1 {
			return false, fmt.Sprintf("running VMIs on %s: %v, want at least %v", node, got, runningBefore+1)
		}
		if got := m.sum("kubevirt_vmi_phase_transition_time_from_creation_seconds_count", `phase="Running"`); got < toRunningBefore+1 {
			return false, fmt.Sprintf("transitions to Running observed: %v, want at least %v", got, toRunningBefore+1)
		}
		cpu = m.sum("kubevirt_vmi_cpu_usage_seconds_total", this, `name="metered"`)
		if cpu <= 0 || m.sum("kubevirt_vmi_memory_resident_bytes", this) <= 0 ||
			m.sum("kubevirt_vmi_vcpu_seconds_total", this, `id="0"`) <= 0 ||
			m.sum("kubevirt_vmi_storage_read_traffic_bytes_total", this, `drive="vda"`) <= 0 {
			return false, "no domain stats for the VMI yet:\n" + m.lines("kubevirt_vmi_", this)
		}
		return true, ""
	})
	// The guest keeps running: its CPU time grows between scrapes.
	framework.Eventually(t, time.Minute, time.Second, func(context.Context) (bool, string) {
		got := scrape(t, url).sum("kubevirt_vmi_cpu_usage_seconds_total", this)
		return got > cpu, fmt.Sprintf("CPU time stays at %v", got)
	})

	m := scrape(t, url)
	for _, want := range []struct{ name, label string }{
		{"kubevirt_rest_client_requests_total", `resource="virtualmachineinstances/status"`},
		{"workqueue_adds_total", `name="vmi"`},
		{"workqueue_adds_total", `name="virt-handler"`},
		{"kubevirt_virt_api_requests_total", `handler="/virtualmachineinstances-mutate"`},
	} {
		if m.sum(want.name, want.label) <= 0 {
			t.Errorf("no %s{%s} in /metrics", want.name, want.label)
		}
	}
	if err := c.Delete(ctx, v); err != nil {
		t.Error(err)
	}
}

// metricsURL is where the server serves /metrics: it says so before its
// ready line.
func metricsURL(t *testing.T, s *framework.Server) string {
	t.Helper()
	for _, line := range strings.Split(s.Stdout(), "\n") {
		if u, ok := strings.CutPrefix(line, "metrics: "); ok {
			return u
		}
	}
	t.Fatalf("the server named no metrics address:\n%s", s.Stdout())
	return ""
}

// exposition is a scrape in Prometheus' text format.
type exposition string

func scrape(t *testing.T, url string) exposition {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return exposition(body)
}

// sum adds the values of the samples of metric name whose labels contain
// every one of labels (`key="value"`).
func (e exposition) sum(name string, labels ...string) float64 {
	var total float64
	for _, line := range e.samples(func(n string) bool { return n == name }, labels...) {
		f := strings.Fields(line)
		if x, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += x
		}
	}
	return total
}

// lines are the samples of the metrics named prefix... whose labels
// contain every one of labels, for messages.
func (e exposition) lines(prefix string, labels ...string) string {
	return strings.Join(e.samples(func(n string) bool { return strings.HasPrefix(n, prefix) }, labels...), "\n")
}

func (e exposition) samples(named func(string) bool, labels ...string) []string {
	var out []string
	for _, line := range strings.Split(string(e), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(strings.Fields(line)[0], "{")
		if !named(name) {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}
