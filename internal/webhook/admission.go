package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	jsonpatch "gomodules.xyz/jsonpatch/v2"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
)

// Resources the webhooks serve, as an AdmissionRequest names them.
const (
	VMIs   = "virtualmachineinstances"
	VMs    = "virtualmachines"
	VMIRSs = "virtualmachineinstancereplicasets"
)

// templateSpec is where the VMI spec sits in each resource's JSON.
var templateSpec = map[string][]string{
	VMIs:   {"spec"},
	VMs:    {"spec", "template", "spec"},
	VMIRSs: {"spec", "template", "spec"},
}

// Mutate returns the JSON patch that defaults raw, an object of resource
// being created (create) or updated. A VMI is defaulted on create only: its
// spec is fixed afterwards. VM and VMIRS templates are defaulted on both, so
// an edited template keeps its machine type. An object that does not decode
// gets no patch: the validating webhook then refuses it with field paths.
// Neither does one without spec.domain.devices: the schema requires it, and
// a patch that created it would hide that from the API server's error.
//
// The patch is computed against raw itself, not a re-encoding, so fields
// the Go types do not round-trip are left alone.
func Mutate(resource string, create bool, raw []byte, cfg Config) ([]jsonpatch.JsonPatchOperation, error) {
	path, ok := templateSpec[resource]
	if !ok {
		return nil, fmt.Errorf("no defaults for resource %q", resource)
	}
	if !hasDevices(raw, path) {
		return nil, nil
	}
	var defaulted any
	switch resource {
	case VMIs:
		if !create {
			return nil, nil
		}
		vmi := &virtv1.VirtualMachineInstance{}
		if decode(raw, vmi) != nil {
			return nil, nil
		}
		if err := DefaultVMI(vmi, cfg); err != nil {
			return nil, err
		}
		defaulted = vmi
	case VMs:
		vm := &virtv1.VirtualMachine{}
		if decode(raw, vm) != nil || vm.Spec.Template == nil {
			return nil, nil
		}
		DefaultTemplate(&vm.Spec.Template.Spec, cfg)
		defaulted = vm
	case VMIRSs:
		rs := &virtv1.VirtualMachineInstanceReplicaSet{}
		if decode(raw, rs) != nil || rs.Spec.Template == nil {
			return nil, nil
		}
		DefaultTemplate(&rs.Spec.Template.Spec, cfg)
		defaulted = rs
	}
	out, err := json.Marshal(defaulted)
	if err != nil {
		return nil, err
	}
	ops, err := jsonpatch.CreatePatch(raw, out)
	if err != nil {
		return nil, err
	}
	// Status is virt-controller's, and the Go types write an empty one.
	return slices.DeleteFunc(ops, func(op jsonpatch.JsonPatchOperation) bool {
		return op.Path == "/status" || strings.HasPrefix(op.Path, "/status/")
	}), nil
}

// Validate checks raw, an object of resource being created (old is nil) or
// updated (old is the stored object). It returns the problems a user can
// fix, as field errors, and warnings; err is for requests that are not
// objects at all.
func Validate(resource string, raw, old []byte, cfg Config) (errs field.ErrorList, warnings []string, err error) {
	path, ok := templateSpec[resource]
	if !ok {
		return nil, nil, fmt.Errorf("no validation for resource %q", resource)
	}
	var untyped map[string]any
	if err := json.Unmarshal(raw, &untyped); err != nil {
		return nil, nil, fmt.Errorf("decode %s: %w", resource, err)
	}
	if old != nil {
		var prev map[string]any
		if err := json.Unmarshal(old, &prev); err != nil {
			return nil, nil, fmt.Errorf("decode stored %s: %w", resource, err)
		}
		if !judgeUpdate(resource, prev, untyped) {
			return nil, nil, nil
		}
	}
	spec, _ := nestedMap(untyped, path...)
	if errs := validateCPU(field.NewPath(path[0], path[1:]...).Child("domain", "cpu"), spec); len(errs) > 0 {
		return errs, nil, nil
	}

	switch resource {
	case VMIs:
		vmi := &virtv1.VirtualMachineInstance{}
		if err := decode(raw, vmi); err != nil {
			return decodeErrors(err)
		}
		if old == nil {
			errs, warnings = ValidateVMI(vmi, cfg)
			return errs, warnings, nil
		}
		prev := &virtv1.VirtualMachineInstance{}
		if err := decode(old, prev); err != nil {
			return nil, nil, fmt.Errorf("decode stored %s: %w", resource, err)
		}
		return ValidateVMIUpdate(prev, vmi), nil, nil
	case VMs:
		vm := &virtv1.VirtualMachine{}
		if err := decode(raw, vm); err != nil {
			return decodeErrors(err)
		}
		errs, warnings = ValidateVM(vm, cfg)
	case VMIRSs:
		rs := &virtv1.VirtualMachineInstanceReplicaSet{}
		if err := decode(raw, rs); err != nil {
			return decodeErrors(err)
		}
		errs, warnings = ValidateVMIRS(rs, cfg)
	}
	return errs, warnings, nil
}

// hasDevices says whether the VMI spec at path in raw has domain.devices.
func hasDevices(raw []byte, path []string) bool {
	var untyped map[string]any
	if json.Unmarshal(raw, &untyped) != nil {
		return false
	}
	spec, _ := nestedMap(untyped, path...)
	_, ok := nestedMap(spec, "domain", "devices")
	return ok
}

// judgeUpdate says whether an update needs checking. An object being
// deleted is let through, so finalizers can always be removed; so is a VM or
// VMIRS update that leaves the spec alone (a label, a finalizer): it is not
// re-judged against feature gates that may have changed since it was
// admitted. A VMI's update is always checked, against its stored spec.
func judgeUpdate(resource string, old, updated map[string]any) bool {
	if meta, _ := nestedMap(updated, "metadata"); meta["deletionTimestamp"] != nil {
		return false
	}
	return resource == VMIs || !reflect.DeepEqual(old["spec"], updated["spec"])
}

func decode(raw []byte, into any) error { return json.Unmarshal(raw, into) }

// decodeErrors turns a value of the wrong type (say, a negative bootOrder)
// into a field error; anything else is not an object of the resource.
func decodeErrors(err error) (field.ErrorList, []string, error) {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		parts := strings.Split(typeErr.Field, ".")
		return field.ErrorList{field.Invalid(field.NewPath(parts[0], parts[1:]...), typeErr.Value,
			fmt.Sprintf("must be a value of type %s", typeErr.Type))}, nil, nil
	}
	return nil, nil, err
}

func nestedMap(m map[string]any, path ...string) (map[string]any, bool) {
	for _, p := range path {
		next, ok := m[p].(map[string]any)
		if !ok {
			return nil, false
		}
		m = next
	}
	return m, true
}
