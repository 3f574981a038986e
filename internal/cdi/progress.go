package cdi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ProgressDone is status.progress of a Succeeded DataVolume, as CDI
// writes it.
const ProgressDone = "100.0%"

// Progress renders how far the filling of a claim has got as CDI shows it
// in a DataVolume's status.progress ("45.00%"): done of total units, rounded
// down to a hundredth of a percent and never 100.00%, which a DataVolume
// only shows once Succeeded (as ProgressDone). An unknown total is "N/A".
func Progress(done, total int64) string {
	if total <= 0 {
		return "N/A"
	}
	return ProgressPercent(100 * float64(done) / float64(total))
}

// ProgressPercent is Progress of a percentage, e.g. qemu-img's.
func ProgressPercent(pct float64) string {
	pct = math.Floor(pct*100) / 100
	switch {
	case math.IsNaN(pct) || pct < 0:
		pct = 0
	case pct > 99.99:
		pct = 99.99
	}
	return fmt.Sprintf("%.2f%%", pct)
}

// DefaultProgressInterval is how often at most a ProgressReporter writes.
const DefaultProgressInterval = time.Second

// ProgressReporter writes one DataVolume's status.progress while its claim
// is filled, as CDI's importer pods report theirs: only when the rendered
// value changes, and at most once per Interval, through a merge patch of
// that one field (so it never undoes another writer's status). A failed
// write is logged and tried again with a later value: progress is a hint,
// never a reason to fail an import.
type ProgressReporter struct {
	Client          client.Client
	Namespace, Name string
	// Shown is the value the DataVolume shows now; a report of the same
	// value writes nothing.
	Shown string
	// Interval is the least time between two writes; 0 is
	// DefaultProgressInterval.
	Interval time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	last time.Time
}

// Report shows value ("12.34%") unless it is shown already or the last
// write was less than Interval ago.
func (p *ProgressReporter) Report(ctx context.Context, value string) {
	if p == nil || value == p.Shown {
		return
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	interval := p.Interval
	if interval == 0 {
		interval = DefaultProgressInterval
	}
	t := now()
	if !p.last.IsZero() && t.Sub(p.last) < interval {
		return
	}
	p.last = t
	dv := &unstructured.Unstructured{}
	dv.SetGroupVersionKind(cdiv1.SchemeGroupVersion.WithKind("DataVolume"))
	dv.SetNamespace(p.Namespace)
	dv.SetName(p.Name)
	patch := fmt.Appendf(nil, `{"status":{"progress":%q}}`, value)
	if err := p.Client.Status().Patch(ctx, dv, client.RawPatch(types.MergePatchType, patch)); err != nil {
		klog.FromContext(ctx).V(1).Info("progress not written", "dataVolume", p.Namespace+"/"+p.Name, "progress", value, "err", err)
		return
	}
	p.Shown = value
}

// Reader reports the bytes read through it against total (a Content-Length;
// for a compressed source, the compressed bytes). A nil p or an unknown
// total reports nothing.
func (p *ProgressReporter) Reader(ctx context.Context, r io.Reader, total int64) io.Reader {
	if p == nil {
		return r
	}
	var last string
	return ProgressReader(r, total, func(pct float64) {
		if v := ProgressPercent(pct); v != last {
			last = v
			p.Report(ctx, v)
		}
	})
}

// Percent is a conversion's progress callback (see ImportFile) that
// reports through p; nil when p is nil.
func (p *ProgressReporter) Percent(ctx context.Context) func(float64) {
	if p == nil {
		return nil
	}
	return func(pct float64) { p.Report(ctx, ProgressPercent(pct)) }
}

// ProgressReader tells report, after each read through it, the percentage
// of total read so far: the progress of a download or upload whose length
// is known, for a sink of any kind (a DataVolume's status through
// ProgressReporter.Reader, an importer pod's metric). A nil report or an
// unknown total (0 or less) reports nothing and returns r itself.
func ProgressReader(r io.Reader, total int64, report func(percent float64)) io.Reader {
	if report == nil || total <= 0 {
		return r
	}
	return &progressReader{r: r, total: total, report: report}
}

// progressReader is ProgressReader's reader.
type progressReader struct {
	r        io.Reader
	n, total int64
	report   func(percent float64)
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.n += int64(n)
	if n > 0 {
		r.report(100 * float64(r.n) / float64(r.total))
	}
	return n, err
}

// qemuProgress parses what `qemu-img convert -p` prints on its standard
// output, "    (12.34/100%)\r" after each step, and hands each percentage
// to report.
type qemuProgress struct {
	report func(float64)
	buf    []byte
}

func (q *qemuProgress) Write(b []byte) (int, error) {
	q.buf = append(q.buf, b...)
	for {
		i := bytes.IndexAny(q.buf, "\r\n")
		if i < 0 {
			break
		}
		if pct, ok := parseQemuProgress(string(q.buf[:i])); ok {
			q.report(pct)
		}
		q.buf = q.buf[i+1:]
	}
	if len(q.buf) > 4096 { // not qemu-img's progress; do not grow
		q.buf = q.buf[:0]
	}
	return len(b), nil
}

// parseQemuProgress reads one "(12.34/100%)" of qemu-img's progress.
func parseQemuProgress(s string) (float64, bool) {
	s, ok := strings.CutPrefix(strings.TrimSpace(s), "(")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "/100%)")
	if !ok {
		return 0, false
	}
	pct, err := strconv.ParseFloat(s, 64)
	if err != nil || pct < 0 || pct > 100 {
		return 0, false
	}
	return pct, true
}
