package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Summary is a distribution of samples (seconds, MiB, ...) by nearest-rank
// percentiles.
type Summary struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// Summarize computes the summary of xs; an empty xs gives a zero Summary.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return Summary{Count: len(s), P50: percentile(s, 50), P95: percentile(s, 95), P99: percentile(s, 99), Max: s[len(s)-1]}
}

// percentile is the nearest-rank percentile p of sorted s.
func percentile(sorted []float64, p float64) float64 {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

// Result is one burst: N VMIs created at once, followed to Running (and the
// guest's ready line) and deleted.
type Result struct {
	Label string `json:"label,omitempty"`
	Guest string `json:"guest"`
	N     int    `json:"n"`
	Run   int    `json:"run"`
	// Per-VMI latencies in seconds.
	CreateToScheduled  Summary `json:"createToScheduledSeconds"`
	CreateToRunning    Summary `json:"createToRunningSeconds"`
	CreateToGuestReady Summary `json:"createToGuestReadySeconds"`
	DeleteToGone       Summary `json:"deleteToGoneSeconds"`
	// RunningPerSecond is N over the time from the first create to the
	// last VMI Running.
	RunningPerSecond float64 `json:"runningPerSecond"`
	// PodPSS is the PSS of all processes of each launcher pod, MiB;
	// Overhead is PodPSS minus the guest's RAM.
	PodPSS   Summary `json:"podPSSMiB"`
	Overhead Summary `json:"overheadMiB"`
	// ServerCPUPerVMI is the CPU time of the server process from before
	// the first create to the last VMI gone, divided by N.
	ServerCPUPerVMI float64 `json:"serverCPUSecondsPerVMI"`
	// PodCPUPerVMI is the mean CPU time of a launcher pod's processes
	// (virt-launcher, libvirtd, QEMU, container-disk) over its life.
	PodCPUPerVMI float64 `json:"podCPUSecondsPerVMI"`
	// PSSByProcess splits PodPSS by process name (comm); CPUByProcess is
	// the CPU seconds of each process name once the VMIs were up.
	PSSByProcess map[string]Summary `json:"podPSSMiBByProcess,omitempty"`
	CPUByProcess map[string]Summary `json:"podCPUSecondsByProcessWhenUp,omitempty"`
	// samples keep the raw latencies so runs can be pooled.
	samples map[string][]float64
}

// metric names and getters, in table order.
var latencyRows = []struct {
	name string
	get  func(*Result) Summary
}{
	{"create→Scheduled", func(r *Result) Summary { return r.CreateToScheduled }},
	{"create→Running", func(r *Result) Summary { return r.CreateToRunning }},
	{"create→guest-ready", func(r *Result) Summary { return r.CreateToGuestReady }},
	{"delete→gone", func(r *Result) Summary { return r.DeleteToGone }},
}

// Pool merges runs of the same burst size into one result whose
// summaries cover every VMI of every run; rates and CPU are medians of the
// runs'.
func Pool(runs []*Result) *Result {
	if len(runs) == 0 {
		return nil
	}
	p := &Result{Label: "all", Guest: runs[0].Guest, N: runs[0].N, samples: map[string][]float64{}}
	var rates, cpus, podCPUs []float64
	for _, r := range runs {
		for k, xs := range r.samples {
			p.samples[k] = append(p.samples[k], xs...)
		}
		rates = append(rates, r.RunningPerSecond)
		cpus = append(cpus, r.ServerCPUPerVMI)
		podCPUs = append(podCPUs, r.PodCPUPerVMI)
	}
	p.summarize()
	p.RunningPerSecond = Summarize(rates).P50
	p.ServerCPUPerVMI = Summarize(cpus).P50
	p.PodCPUPerVMI = Summarize(podCPUs).P50
	return p
}

// summarize fills the summaries from samples.
func (r *Result) summarize() {
	r.CreateToScheduled = Summarize(r.samples["scheduled"])
	r.CreateToRunning = Summarize(r.samples["running"])
	r.CreateToGuestReady = Summarize(r.samples["ready"])
	r.DeleteToGone = Summarize(r.samples["gone"])
	r.PodPSS = Summarize(r.samples["pss"])
	r.Overhead = Summarize(r.samples["overhead"])
	r.PSSByProcess, r.CPUByProcess = byName(r.samples, pssPrefix), byName(r.samples, cpuPrefix)
}

// byName summarises the samples whose key is prefix + a process name.
func byName(samples map[string][]float64, prefix string) map[string]Summary {
	var out map[string]Summary
	for k, xs := range samples {
		if comm, ok := strings.CutPrefix(k, prefix); ok {
			if out == nil {
				out = map[string]Summary{}
			}
			out[comm] = Summarize(xs)
		}
	}
	return out
}

// WriteTable prints results for people.
func WriteTable(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "guest\tN\trun\tmetric\tP50\tP95\tP99\tmax\t")
	for _, r := range results {
		run := r.Label
		if run == "" {
			run = fmt.Sprint(r.Run)
		}
		row := func(name string, s Summary, unit string) {
			if s.Count == 0 {
				return
			}
			f := func(x float64) string { return fmt.Sprintf("%.3f%s", x, unit) }
			if unit == " MiB" {
				f = func(x float64) string { return fmt.Sprintf("%.1f%s", x, unit) }
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Guest, r.N, run, name, f(s.P50), f(s.P95), f(s.P99), f(s.Max))
		}
		for _, l := range latencyRows {
			row(l.name, l.get(r), "s")
		}
		row("launcher pod PSS", r.PodPSS, " MiB")
		for _, comm := range slices.Sorted(maps.Keys(r.PSSByProcess)) {
			row("  PSS of "+comm, r.PSSByProcess[comm], " MiB")
		}
		row("pod PSS − guest RAM", r.Overhead, " MiB")
		for _, comm := range slices.Sorted(maps.Keys(r.CPUByProcess)) {
			row("  CPU of "+comm+" when up", r.CPUByProcess[comm], "s")
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\tVMIs/s to Running\t%.2f\t\t\t\t\n", r.Guest, r.N, run, r.RunningPerSecond)
		fmt.Fprintf(tw, "%s\t%d\t%s\tserver CPU-s per VMI\t%.2f\t\t\t\t\n", r.Guest, r.N, run, r.ServerCPUPerVMI)
		fmt.Fprintf(tw, "%s\t%d\t%s\tpod CPU-s per VMI\t%.2f\t\t\t\t\n", r.Guest, r.N, run, r.PodCPUPerVMI)
		fmt.Fprintf(tw, "%s\t%d\t%s\tall CPU-s per VMI\t%.2f\t\t\t\t\n", r.Guest, r.N, run, r.ServerCPUPerVMI+r.PodCPUPerVMI)
	}
	return tw.Flush()
}

// WriteJSON prints results for machines.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Pair is one A/B round: the same burst on configuration A, then on B.
type Pair struct {
	A, B *Result
	// Ratios are B/A of each compared figure.
	Ratios map[string]float64 `json:"ratios"`
}

// comparisons are the figures an A/B run compares (lower is better).
var comparisons = []struct {
	name string
	get  func(*Result) float64
}{
	{"create→Scheduled P50", func(r *Result) float64 { return r.CreateToScheduled.P50 }},
	{"create→Running P50", func(r *Result) float64 { return r.CreateToRunning.P50 }},
	{"create→guest-ready P50", func(r *Result) float64 { return r.CreateToGuestReady.P50 }},
	{"delete→gone P50", func(r *Result) float64 { return r.DeleteToGone.P50 }},
	{"launcher pod PSS P50", func(r *Result) float64 { return r.PodPSS.P50 }},
	{"server CPU-s per VMI", func(r *Result) float64 { return r.ServerCPUPerVMI }},
	{"all CPU-s per VMI", func(r *Result) float64 { return r.ServerCPUPerVMI + r.PodCPUPerVMI }},
}

// NewPair computes the B/A ratios of a and b; a figure A lacks (zero) is
// left out.
func NewPair(a, b *Result) Pair {
	p := Pair{A: a, B: b, Ratios: map[string]float64{}}
	for _, c := range comparisons {
		if x := c.get(a); x > 0 {
			p.Ratios[c.name] = c.get(b) / x
		}
	}
	return p
}

// WriteRatios prints each pair's B/A ratios and their median.
func WriteRatios(w io.Writer, pairs []Pair) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := []string{"figure (B/A)"}
	for i := range pairs {
		header = append(header, fmt.Sprintf("pair %d", i+1))
	}
	header = append(header, "median")
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, c := range comparisons {
		var xs []float64
		cells := []string{c.name}
		for _, p := range pairs {
			x, ok := p.Ratios[c.name]
			if !ok {
				cells = append(cells, "-")
				continue
			}
			xs = append(xs, x)
			cells = append(cells, fmt.Sprintf("%.2f", x))
		}
		if len(xs) == 0 {
			continue
		}
		cells = append(cells, fmt.Sprintf("%.2f", Summarize(xs).P50))
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	return tw.Flush()
}
