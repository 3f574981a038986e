package handler

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/launcherrpc"
)

// statsTimeout bounds one launcher's answer during a scrape.
const statsTimeout = 2 * time.Second

// vmiLabels are the labels KubeVirt puts on every per-VMI metric.
var vmiLabels = []string{"node", "namespace", "name"}

func vmiDesc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append(append([]string{}, vmiLabels...), extra...), nil)
}

var (
	cpuUsageDesc     = vmiDesc("kubevirt_vmi_cpu_usage_seconds_total", "Total CPU time spent in all modes (sum of both vcpu and hypervisor usage).")
	vcpuSecondsDesc  = vmiDesc("kubevirt_vmi_vcpu_seconds_total", "Total amount of time spent in each state by each vcpu (cpu_time excluding hypervisor time).", "id", "state")
	residentDesc     = vmiDesc("kubevirt_vmi_memory_resident_bytes", "Resident set size of the process running the domain.")
	domainMemoryDesc = vmiDesc("kubevirt_vmi_memory_domain_bytes", "The amount of memory in bytes allocated to the domain.")
	netReceiveDesc   = vmiDesc("kubevirt_vmi_network_receive_bytes_total", "Total network traffic received in bytes.", "interface")
	netTransmitDesc  = vmiDesc("kubevirt_vmi_network_transmit_bytes_total", "Total network traffic transmitted in bytes.", "interface")
	storageReadDesc  = vmiDesc("kubevirt_vmi_storage_read_traffic_bytes_total", "Total number of bytes read from storage.", "drive")
	storageWriteDesc = vmiDesc("kubevirt_vmi_storage_write_traffic_bytes_total", "Total number of written bytes.", "drive")
	domainStatsDescs = []*prometheus.Desc{cpuUsageDesc, vcpuSecondsDesc, residentDesc, domainMemoryDesc, netReceiveDesc, netTransmitDesc, storageReadDesc, storageWriteDesc}
	_                = prometheus.Collector(&DomainStatsCollector{})
)

// DomainStatsCollector reports the domain counters of this node's running
// VMIs under KubeVirt's kubevirt_vmi_* names. It asks each launcher at
// scrape time (GetStats), as KubeVirt's virt-handler does, so nothing is
// polled between scrapes.
type DomainStatsCollector struct {
	Reconciler *Reconciler
}

// Describe implements prometheus.Collector.
func (c *DomainStatsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range domainStatsDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *DomainStatsCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.Reconciler
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	vmis := &virtv1.VirtualMachineInstanceList{}
	if err := r.Client.List(ctx, vmis); err != nil {
		klog.Background().Error(err, "list VMIs for domain stats")
		return
	}
	var wg sync.WaitGroup
	for i := range vmis.Items {
		v := &vmis.Items[i]
		if v.Status.Phase != virtv1.Running || v.Status.NodeName != r.NodeName {
			continue
		}
		wg.Go(func() {
			st, err := r.domainStats(ctx, v)
			if err != nil {
				klog.Background().V(4).Info("no domain stats", "vmi", klog.KObj(v), "err", err)
				return
			}
			emitDomainStats(ch, []string{r.NodeName, v.Namespace, v.Name}, st)
		})
	}
	wg.Wait()
}

// domainStats asks v's launcher for its domain's counters.
func (r *Reconciler) domainStats(ctx context.Context, v *virtv1.VirtualMachineInstance) (*launcherrpc.DomainStats, error) {
	socket, err := r.launcherSocket(ctx, v)
	if err != nil {
		return nil, err
	}
	lc, err := launcherrpc.Dial(socket)
	if err != nil {
		return nil, err
	}
	defer lc.Close()
	return lc.GetStats(ctx)
}

// emitDomainStats sends one VMI's metrics; labels are vmiLabels' values.
func emitDomainStats(ch chan<- prometheus.Metric, labels []string, st *launcherrpc.DomainStats) {
	send := func(d *prometheus.Desc, t prometheus.ValueType, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, append(append([]string{}, labels...), extra...)...)
	}
	send(cpuUsageDesc, prometheus.CounterValue, st.CPUSeconds)
	send(residentDesc, prometheus.GaugeValue, float64(st.ResidentBytes))
	send(domainMemoryDesc, prometheus.GaugeValue, float64(st.DomainBytes))
	for _, c := range st.VCPUs {
		send(vcpuSecondsDesc, prometheus.CounterValue, c.Seconds, strconv.Itoa(c.ID), c.State)
	}
	for _, n := range st.Interfaces {
		send(netReceiveDesc, prometheus.CounterValue, float64(n.RxBytes), n.Name)
		send(netTransmitDesc, prometheus.CounterValue, float64(n.TxBytes), n.Name)
	}
	for _, b := range st.Blocks {
		send(storageReadDesc, prometheus.CounterValue, float64(b.ReadBytes), b.Name)
		send(storageWriteDesc, prometheus.CounterValue, float64(b.WriteBytes), b.Name)
	}
}
