// Package webhook is virt-api's admission logic as pure functions: the
// defaults KubeVirt sets on VirtualMachineInstances (and on the templates of
// VirtualMachines and VirtualMachineInstanceReplicaSets) and the rules it
// checks, with errors built from k8s.io/apimachinery's field package so they
// read like the API server's own. internal/app/virtapi serves them.
package webhook

import (
	"fmt"
	"slices"

	virtv1 "kubevirt.io/api/core/v1"
)

// Feature gates of the KubeVirt CR that admission checks.
const (
	HostDiskGate    = "HostDisk"
	DataVolumesGate = "DataVolumes"
	// hostDiskMisspelt is how the seed walkthrough spells HostDisk. The node
	// agent accepts it (internal/handler/featuregates.go), so admission does
	// too, with a warning that names the right spelling.
	hostDiskMisspelt = "HardDisk"
)

// kubeVirtCR names the CR the configuration comes from, for messages.
const kubeVirtCR = "the KubeVirt CR kubevirt/kubevirt"

// Config is the part of the KubeVirt CR's spec.configuration that admission
// uses, with KubeVirt's defaults filled in.
type Config struct {
	// FeatureGates are developerConfiguration.featureGates, as written.
	FeatureGates []string
	// Architecture is the default spec.architecture ("amd64").
	Architecture string
	// MachineType is the default spec.domain.machine.type ("q35").
	MachineType string
	// NetworkInterface is the binding of the default pod interface
	// (network.defaultNetworkInterface: "bridge" unless set).
	NetworkInterface string
	// PermitBridgeOnPodNetwork is network.permitBridgeInterfaceOnPodNetwork
	// (true unless set).
	PermitBridgeOnPodNetwork bool
	// MemoryOvercommit is developerConfiguration.memoryOvercommit, in
	// percent (100 unless set): the memory request defaulted from
	// domain.memory.guest is guest*100/MemoryOvercommit.
	MemoryOvercommit int
	// EvictionStrategy is the cluster-wide default, nil when unset.
	EvictionStrategy *virtv1.EvictionStrategy
}

// DefaultConfig is the configuration of a KubeVirt CR with an empty spec.
func DefaultConfig() Config {
	return Config{
		Architecture:             "amd64",
		MachineType:              "q35",
		NetworkInterface:         string(virtv1.BridgeInterface),
		PermitBridgeOnPodNetwork: true,
		MemoryOvercommit:         100,
	}
}

// ConfigFrom reads kv's spec.configuration; a nil kv (no CR) gives the
// defaults.
func ConfigFrom(kv *virtv1.KubeVirt) Config {
	c := DefaultConfig()
	if kv == nil {
		return c
	}
	kc := kv.Spec.Configuration
	if d := kc.DeveloperConfiguration; d != nil {
		c.FeatureGates = slices.Clone(d.FeatureGates)
		if d.MemoryOvercommit > 0 {
			c.MemoryOvercommit = d.MemoryOvercommit
		}
	}
	if a := kc.ArchitectureConfiguration; a != nil && a.DefaultArchitecture != "" {
		c.Architecture = a.DefaultArchitecture
	}
	// The per-architecture machine type wins over the older top-level one.
	if kc.MachineType != "" {
		c.MachineType = kc.MachineType
	}
	if a := kc.ArchitectureConfiguration; a != nil && a.Amd64 != nil && a.Amd64.MachineType != "" && c.Architecture == "amd64" {
		c.MachineType = a.Amd64.MachineType
	}
	if n := kc.NetworkConfiguration; n != nil {
		if n.NetworkInterface != "" {
			c.NetworkInterface = n.NetworkInterface
		}
		if n.PermitBridgeInterfaceOnPodNetwork != nil {
			c.PermitBridgeOnPodNetwork = *n.PermitBridgeInterfaceOnPodNetwork
		}
	}
	c.EvictionStrategy = kc.EvictionStrategy
	return c
}

// gate says whether a feature gate is on, and warns when it is on only
// through a misspelling that virtkube tolerates.
func (c Config) gate(name string) (enabled bool, warning string) {
	if slices.Contains(c.FeatureGates, name) {
		return true, ""
	}
	if name == HostDiskGate && slices.Contains(c.FeatureGates, hostDiskMisspelt) {
		return true, fmt.Sprintf("feature gate %q is taken as %q; spell it %q in %s",
			hostDiskMisspelt, HostDiskGate, HostDiskGate, kubeVirtCR)
	}
	return false, ""
}
