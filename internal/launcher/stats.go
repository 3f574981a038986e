package launcher

import (
	"context"
	"fmt"

	"github.com/digitalocean/go-libvirt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/domain"
	"github.com/virtkube/virtkube/internal/launcherrpc"
)

var _ launcherrpc.StatsServer = (*Launcher)(nil)

// statsTypes are the groups of counters GetStats asks libvirt for.
const statsTypes = libvirt.DomainStatsCPUTotal | libvirt.DomainStatsBalloon |
	libvirt.DomainStatsVCPU | libvirt.DomainStatsInterface | libvirt.DomainStatsBlock

// GetStats reads the domain's counters from libvirt in one call
// (virConnectGetAllDomainStats). A domain that does not run answers
// codes.NotFound.
func (l *Launcher) GetStats(context.Context, *launcherrpc.Empty) (*launcherrpc.DomainStats, error) {
	name := domain.Name(&virtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Namespace: l.cfg.Namespace, Name: l.cfg.Name}})
	dom, err := l.conn.DomainLookupByName(name)
	if isNoDomain(err) {
		return nil, status.Errorf(codes.NotFound, "domain %s does not run", name)
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	records, err := l.conn.ConnectGetAllDomainStats([]libvirt.Domain{dom}, uint32(statsTypes), 0)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "domain stats of %s: %v", name, err)
	}
	if len(records) != 1 {
		return nil, status.Errorf(codes.NotFound, "domain %s does not run", name)
	}
	st := statsOf(records[0].Params)
	return &st, nil
}

// statsOf reads libvirt's typed parameters ("cpu.time", "vcpu.0.time",
// "net.0.rx.bytes", ...) into DomainStats. Times come in nanoseconds,
// memory in KiB.
func statsOf(params []libvirt.TypedParam) launcherrpc.DomainStats {
	p := make(map[string]any, len(params))
	for _, tp := range params {
		p[tp.Field] = tp.Value.I
	}
	st := launcherrpc.DomainStats{
		CPUSeconds:    float64(number(p["cpu.time"])) / 1e9,
		ResidentBytes: number(p["balloon.rss"]) * 1024,
		DomainBytes:   number(p["balloon.maximum"]) * 1024,
	}
	for i := range int(number(p["vcpu.maximum"])) {
		key := func(s string) any { return p[fmt.Sprintf("vcpu.%d.%s", i, s)] }
		if key("state") == nil {
			continue
		}
		st.VCPUs = append(st.VCPUs, launcherrpc.VCPUStats{
			ID: i, State: vcpuState(number(key("state"))), Seconds: float64(number(key("time"))) / 1e9,
		})
	}
	for i := range int(number(p["net.count"])) {
		key := func(s string) any { return p[fmt.Sprintf("net.%d.%s", i, s)] }
		name, _ := key("name").(string)
		st.Interfaces = append(st.Interfaces, launcherrpc.InterfaceStats{
			Name: name, RxBytes: number(key("rx.bytes")), TxBytes: number(key("tx.bytes")),
		})
	}
	for i := range int(number(p["block.count"])) {
		key := func(s string) any { return p[fmt.Sprintf("block.%d.%s", i, s)] }
		name, _ := key("name").(string)
		st.Blocks = append(st.Blocks, launcherrpc.BlockStats{
			Name: name, ReadBytes: number(key("rd.bytes")), WriteBytes: number(key("wr.bytes")),
		})
	}
	return st
}

// number is a numeric typed parameter's value; 0 when absent.
func number(v any) uint64 {
	switch n := v.(type) {
	case uint64:
		return n
	case int64:
		return uint64(max(n, 0))
	case uint32:
		return uint64(n)
	case int32:
		return uint64(max(n, 0))
	}
	return 0
}

// vcpuState names libvirt's virVcpuState.
func vcpuState(s uint64) string {
	switch libvirt.VCPUState(s) {
	case libvirt.VCPURunning:
		return "running"
	case libvirt.VCPUBlocked:
		return "blocked"
	}
	return "offline"
}
