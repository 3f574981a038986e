package vm

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// dataVolumePoll is how often a VM waiting for its DataVolumes looks again
// (the VM controller does not watch DataVolumes: CDI's API is optional).
const dataVolumePoll = 2 * time.Second

// reconcileDataVolumes creates the DataVolumes of spec.dataVolumeTemplates
// that do not exist yet, controlled by vm so they go with it, and reports
// whether all of them are Succeeded: the VMI starts only then, as in
// KubeVirt.
func (r *Reconciler) reconcileDataVolumes(ctx context.Context, vm *virtv1.VirtualMachine) (bool, error) {
	ready := true
	for i := range vm.Spec.DataVolumeTemplates {
		t := &vm.Spec.DataVolumeTemplates[i]
		dv := &unstructured.Unstructured{}
		dv.SetGroupVersionKind(dataVolumeGVK)
		err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: t.Name}, dv)
		switch {
		case apierrors.IsNotFound(err):
			want, err := dataVolumeFor(vm, t)
			if err != nil {
				return false, err
			}
			if err := r.Client.Create(ctx, want); err != nil && !apierrors.IsAlreadyExists(err) {
				return false, fmt.Errorf("create DataVolume %s of spec.dataVolumeTemplates[%d]: %w", t.Name, i, err)
			}
			r.Recorder.Eventf(vm, "Normal", "SuccessfulDataVolumeCreate", "Created DataVolume %s", t.Name)
			ready = false
		case meta.IsNoMatchError(err):
			return false, fmt.Errorf("spec.dataVolumeTemplates[%d]: the DataVolume API (cdi.kubevirt.io) is not installed", i)
		case err != nil:
			return false, fmt.Errorf("get DataVolume %s: %w", t.Name, err)
		default:
			phase, _, _ := unstructured.NestedString(dv.Object, "status", "phase")
			ready = ready && phase == "Succeeded"
		}
	}
	return ready, nil
}

// dataVolumeFor is the DataVolume of template t, controlled by vm.
func dataVolumeFor(vm *virtv1.VirtualMachine, t *virtv1.DataVolumeTemplateSpec) (*unstructured.Unstructured, error) {
	spec, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&t.Spec)
	if err != nil {
		return nil, fmt.Errorf("DataVolume template %s: %w", t.Name, err)
	}
	dv := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	dv.SetGroupVersionKind(dataVolumeGVK)
	dv.SetNamespace(vm.Namespace)
	dv.SetName(t.Name)
	dv.SetLabels(t.Labels)
	dv.SetAnnotations(t.Annotations)
	dv.SetOwnerReferences([]metav1.OwnerReference{*metav1.NewControllerRef(vm, virtv1.VirtualMachineGroupVersionKind)})
	return dv, nil
}
