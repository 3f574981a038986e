package subresource

import (
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// vmiCheck says why an action cannot be done on a VMI now, or nil.
type vmiCheck func(*virtv1.VirtualMachineInstance) *apierrors.StatusError

// streamable: a console or VNC needs a running VMI.
func streamable(vmi *virtv1.VirtualMachineInstance) *apierrors.StatusError {
	if vmi.Status.Phase != virtv1.Running {
		return apierrors.NewBadRequest(fmt.Sprintf("Unable to connect to VirtualMachineInstance because phase is %s instead of %s", vmi.Status.Phase, virtv1.Running))
	}
	return nil
}

func pausable(vmi *virtv1.VirtualMachineInstance) *apierrors.StatusError {
	switch {
	case vmi.Status.Phase != virtv1.Running:
		return conflict(vmiResource, vmi.Name, msgVMNotRunning)
	case vmi.Spec.LivenessProbe != nil:
		return apierrors.NewForbidden(vmiResource, vmi.Name, fmt.Errorf("Pausing VMIs with LivenessProbe is currently not supported"))
	case paused(vmi):
		return conflict(vmiResource, vmi.Name, msgVMIPaused)
	case vmi.Status.MigrationState != nil && !vmi.Status.MigrationState.Completed:
		return conflict(vmiResource, vmi.Name, fmt.Sprintf("Cannot pause VM '%s' because it is currently being migrated", vmi.Name))
	}
	return nil
}

func unpausable(vmi *virtv1.VirtualMachineInstance) *apierrors.StatusError {
	switch {
	case vmi.Status.Phase != virtv1.Running:
		return conflict(vmiResource, vmi.Name, msgVMINotRunning)
	case !paused(vmi):
		return conflict(vmiResource, vmi.Name, msgVMINotPaused)
	}
	return nil
}

func paused(vmi *virtv1.VirtualMachineInstance) bool {
	for _, c := range vmi.Status.Conditions {
		if c.Type == virtv1.VirtualMachineInstancePaused && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// vmi reads the request's VMI and runs check on it; a missing VMI is
// KubeVirt's 404.
func (s *Server) vmi(r *http.Request, check vmiCheck) (*virtv1.VirtualMachineInstance, error) {
	key := client.ObjectKey{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	vmi := &virtv1.VirtualMachineInstance{}
	if err := s.Client.Get(r.Context(), key, vmi); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, apierrors.NewNotFound(vmiResource, key.Name)
		}
		return nil, apierrors.NewInternalError(err)
	}
	if serr := check(vmi); serr != nil {
		return nil, serr
	}
	return vmi, nil
}

func (s *Server) console(w http.ResponseWriter, r *http.Request) { s.stream(w, r, "console") }
func (s *Server) vnc(w http.ResponseWriter, r *http.Request)     { s.stream(w, r, "vnc") }

// stream proxies a console or VNC websocket to virt-handler on the VMI's
// node. Every refusal comes before the upgrade, as a Status.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, what string) {
	vmi, err := s.vmi(r, streamable)
	if err != nil {
		writeError(w, err)
		return
	}
	s.proxyStream(w, r, vmi, what)
}

// proxyStream hands a websocket request on to virt-handler's subresource
// what of vmi, on the VMI's node.
func (s *Server) proxyStream(w http.ResponseWriter, r *http.Request, vmi *virtv1.VirtualMachineInstance, what string) {
	if s.Handlers == nil {
		writeError(w, apierrors.NewServiceUnavailable(errNoHandlers.Error()))
		return
	}
	addr, err := s.Handlers.address(r.Context(), vmi.Status.NodeName)
	if err != nil {
		writeError(w, err)
		return
	}
	s.Handlers.proxy(w, r, addr, handlerPath(vmi, what))
}

func (s *Server) pause(w http.ResponseWriter, r *http.Request) {
	var o virtv1.PauseOptions
	if err := decodeOptions(r, &o); err != nil {
		writeError(w, err)
		return
	}
	s.forward(w, r, "pause", pausable, o.DryRun)
}

func (s *Server) unpause(w http.ResponseWriter, r *http.Request) {
	var o virtv1.UnpauseOptions
	if err := decodeOptions(r, &o); err != nil {
		writeError(w, err)
		return
	}
	s.forward(w, r, "unpause", unpausable, o.DryRun)
}

// forward checks the VMI, then asks virt-handler on its node to act; a dry
// run stops after the checks. Success is 200, as with KubeVirt.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, action string, check vmiCheck, dryRun []string) {
	vmi, err := s.vmi(r, check)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(dryRun) > 0 && dryRun[0] == metav1.DryRunAll {
		w.WriteHeader(http.StatusOK)
		return
	}
	if s.Handlers == nil {
		writeError(w, apierrors.NewServiceUnavailable(errNoHandlers.Error()))
		return
	}
	addr, err := s.Handlers.address(r.Context(), vmi.Status.NodeName)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.Handlers.put(r.Context(), addr, handlerPath(vmi, action)); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
