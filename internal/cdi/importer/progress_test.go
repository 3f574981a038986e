package importer

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/go-logr/logr"
)

// ScrapeProgress reads the gauge of one owner from a served metrics page.
func TestScrapeProgress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prog := newProgress(CloneProgressMetric, "uid-1", logr.Discard())
	var addr string
	srv, err := serve(ctx, "127.0.0.1:0", prog, nil, func(a string) { addr = a })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	url := "http://" + addr + "/metrics"

	for _, tc := range []struct {
		set  float64
		want float64
	}{{42.5, 42.5}, {150, 100}, {-3, 0}} {
		prog.set(tc.set)
		got, ok, err := ScrapeProgress(ctx, nil, url, CloneProgressMetric, "uid-1")
		if err != nil || !ok || got != tc.want {
			t.Errorf("after set(%v): %v, %v, %v; want %v, true, nil", tc.set, got, ok, err, tc.want)
		}
	}
	if _, ok, err := ScrapeProgress(ctx, nil, url, CloneProgressMetric, "other"); ok || err != nil {
		t.Errorf("another owner: shown %v, %v; want not shown", ok, err)
	}
	if _, ok, err := ScrapeProgress(ctx, nil, url, ProgressMetric, "uid-1"); ok || err != nil {
		t.Errorf("another metric: shown %v, %v; want not shown", ok, err)
	}
	if _, _, err := ScrapeProgress(ctx, nil, "http://"+addr+"/nothing", ProgressMetric, "uid-1"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a page that is not there: %v, want a 404 error", err)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", resp.Status)
	}
}
