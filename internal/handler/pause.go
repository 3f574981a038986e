package handler

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/launcher"
	"github.com/virtkube/virtkube/internal/launcherrpc"
)

// The Paused condition as KubeVirt's virt-handler writes it. A VMI started
// with startStrategy Paused gets the user's reason too: libvirt reports a
// domain created paused as paused by the user, and KubeVirt shows just that.
const (
	ReasonPausedByUser  = "PausedByUser"
	MessagePausedByUser = "VMI was paused by user"
	ReasonPausedIOError = "PausedIOError"
	// MessagePausedIOError: QEMU stopped the guest on a disk error
	// (werror/rerror=stop).
	MessagePausedIOError = "VMI was paused, low-level IO error detected"
)

// reasonReadinessGatesNotReady is kubelet's reason for a pod that is not
// Ready because of a readiness gate.
const reasonReadinessGatesNotReady = "ReadinessGatesNotReady"

// pausedNotReadyMessage is what a paused KubeVirt VMI shows in its Ready
// condition: virt-controller turns the launcher pod's kubevirt.io/virtual-
// machine-unpaused readiness gate False (as here: internal/controller/vmi),
// kubelet makes the pod unready with this message, and KubeVirt copies the
// pod's Ready onto the VMI. virt-handler writes the VMI's side directly when
// it sees the domain paused, so clients see the same status at once.
var pausedNotReadyMessage = fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %s",
	virtv1.VirtualMachineUnpaused, corev1.ConditionFalse)

// reflectPause writes into a running VMI's status what its domain's pause
// state means: the Paused condition while libvirt holds the domain paused by
// the user (or on an I/O error), Ready False while that condition stands,
// and Ready True with no Paused condition once the guest runs again. Other
// domain states leave the status alone.
func reflectPause(v *virtv1.VirtualMachineInstance, st launcherrpc.DomainStatus, now metav1.Time) {
	var reason, msg string
	switch launcher.State(st.State) {
	case launcher.StateRunning:
	case launcher.StatePaused:
		switch launcher.PauseReason(st.PauseReason) {
		case launcher.PauseUser:
			reason, msg = ReasonPausedByUser, MessagePausedByUser
		case launcher.PauseIOError:
			reason, msg = ReasonPausedIOError, MessagePausedIOError
		}
	default:
		return
	}
	if reason == "" {
		removeCondition(v, virtv1.VirtualMachineInstancePaused)
		setCondition(v, virtv1.VirtualMachineInstanceReady, corev1.ConditionTrue, "", "", now)
		return
	}
	setCondition(v, virtv1.VirtualMachineInstancePaused, corev1.ConditionTrue, reason, msg, now)
	setCondition(v, virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, reasonReadinessGatesNotReady, pausedNotReadyMessage, now)
}

func removeCondition(v *virtv1.VirtualMachineInstance, t virtv1.VirtualMachineInstanceConditionType) {
	v.Status.Conditions = slices.DeleteFunc(v.Status.Conditions, func(c virtv1.VirtualMachineInstanceCondition) bool {
		return c.Type == t
	})
}

// msgVMINotRunning refuses an unpause of a VMI that is not running. KubeVirt
// says "VM is not running" (launcherrpc.MsgNotRunning) for a pause and this
// for an unpause.
const msgVMINotRunning = "VMI is not running"

// pauseTimeout bounds one suspend or resume: libvirt answers at once unless
// QEMU hangs.
const pauseTimeout = 30 * time.Second

// changePause pauses (pause) or unpauses a VMI of this node for virt-api. It
// answers 200 when done, 404 for a VMI this node does not run, and 409 with
// KubeVirt's words when the VMI is not running, already paused or not
// paused. The launcher decides the last two from libvirt's state, so a
// request that races the VMI's Paused condition is answered right.
func (s *ConsoleServer) changePause(w http.ResponseWriter, r *http.Request, pause bool) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	v := &virtv1.VirtualMachineInstance{}
	err := s.Client.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: name}, v)
	switch {
	case apierrors.IsNotFound(err) || (err == nil && v.Status.NodeName != s.NodeName):
		http.Error(w, fmt.Sprintf("VMI %s/%s does not run on node %s", ns, name, s.NodeName), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, fmt.Sprintf("VMI %s/%s: %v", ns, name, err), http.StatusInternalServerError)
		return
	}
	if v.Status.Phase != virtv1.Running {
		msg := launcherrpc.MsgNotRunning
		if !pause {
			msg = msgVMINotRunning
		}
		http.Error(w, msg, http.StatusConflict)
		return
	}
	dir := s.socketsDir(v)
	if dir == "" {
		http.Error(w, "no launcher pod on this node", http.StatusServiceUnavailable)
		return
	}
	lc, err := launcherrpc.Dial(filepath.Join(dir, launcherrpc.SocketName))
	if err != nil {
		http.Error(w, fmt.Sprintf("launcher of VMI %s/%s: %v", ns, name, err), http.StatusServiceUnavailable)
		return
	}
	defer lc.Close()
	change := lc.Unpause
	if pause {
		change = lc.Pause
	}
	ctx, cancel := context.WithTimeout(r.Context(), pauseTimeout)
	defer cancel()
	if err := change(ctx); err != nil {
		st := status.Convert(err)
		http.Error(w, st.Message(), httpStatusOf(st.Code()))
		return
	}
	klog.FromContext(r.Context()).Info("VMI pause changed", "vmi", klog.KObj(v), "paused", pause)
	w.WriteHeader(http.StatusOK)
}

// httpStatusOf is the HTTP status virt-api gets for a launcher's refusal.
func httpStatusOf(c codes.Code) int {
	switch c {
	case codes.FailedPrecondition:
		return http.StatusConflict
	case codes.Unavailable, codes.DeadlineExceeded:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
