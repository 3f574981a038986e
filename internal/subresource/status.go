package subresource

import (
	"encoding/json"
	"errors"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The resources KubeVirt names in its errors (singular, as its messages
// read: `virtualmachine.kubevirt.io "vm1" not found`).
var (
	vmResource  = schema.GroupResource{Group: "kubevirt.io", Resource: "virtualmachine"}
	vmiResource = schema.GroupResource{Group: "kubevirt.io", Resource: "virtualmachineinstance"}
)

// KubeVirt's messages for a refused action.
const (
	msgVMNotRunning   = "VM is not running"
	msgVMIRunning     = "VM is already running"
	msgVMINotRunning  = "VMI is not running"
	msgVMIPaused      = "VMI is already paused"
	msgVMINotPaused   = "VMI is not paused"
	msgRequestPending = "unable to complete request: stop/start already underway"
)

// conflict is KubeVirt's 409 for an action the object's state forbids.
func conflict(gr schema.GroupResource, name, msg string) *apierrors.StatusError {
	return apierrors.NewConflict(gr, name, errors.New(msg))
}

func notFound(path string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
		Message: "the server could not find the requested resource " + path,
	}}
}

func notImplemented(msg string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusNotImplemented, Message: msg,
	}}
}

// writeError answers with err as a Kubernetes Status, the body kubectl and
// KubeVirt's client decode; an error that carries no status is a 500.
func writeError(w http.ResponseWriter, err error) {
	var s apierrors.APIStatus
	if !errors.As(err, &s) {
		s = apierrors.NewInternalError(err)
	}
	status := s.Status()
	status.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}
	if status.Code == 0 {
		status.Code = http.StatusInternalServerError
	}
	writeJSON(w, int(status.Code), status)
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}
