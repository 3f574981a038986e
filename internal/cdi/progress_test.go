package cdi

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestProgress(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		want        string
	}{
		{0, 100, "0.00%"},
		{45, 100, "45.00%"},
		{1, 3, "33.33%"},
		{2, 3, "66.66%"},          // rounded down, never ahead of the data
		{99999, 100000, "99.99%"}, // 99.999 would round to 100.00
		{100, 100, "99.99%"},      // all read, not yet Succeeded
		{150, 100, "99.99%"},
		{1, 0, "N/A"},
		{1, -1, "N/A"}, // no Content-Length
	} {
		if got := Progress(tc.done, tc.total); got != tc.want {
			t.Errorf("Progress(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
	if got := ProgressPercent(-3); got != "0.00%" {
		t.Errorf("ProgressPercent(-3) = %q", got)
	}
}

// qemu-img convert -p's output, as it arrives in pieces.
func TestQemuProgress(t *testing.T) {
	var got []float64
	w := &qemuProgress{report: func(p float64) { got = append(got, p) }}
	for _, chunk := range []string{"    (0.00/100%)\r", "    (10.", "00/100%)\r    (20.50/100%)\r", "qemu-img: warning\n", "    (100.00/100%)\r\n"} {
		if n, err := w.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	want := []float64{0, 10, 20.5, 100}
	if len(got) != len(want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("reported %v, want %v", got, want)
		}
	}
	for _, bad := range []string{"", "(x/100%)", "(12.0/50%)", "12.0/100%)", "(120.00/100%)"} {
		if p, ok := parseQemuProgress(bad); ok {
			t.Errorf("parseQemuProgress(%q) = %v, want no value", bad, p)
		}
	}
}

// The reporter writes status.progress only on change and at most once per
// interval, and the reader reports bytes read against the total.
func TestProgressReporter(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	dv := &cdiv1.DataVolume{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "dv"}, Status: cdiv1.DataVolumeStatus{Phase: cdiv1.ImportInProgress, Progress: "0.00%"}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(dv).WithStatusSubresource(dv).Build()
	ctx := context.Background()
	shown := func() string {
		got := &cdiv1.DataVolume{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(dv), got); err != nil {
			t.Fatal(err)
		}
		if got.Status.Phase != cdiv1.ImportInProgress {
			t.Errorf("phase %s: the progress write changed more than status.progress", got.Status.Phase)
		}
		return string(got.Status.Progress)
	}
	now := time.Unix(0, 0)
	p := &ProgressReporter{Client: c, Namespace: "ns", Name: "dv", Shown: "0.00%", Now: func() time.Time { return now }}

	p.Report(ctx, "0.00%")
	p.Report(ctx, "12.00%")
	if got := shown(); got != "12.00%" {
		t.Errorf("first change: %q, want 12.00%%", got)
	}
	now = now.Add(500 * time.Millisecond)
	p.Report(ctx, "20.00%")
	if got := shown(); got != "12.00%" {
		t.Errorf("within the interval: %q, want still 12.00%%", got)
	}

	// 4 MiB read in 64 KiB pieces, one second apart: each piece is a new
	// value, each written.
	const total = 4 << 20
	r := p.Reader(ctx, bytes.NewReader(make([]byte, total)), total)
	buf := make([]byte, 64<<10)
	var seen []string
	for {
		now = now.Add(time.Second)
		_, err := r.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, shown())
	}
	if len(seen) != 64 || seen[0] != "1.56%" || seen[31] != "50.00%" || seen[63] != "99.99%" {
		t.Errorf("progress while reading: %v; want 1.56%% ... 50.00%% ... 99.99%%, never 100", seen)
	}
	if r := (*ProgressReporter)(nil).Reader(ctx, bytes.NewReader(nil), 10); r == nil {
		t.Error("a nil reporter's Reader is nil")
	}
}

// ProgressReader tells its sink the share of total read after each read,
// and is the reader itself when there is nothing to report.
func TestProgressReader(t *testing.T) {
	var got []float64
	r := ProgressReader(bytes.NewReader(make([]byte, 400)), 400, func(p float64) { got = append(got, p) })
	buf := make([]byte, 100)
	for {
		if _, err := r.Read(buf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	want := []float64{25, 50, 75, 100}
	if len(got) != len(want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("reported %v, want %v", got, want)
		}
	}
	src := bytes.NewReader(nil)
	if r := ProgressReader(src, -1, func(float64) {}); r != src {
		t.Error("an unknown total wraps the reader")
	}
	if r := ProgressReader(src, 10, nil); r != src {
		t.Error("a nil report wraps the reader")
	}
}
