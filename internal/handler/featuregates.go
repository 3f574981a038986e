package handler

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
)

// Feature gates of the KubeVirt CR that volumes need, as in KubeVirt.
const (
	HostDiskGate = "HostDisk"
	// hostDiskMisspelt is how the seed walkthrough spells HostDisk; it is
	// accepted with a warning that names the right spelling.
	hostDiskMisspelt = "HardDisk"
)

// checkFeatureGates says whether vmi may run with the KubeVirt CR's gates:
// an error names the volume and the gate to enable; a warning is for a gate
// that works but is misspelt.
func checkFeatureGates(vmi *virtv1.VirtualMachineInstance, gates []string) (warning string, err error) {
	for i, v := range vmi.Spec.Volumes {
		if v.HostDisk == nil {
			continue
		}
		switch {
		case slices.Contains(gates, HostDiskGate):
		case slices.Contains(gates, hostDiskMisspelt):
			warning = fmt.Sprintf("feature gate %q is taken as %q; spell it %q in the KubeVirt CR", hostDiskMisspelt, HostDiskGate, HostDiskGate)
		default:
			return "", field.Forbidden(field.NewPath("spec", "volumes").Index(i).Child("hostDisk"),
				fmt.Sprintf("hostDisk volumes need the %s feature gate: add it to spec.configuration.developerConfiguration.featureGates of the KubeVirt CR kubevirt/kubevirt", HostDiskGate))
		}
	}
	return warning, nil
}
