package vmi

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Annotations KubeVirt's templates and instance types leave on a VMI; the
// phase count is broken down by them, as KubeVirt's is.
const (
	osAnnotation           = "vm.kubevirt.io/os"
	workloadAnnotation     = "vm.kubevirt.io/workload"
	flavorAnnotation       = "vm.kubevirt.io/flavor"
	instancetypeAnnotation = "kubevirt.io/instancetype-name"
	clusterInstancetype    = "kubevirt.io/cluster-instancetype-name"
	preferenceAnnotation   = "kubevirt.io/preference-name"
	clusterPreference      = "kubevirt.io/cluster-preference-name"
	none                   = "<none>"
)

// observedPhases are the phases whose time from creation is recorded.
var observedPhases = map[virtv1.VirtualMachineInstancePhase]bool{
	virtv1.Scheduled: true, virtv1.Running: true, virtv1.Succeeded: true, virtv1.Failed: true,
}

// Metrics are virt-controller's VMI metrics under KubeVirt's names:
// kubevirt_vmi_phase_transition_time_from_creation_seconds, observed when
// the controller's informer sees a VMI enter Scheduled, Running, Succeeded
// or Failed (whoever wrote the phase), and kubevirt_vmi_phase_count,
// counted from the informer's cache at each scrape.
type Metrics struct {
	reader      client.Reader
	transitions *prometheus.HistogramVec
	phaseCount  *prometheus.Desc
}

// NewMetrics returns the metrics over mgr's cache; SetupWithManager feeds
// them.
func NewMetrics(mgr ctrl.Manager) *Metrics {
	return &Metrics{
		reader: mgr.GetCache(),
		transitions: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kubevirt_vmi_phase_transition_time_from_creation_seconds",
			Help:    "Histogram of VM phase transitions duration from creation time in seconds.",
			Buckets: []float64{0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600},
		}, []string{"phase"}),
		phaseCount: prometheus.NewDesc("kubevirt_vmi_phase_count",
			"Sum of VMIs per phase and node.",
			[]string{"node", "phase", "os", "workload", "flavor", "instance_type", "preference"}, nil),
	}
}

// SetupWithManager observes phase changes through the VMI informer.
func (m *Metrics) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	inf, err := mgr.GetCache().GetInformer(ctx, &virtv1.VirtualMachineInstance{})
	if err != nil {
		return fmt.Errorf("VMI informer for metrics: %w", err)
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(*virtv1.VirtualMachineInstance)
			v, ok2 := newObj.(*virtv1.VirtualMachineInstance)
			if ok1 && ok2 {
				m.observe(old, v)
			}
		},
	})
	return err
}

// observe records the time from v's creation to its new phase.
func (m *Metrics) observe(old, v *virtv1.VirtualMachineInstance) {
	phase := v.Status.Phase
	if phase == old.Status.Phase || !observedPhases[phase] {
		return
	}
	for _, t := range v.Status.PhaseTransitionTimestamps {
		if t.Phase == phase {
			d := t.PhaseTransitionTimestamp.Sub(v.CreationTimestamp.Time)
			m.transitions.WithLabelValues(string(phase)).Observe(max(d.Seconds(), 0))
			return
		}
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.transitions.Describe(ch)
	ch <- m.phaseCount
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.transitions.Collect(ch)
	vmis := &virtv1.VirtualMachineInstanceList{}
	if err := m.reader.List(context.Background(), vmis); err != nil {
		klog.Background().Error(err, "count VMIs by phase")
		return
	}
	counts := map[[7]string]float64{}
	for i := range vmis.Items {
		counts[phaseKey(&vmis.Items[i])]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(m.phaseCount, prometheus.GaugeValue, n, k[:]...)
	}
}

// phaseKey is a VMI's labels in kubevirt_vmi_phase_count: node, phase (in
// lower case, as KubeVirt writes it), os, workload, flavor, instance type
// and preference, "<none>" for what the VMI does not say.
func phaseKey(v *virtv1.VirtualMachineInstance) [7]string {
	a := func(keys ...string) string {
		for _, k := range keys {
			if s := v.Annotations[k]; s != "" {
				return s
			}
		}
		return none
	}
	phase := strings.ToLower(string(v.Status.Phase))
	if phase == "" {
		phase = strings.ToLower(string(virtv1.Pending))
	}
	return [7]string{v.Status.NodeName, phase, a(osAnnotation), a(workloadAnnotation), a(flavorAnnotation),
		a(instancetypeAnnotation, clusterInstancetype), a(preferenceAnnotation, clusterPreference)}
}

var _ prometheus.Collector = (*Metrics)(nil)
