package subresource

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"
)

// KubeVirt's refusals of a port forward.
const (
	msgVMIPausedNow  = "VMI is paused"
	msgNoInterfaces  = "no network interfaces are present"
	msgVMINotStarted = "VMI is not started"
)

// forwardTarget is the {port} and {protocol} of a portforward path; the
// protocol defaults to tcp, as with KubeVirt.
func forwardTarget(r *http.Request) (port int, protocol string, err *apierrors.StatusError) {
	protocol = r.PathValue("protocol")
	if protocol == "" {
		protocol = "tcp"
	}
	if protocol != "tcp" && protocol != "udp" {
		return 0, "", apierrors.NewBadRequest(fmt.Sprintf("protocol %q is not supported: use tcp or udp", protocol))
	}
	port, perr := strconv.Atoi(r.PathValue("port"))
	if perr != nil || port < 1 || port > 65535 {
		return 0, "", apierrors.NewBadRequest(fmt.Sprintf("port %q: must be a number from 1 to 65535", r.PathValue("port")))
	}
	return port, protocol, nil
}

// forwardable: a tunnel needs a running guest with a network; a paused
// guest would only leave it hanging.
func forwardable(vmi *virtv1.VirtualMachineInstance) *apierrors.StatusError {
	if paused(vmi) {
		return conflict(vmiResource, vmi.Name, msgVMIPausedNow)
	}
	if serr := streamable(vmi); serr != nil {
		return serr
	}
	if len(vmi.Status.Interfaces) == 0 {
		return apierrors.NewBadRequest(msgNoInterfaces)
	}
	return nil
}

// vmiPortForward is GET .../virtualmachineinstances/{name}/portforward/{port}[/{protocol}].
func (s *Server) vmiPortForward(w http.ResponseWriter, r *http.Request) {
	port, protocol, serr := forwardTarget(r)
	if serr != nil {
		writeError(w, serr)
		return
	}
	vmi, err := s.vmi(r, forwardable)
	if err != nil {
		writeError(w, err)
		return
	}
	s.proxyStream(w, r, vmi, forwardPath(port, protocol))
}

// vmPortForward is the same through a VM: the tunnel goes to the VMI the VM
// created.
func (s *Server) vmPortForward(w http.ResponseWriter, r *http.Request) {
	port, protocol, serr := forwardTarget(r)
	if serr != nil {
		writeError(w, serr)
		return
	}
	vmi, err := s.vmiOfVM(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if serr := forwardable(vmi); serr != nil {
		writeError(w, serr)
		return
	}
	s.proxyStream(w, r, vmi, forwardPath(port, protocol))
}

// forwardPath is virt-handler's subresource for one forwarded port; the
// protocol is always spelled out there.
func forwardPath(port int, protocol string) string {
	return fmt.Sprintf("portforward/%d/%s", port, protocol)
}

// vmiOfVM reads the request's VM and the VMI it created, as KubeVirt does:
// 404 for a missing VM or VMI, 409 for a VM that created none.
func (s *Server) vmiOfVM(r *http.Request) (*virtv1.VirtualMachineInstance, error) {
	vm, vmi, err := s.vmAndVMI(r)
	switch {
	case err != nil:
		return nil, err
	case !vm.Status.Created:
		return nil, conflict(vmResource, vm.Name, msgVMINotStarted)
	case vmi == nil:
		return nil, apierrors.NewNotFound(vmiResource, vm.Name)
	case !metav1.IsControlledBy(vmi, vm):
		return nil, apierrors.NewInternalError(errors.New("unable to retrieve vmi [" + vm.Name + "] for vm"))
	}
	return vmi, nil
}
