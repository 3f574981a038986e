package virtapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes"
	virtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/virtkube/virtkube/internal/webhook"
)

// validateDataVolume is CDI's datavolume-validate webhook: a DataVolume
// being created is checked (webhook.ValidateDataVolume) and, when it
// clones a claim, its creator's right to read that claim is asked of the
// API server (webhook.AuthorizeClone); an update may not change the spec.
// One being deleted is let through, so its finalizers can go.
func validateDataVolume(ctx context.Context, review webhook.AccessReviewer, req admission.Request) admission.Response {
	dv, errs, err := webhook.DecodeDataVolume(req.Object.Raw)
	switch {
	case err != nil:
		return admission.Errored(http.StatusBadRequest, err)
	case len(errs) > 0:
		return invalid(req, errs, nil)
	}
	if dv.DeletionTimestamp != nil {
		return admission.Allowed("")
	}
	if req.Operation == admissionv1.Update {
		old := &cdiv1.DataVolume{}
		if err := json.Unmarshal(req.OldObject.Raw, old); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode stored DataVolume: %w", err))
		}
		if errs := webhook.ValidateDataVolumeUpdate(old, dv); len(errs) > 0 {
			return invalid(req, errs, nil)
		}
		return admission.Allowed("")
	}
	if errs := webhook.ValidateDataVolume(dv); len(errs) > 0 {
		return invalid(req, errs, nil)
	}
	forbidden, err := webhook.AuthorizeClone(ctx, dv, req.Namespace, req.UserInfo, review)
	switch {
	case err != nil:
		return admission.Errored(http.StatusInternalServerError, err)
	case forbidden != nil:
		return invalid(req, field.ErrorList{forbidden}, nil)
	}
	return admission.Allowed("")
}

// authorizeVM checks the clone sources of the DataVolume templates of a VM
// being created or updated against the VM's ServiceAccount
// (webhook.AuthorizeDataVolumeTemplates), as KubeVirt: virt-controller
// makes those DataVolumes as itself, so CDI's webhook would not see who
// asked. A VM being deleted is let through.
func authorizeVM(ctx context.Context, review webhook.AccessReviewer, req admission.Request) (field.ErrorList, error) {
	vm := &virtv1.VirtualMachine{}
	if err := json.Unmarshal(req.Object.Raw, vm); err != nil {
		return nil, fmt.Errorf("decode VirtualMachine: %w", err)
	}
	if vm.DeletionTimestamp != nil || len(vm.Spec.DataVolumeTemplates) == 0 {
		return nil, nil
	}
	var old *virtv1.VirtualMachine
	if req.Operation == admissionv1.Update {
		old = &virtv1.VirtualMachine{}
		if err := json.Unmarshal(req.OldObject.Raw, old); err != nil {
			return nil, fmt.Errorf("decode stored VirtualMachine: %w", err)
		}
	}
	return webhook.AuthorizeDataVolumeTemplates(ctx, vm, old, req.Namespace, review)
}

// newAccessReviewer asks the API server with SubjectAccessReviews. Each
// DataVolume create (or VM write with a new clone template) asks afresh: a permission just granted or taken away
// counts at once.
func newAccessReviewer(c kubernetes.Interface) webhook.AccessReviewer {
	return func(ctx context.Context, spec authorizationv1.SubjectAccessReviewSpec) (bool, error) {
		sar, err := c.AuthorizationV1().SubjectAccessReviews().Create(ctx,
			&authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return sar.Status.Allowed, nil
	}
}
