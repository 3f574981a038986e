package subresource

import (
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	virtv1 "kubevirt.io/api/core/v1"
)

// KubeVirt's refusal of a guest agent query; see guestAgent.
const msgNoGuestAgent = "VMI does not have guest agent connected"

// guestAgent answers guestosinfo, userlist and filesystemlist. virtkube has
// no guest agent channel, so every running VMI is one whose agent is not
// connected, and gets KubeVirt's 409 for that.
func (s *Server) guestAgent(w http.ResponseWriter, r *http.Request) {
	if _, err := s.vmi(r, agentConnected); err != nil {
		writeError(w, err)
		return
	}
	// Only a status someone else wrote claims an agent; there is none to ask.
	writeError(w, notImplemented("guest agent queries are not supported on this installation"))
}

func agentConnected(vmi *virtv1.VirtualMachineInstance) *apierrors.StatusError {
	if vmi.Status.Phase != virtv1.Running {
		return conflict(vmiResource, vmi.Name, msgVMINotRunning)
	}
	for _, c := range vmi.Status.Conditions {
		if c.Type == virtv1.VirtualMachineInstanceAgentConnected && c.Status == corev1.ConditionTrue {
			return nil
		}
	}
	return conflict(vmiResource, vmi.Name, msgNoGuestAgent)
}
