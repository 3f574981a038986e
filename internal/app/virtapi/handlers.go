package virtapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/webhook"
)

// config is the KubeVirt CR's configuration as the cache holds it now; no
// CR means KubeVirt's defaults.
func (s *configSource) config(ctx context.Context) (webhook.Config, error) {
	kv := &virtv1.KubeVirt{}
	err := s.reader.Get(ctx, bootstrap.KubeVirtKey, kv)
	switch {
	case apierrors.IsNotFound(err):
		return webhook.ConfigFrom(nil), nil
	case err != nil:
		return webhook.Config{}, err
	}
	return webhook.ConfigFrom(kv), nil
}

// newMux routes each webhook path (see hooks) to its handler, plus
// /healthz for probes. review asks the API server what a user may do (the
// clone source of a DataVolume, or of a VM's DataVolume templates).
func newMux(kv *configSource, review webhook.AccessReviewer, log logr.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	for _, h := range hooks {
		var handle admission.HandlerFunc
		switch {
		case h.resource == webhook.DataVolumes:
			handle = func(ctx context.Context, req admission.Request) admission.Response {
				return validateDataVolume(ctx, review, req)
			}
		case h.mutating:
			handle = func(ctx context.Context, req admission.Request) admission.Response { return mutate(ctx, kv, req) }
		default:
			handle = func(ctx context.Context, req admission.Request) admission.Response {
				return validate(ctx, kv, review, req)
			}
		}
		wh := &admission.Webhook{Handler: handle}
		wh.LogConstructor = func(logr.Logger, *admission.Request) logr.Logger { return log.WithValues("webhook", h.path) }
		mux.Handle(h.path, wh)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	return mux
}

func mutate(ctx context.Context, kv *configSource, req admission.Request) admission.Response {
	cfg, err := kv.config(ctx)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	patch, err := webhook.Mutate(req.Resource.Resource, req.Operation == admissionv1.Create, req.Object.Raw, cfg)
	var fieldErr *field.Error
	switch {
	case errors.As(err, &fieldErr):
		return invalid(req, field.ErrorList{fieldErr}, nil)
	case err != nil:
		return admission.Errored(http.StatusBadRequest, err)
	}
	return admission.Patched("", patch...)
}

// validate runs webhook.Validate; a VM that passes has its DataVolume
// templates' clone sources authorized for the requesting user.
func validate(ctx context.Context, kv *configSource, review webhook.AccessReviewer, req admission.Request) admission.Response {
	cfg, err := kv.config(ctx)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	var old []byte
	if req.Operation == admissionv1.Update {
		old = req.OldObject.Raw
	}
	errs, warnings, err := webhook.Validate(req.Resource.Resource, req.Object.Raw, old, cfg)
	switch {
	case err != nil:
		return admission.Errored(http.StatusBadRequest, err)
	case len(errs) > 0:
		return invalid(req, errs, warnings)
	}
	if req.Resource.Resource == webhook.VMs {
		errs, err := authorizeVM(ctx, review, req)
		switch {
		case err != nil:
			return admission.Errored(http.StatusInternalServerError, err)
		case len(errs) > 0:
			return invalid(req, errs, warnings)
		}
	}
	return admission.Allowed("").WithWarnings(warnings...)
}

// invalid refuses req the way the API server refuses an invalid object
// itself: status 422, reason Invalid, one cause per field error, and a
// message naming the object and every field.
func invalid(req admission.Request, errs field.ErrorList, warnings []string) admission.Response {
	gk := schema.GroupKind{Group: req.Kind.Group, Kind: req.Kind.Kind}
	status := apierrors.NewInvalid(gk, req.Name, errs).ErrStatus
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{
		Allowed:  false,
		Result:   &status,
		Warnings: warnings,
	}}
}
