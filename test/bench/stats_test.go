package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	xs := make([]float64, 0, 100)
	for i := 100; i >= 1; i-- {
		xs = append(xs, float64(i))
	}
	for _, tc := range []struct {
		name string
		in   []float64
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one", []float64{2.5}, Summary{Count: 1, P50: 2.5, P95: 2.5, P99: 2.5, Max: 2.5}},
		{"four", []float64{4, 1, 3, 2}, Summary{Count: 4, P50: 2, P95: 4, P99: 4, Max: 4}},
		{"hundred", xs, Summary{Count: 100, P50: 50, P95: 95, P99: 99, Max: 100}},
	} {
		if got := Summarize(tc.in); got != tc.want {
			t.Errorf("%s: Summarize = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if xs[0] != 100 {
		t.Error("Summarize sorted its input in place")
	}
}

func TestPoolAndReport(t *testing.T) {
	run := func(i int, running ...float64) *Result {
		r := &Result{Guest: "halt", N: len(running), Run: i, RunningPerSecond: float64(i), ServerCPUPerVMI: float64(i) / 10,
			samples: map[string][]float64{"running": running, "gone": {1}}}
		r.summarize()
		return r
	}
	a, b, c := run(1, 1, 2), run(2, 3), run(3, 4)
	all := Pool([]*Result{a, b, c})
	if all.CreateToRunning != (Summary{Count: 4, P50: 2, P95: 4, P99: 4, Max: 4}) || all.RunningPerSecond != 2 || all.ServerCPUPerVMI != 0.2 {
		t.Errorf("pooled = %+v", all)
	}
	var out bytes.Buffer
	if err := WriteTable(&out, []*Result{a, all}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"create→Running", "2.000s", "all", "VMIs/s to Running"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "create→Scheduled") {
		t.Errorf("table shows a figure that was not measured:\n%s", out.String())
	}

	p := NewPair(a, c)
	if got := p.Ratios["create→Running P50"]; got != 4 {
		t.Errorf("B/A of create→Running = %v, want 4", got)
	}
	if _, ok := p.Ratios["create→Scheduled P50"]; ok {
		t.Error("a ratio over an unmeasured figure")
	}
	out.Reset()
	if err := WriteRatios(&out, []Pair{p, NewPair(a, b)}); err != nil {
		t.Fatal(err)
	}
	// Nearest rank: the median of two ratios is the lower one.
	if !strings.Contains(out.String(), "pair 2") || !strings.Contains(out.String(), "4.00    3.00    3.00") {
		t.Errorf("ratios:\n%s", out.String())
	}
}
