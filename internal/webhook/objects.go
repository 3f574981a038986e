package webhook

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
)

// runStrategies are the values spec.runStrategy of a VM may take.
var runStrategies = []string{
	string(virtv1.RunStrategyAlways), string(virtv1.RunStrategyHalted), string(virtv1.RunStrategyManual),
	string(virtv1.RunStrategyRerunOnFailure), string(virtv1.RunStrategyOnce), string(virtv1.RunStrategyWaitAsReceiver),
}

// vmiRules are the checks of a VMI itself; templateRules those of the
// template of a VM or VMIRS.
var (
	vmiRules      = specRules{volumesNeedDevices: true, memoryRequired: true}
	templateRules = specRules{}
)

// ValidateVMI checks a VMI being created.
func ValidateVMI(vmi *virtv1.VirtualMachineInstance, cfg Config) (field.ErrorList, []string) {
	return validateSpec(field.NewPath("spec"), &vmi.Spec, cfg, vmiRules)
}

// ValidateVMIUpdate checks an update of a VMI: its spec is fixed once it is
// created (KubeVirt lets only its own components change it, for hotplug;
// virtkube's components do not), while metadata and status may change. The
// one exception is terminationGracePeriodSeconds: `virtctl stop
// --grace-period` shortens it on the running VMI before stopping its VM, as
// KubeVirt's virt-api does.
func ValidateVMIUpdate(old, updated *virtv1.VirtualMachineInstance) field.ErrorList {
	var errs field.ErrorList
	if g := updated.Spec.TerminationGracePeriodSeconds; g != nil && *g < 0 && !equality.Semantic.DeepEqual(g, old.Spec.TerminationGracePeriodSeconds) {
		errs = append(errs, field.Invalid(field.NewPath("spec", "terminationGracePeriodSeconds"), *g, "must be greater than or equal to 0"))
	}
	rest := updated.Spec.DeepCopy()
	rest.TerminationGracePeriodSeconds = old.Spec.TerminationGracePeriodSeconds
	if equality.Semantic.DeepEqual(old.Spec, *rest) {
		return errs
	}
	for _, name := range changedFields(old.Spec, *rest) {
		errs = append(errs, field.Forbidden(field.NewPath("spec", name),
			"the spec of a VirtualMachineInstance cannot change after it is created, except terminationGracePeriodSeconds; delete and recreate it, or use a VirtualMachine and restart it"))
	}
	return errs
}

// changedFields lists the top-level JSON fields that differ between a and b,
// so an update error points at what changed rather than at all of spec.
func changedFields(a, b any) []string {
	var am, bm map[string]json.RawMessage
	aj, _ := json.Marshal(a)
	bj, _ := json.Marshal(b)
	_ = json.Unmarshal(aj, &am)
	_ = json.Unmarshal(bj, &bm)
	var changed []string
	for k, v := range am {
		if w, ok := bm[k]; !ok || string(v) != string(w) {
			changed = append(changed, k)
		}
	}
	for k := range bm {
		if _, ok := am[k]; !ok {
			changed = append(changed, k)
		}
	}
	slices.Sort(changed)
	if len(changed) == 0 { // equal JSON, semantically different quantities
		changed = []string{"domain"}
	}
	return changed
}

// ValidateVM checks a VM being created or updated: how it runs, its
// template as a VMI spec, and its DataVolume templates.
func ValidateVM(vm *virtv1.VirtualMachine, cfg Config) (field.ErrorList, []string) {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	switch s := vm.Spec.RunStrategy; {
	case vm.Spec.Running != nil && s != nil:
		errs = append(errs, field.Invalid(spec.Child("running"), *vm.Spec.Running,
			"running and runStrategy are mutually exclusive; set only runStrategy (running is deprecated)"))
	case vm.Spec.Running == nil && s == nil:
		errs = append(errs, field.Required(spec.Child("runStrategy"), "set one of: "+strings.Join(runStrategies, ", ")))
	}
	if s := vm.Spec.RunStrategy; s != nil && !slices.Contains(runStrategies, string(*s)) {
		errs = append(errs, field.NotSupported(spec.Child("runStrategy"), *s, runStrategies))
	}
	if vm.Spec.Template == nil {
		return append(errs, field.Required(spec.Child("template"), "the VirtualMachineInstance to run")), nil
	}
	tmpl := spec.Child("template", "spec")
	specErrs, warnings := validateSpec(tmpl, &vm.Spec.Template.Spec, cfg, templateRules)
	errs = append(errs, specErrs...)
	errs = append(errs, validateDataVolumeTemplates(spec, vm.Spec.DataVolumeTemplates, vm.Spec.Template.Spec.Volumes)...)
	return errs, warnings
}

// validateDataVolumeTemplates: each template has a unique DNS-1123 name and
// a dataVolume volume of the VM's template uses it, as KubeVirt requires.
func validateDataVolumeTemplates(spec *field.Path, templates []virtv1.DataVolumeTemplateSpec, volumes []virtv1.Volume) field.ErrorList {
	used := map[string]bool{}
	for _, v := range volumes {
		if v.DataVolume != nil {
			used[v.DataVolume.Name] = true
		}
	}
	var errs field.ErrorList
	seen := map[string]bool{}
	for i, t := range templates {
		p := spec.Child("dataVolumeTemplates").Index(i).Child("metadata", "name")
		switch {
		case t.Name == "":
			errs = append(errs, field.Required(p, "the name of the DataVolume to create"))
			continue
		case seen[t.Name]:
			errs = append(errs, field.Duplicate(p, t.Name))
		}
		seen[t.Name] = true
		for _, msg := range validation.IsDNS1123Subdomain(t.Name) {
			errs = append(errs, field.Invalid(p, t.Name, msg))
		}
		if !used[t.Name] {
			errs = append(errs, field.Invalid(p, t.Name,
				"no dataVolume volume in spec.template.spec.volumes uses this DataVolume; reference it as dataVolume: {name: "+t.Name+"}"))
		}
	}
	return errs
}

// ValidateVMIRS checks a VMIRS being created or updated: replicas, a
// selector that selects its own template, and the template as a VMI spec.
func ValidateVMIRS(rs *virtv1.VirtualMachineInstanceReplicaSet, cfg Config) (field.ErrorList, []string) {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if r := rs.Spec.Replicas; r != nil && *r < 0 {
		errs = append(errs, field.Invalid(spec.Child("replicas"), *r, "must be greater than or equal to 0"))
	}
	if rs.Spec.Template == nil {
		errs = append(errs, field.Required(spec.Child("template"), "the VirtualMachineInstance to replicate"))
	}
	errs = append(errs, validateSelector(spec, rs.Spec.Selector, rs.Spec.Template)...)
	if rs.Spec.Template == nil {
		return errs, nil
	}
	specErrs, warnings := validateSpec(spec.Child("template", "spec"), &rs.Spec.Template.Spec, cfg, templateRules)
	return append(errs, specErrs...), warnings
}

func validateSelector(spec *field.Path, sel *metav1.LabelSelector, tmpl *virtv1.VirtualMachineInstanceTemplateSpec) field.ErrorList {
	p := spec.Child("selector")
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return field.ErrorList{field.Required(p, "a label selector matching spec.template.metadata.labels")}
	}
	errs := metavalidation.ValidateLabelSelector(sel, metavalidation.LabelSelectorValidationOptions{}, p)
	if len(errs) > 0 || tmpl == nil {
		return errs
	}
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return field.ErrorList{field.Invalid(p, sel, err.Error())}
	}
	if !selector.Matches(labels.Set(tmpl.ObjectMeta.Labels)) {
		return field.ErrorList{field.Invalid(spec.Child("template", "metadata", "labels"), tmpl.ObjectMeta.Labels,
			fmt.Sprintf("selector %q does not match the template's labels; the replica set would never see its VMIs", selector))}
	}
	return nil
}
