package launcherrpc

import (
	"context"

	"google.golang.org/grpc"
)

const statsServiceName = "virtkube.launcher.v1.Stats"

// DomainStats are the domain's counters as libvirt reports them, in base
// units (seconds, bytes). virt-handler turns them into KubeVirt's
// kubevirt_vmi_* metrics.
type DomainStats struct {
	// CPUSeconds is the CPU time of the whole domain (vCPUs and QEMU's own
	// threads).
	CPUSeconds float64 `json:"cpuSeconds"`
	// ResidentBytes is the resident set of the QEMU process.
	ResidentBytes uint64 `json:"residentBytes"`
	// DomainBytes is the guest's memory as the domain defines it.
	DomainBytes uint64           `json:"domainBytes"`
	VCPUs       []VCPUStats      `json:"vcpus,omitempty"`
	Interfaces  []InterfaceStats `json:"interfaces,omitempty"`
	Blocks      []BlockStats     `json:"blocks,omitempty"`
}

// VCPUStats is one vCPU.
type VCPUStats struct {
	ID int `json:"id"`
	// State is libvirt's vCPU state: "offline", "running" or "blocked".
	State   string  `json:"state"`
	Seconds float64 `json:"seconds"`
}

// InterfaceStats is one network interface of the domain, by its host-side
// (tap) name.
type InterfaceStats struct {
	Name    string `json:"name"`
	RxBytes uint64 `json:"rxBytes"`
	TxBytes uint64 `json:"txBytes"`
}

// BlockStats is one disk of the domain, by its target name (vda, ...).
type BlockStats struct {
	Name       string `json:"name"`
	ReadBytes  uint64 `json:"readBytes"`
	WriteBytes uint64 `json:"writeBytes"`
}

// StatsServer is what a launcher that reports domain counters implements.
// It is a service of its own next to Server, so a launcher without it still
// serves the rest of the protocol.
type StatsServer interface {
	GetStats(context.Context, *Empty) (*DomainStats, error)
}

var statsServiceDesc = grpc.ServiceDesc{
	ServiceName: statsServiceName,
	HandlerType: (*StatsServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "GetStats",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			req := new(Empty)
			if err := dec(req); err != nil {
				return nil, err
			}
			return srv.(StatsServer).GetStats(ctx, req)
		},
	}},
}

// registerStats adds the stats service to s when impl offers it.
func registerStats(s *grpc.Server, impl Server) {
	if st, ok := impl.(StatsServer); ok {
		s.RegisterService(&statsServiceDesc, st)
	}
}

// GetStats reads the domain's counters.
func (c *Client) GetStats(ctx context.Context) (*DomainStats, error) {
	out := new(DomainStats)
	if err := c.conn.Invoke(ctx, "/"+statsServiceName+"/GetStats", &Empty{}, out); err != nil {
		return nil, err
	}
	return out, nil
}
