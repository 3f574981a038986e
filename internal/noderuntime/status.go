package noderuntime

import (
	"fmt"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Reasons this runtime writes on pods and containers, kubelet's where
// kubelet has one.
const (
	ReasonContainerCreating      = "ContainerCreating"
	ReasonImagePullBackOff       = "ImagePullBackOff"
	ReasonCreateContainerError   = "CreateContainerError"
	ReasonCreateContainerConfig  = "CreateContainerConfigError"
	ReasonCompleted              = "Completed"
	ReasonError                  = "Error"
	ReasonStartError             = "StartError"
	ReasonUnsupportedVolume      = "UnsupportedVolume"
	ReasonUnsupportedPodSpec     = "UnsupportedPodSpec"
	ReasonContainersNotReady     = "ContainersNotReady"
	ReasonReadinessGatesNotReady = "ReadinessGatesNotReady"
	ReasonPodCompleted           = "PodCompleted"
	ReasonPodInitializing        = "PodInitializing"
	ReasonNotInitialized         = "ContainersNotInitialized"
)

// Kubelet's bounds on termination messages (pkg/kubelet/container's
// MaxContainerTerminationMessageLogLines, MaxContainerTerminationMessageLogLength
// and MaxPodTerminationMessageLogLength).
const (
	// maxTerminationMessageLogLines is how many of the last lines of its log
	// a failed container's message may hold.
	maxTerminationMessageLogLines = 80
	// maxTerminationMessageLogLength is how many of the last bytes of its log
	// a failed container's message may hold.
	maxTerminationMessageLogLength = 2048
	// maxPodTerminationMessageLength is how many bytes the messages of all of
	// a pod's containers may hold together: each container gets an even
	// share, and the end of a longer message is cut.
	maxPodTerminationMessageLength = 12 * 1024
)

// rejection is why a pod can never run on this node.
type rejection struct{ Reason, Message string }

// containerRun is what the runtime knows of one container.
type containerRun struct {
	Name    string
	Image   string
	ImageID string
	State   corev1.ContainerState
}

// podRun is what the runtime knows of one pod: the input of podStatus.
type podRun struct {
	Rejected     *rejection
	NetworkReady bool
	PodIP        string
	HostIP       string
	// InitContainers and Containers are in the order of the pod's spec.
	InitContainers []containerRun
	Containers     []containerRun
}

// podStatus is the status pod should have given what runs, a pure function.
// It starts from the pod's current status, so fields this runtime does not
// own (QOS class, conditions of other writers) are kept, as are transition
// times of conditions that did not change. A pod in a terminal phase stays
// there.
func podStatus(pod *corev1.Pod, run podRun, now metav1.Time) corev1.PodStatus {
	now = now.Rfc3339Copy()
	old := pod.Status
	st := *old.DeepCopy()
	st.Phase = podPhase(old.Phase, run)
	if run.Rejected != nil && !terminal(old.Phase) {
		st.Reason, st.Message = run.Rejected.Reason, run.Rejected.Message
	}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	if run.HostIP != "" {
		st.HostIP = run.HostIP
		st.HostIPs = []corev1.HostIP{{IP: run.HostIP}}
	}
	if run.PodIP != "" {
		st.PodIP = run.PodIP
		st.PodIPs = []corev1.PodIP{{IP: run.PodIP}}
	}

	messageShare := maxPodTerminationMessageLength
	if n := len(pod.Spec.InitContainers) + len(pod.Spec.Containers) + len(pod.Spec.EphemeralContainers); n > 0 {
		messageShare /= n
	}

	st.InitContainerStatuses = nil
	var uninitialized []string
	for _, c := range run.InitContainers {
		c.State = limitMessage(c.State, messageShare)
		done := c.State.Terminated != nil && c.State.Terminated.ExitCode == 0
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name:    c.Name,
			State:   c.State,
			Ready:   done,
			Started: ptr.To(c.State.Running != nil),
			Image:   c.Image,
			ImageID: c.ImageID,
		})
		if !done {
			uninitialized = append(uninitialized, c.Name)
		}
	}
	initialized := condition(corev1.PodInitialized, true, "", "")
	if len(uninitialized) > 0 {
		initialized = condition(corev1.PodInitialized, false, ReasonNotInitialized,
			fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(uninitialized, " ")))
	}

	st.ContainerStatuses = nil
	var unready []string
	for _, c := range run.Containers {
		if len(uninitialized) > 0 && c.State.Running == nil && c.State.Terminated == nil {
			c.State = waitingState(ReasonPodInitializing, "")
		}
		c.State = limitMessage(c.State, messageShare)
		running := c.State.Running != nil
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:    c.Name,
			State:   c.State,
			Ready:   running,
			Started: ptr.To(running),
			Image:   c.Image,
			ImageID: c.ImageID,
		})
		if !running {
			unready = append(unready, c.Name)
		}
	}

	containersReady := condition(corev1.ContainersReady, true, "", "")
	switch {
	case terminal(st.Phase):
		containersReady = condition(corev1.ContainersReady, false, ReasonPodCompleted, "")
	case len(unready) > 0:
		containersReady = condition(corev1.ContainersReady, false, ReasonContainersNotReady,
			fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " ")))
	}
	ready := podReady(pod.Spec.ReadinessGates, old.Conditions, containersReady)
	scheduled := condition(corev1.PodScheduled, true, "", "")
	if c := findCondition(old.Conditions, corev1.PodScheduled); c != nil {
		scheduled = *c
	}
	ours := []corev1.PodCondition{
		condition(corev1.PodReadyToStartContainers, run.NetworkReady, "", ""),
		initialized,
		ready,
		containersReady,
		scheduled,
	}
	st.Conditions = nil
	for _, c := range ours {
		if prev := findCondition(old.Conditions, c.Type); prev != nil && prev.Status == c.Status {
			c.LastTransitionTime = prev.LastTransitionTime
			c.LastProbeTime = prev.LastProbeTime
		} else {
			c.LastTransitionTime = now
		}
		st.Conditions = append(st.Conditions, c)
	}
	for _, c := range old.Conditions {
		if findCondition(ours, c.Type) == nil {
			st.Conditions = append(st.Conditions, c)
		}
	}
	return st
}

// podReady is the pod's Ready condition as kubelet computes it: that of
// ContainersReady while the containers are not ready, then False while the
// condition of any readiness gate is missing from conds or not True (other
// writers set those conditions, virt-controller the launcher's
// kubevirt.io/virtual-machine-unpaused), else True.
func podReady(gates []corev1.PodReadinessGate, conds []corev1.PodCondition, containersReady corev1.PodCondition) corev1.PodCondition {
	if containersReady.Status != corev1.ConditionTrue {
		ready := containersReady
		ready.Type = corev1.PodReady
		return ready
	}
	var unready []string
	for _, g := range gates {
		switch c := findCondition(conds, g.ConditionType); {
		case c == nil:
			unready = append(unready, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", g.ConditionType))
		case c.Status != corev1.ConditionTrue:
			unready = append(unready, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %s", g.ConditionType, c.Status))
		}
	}
	if len(unready) > 0 {
		return condition(corev1.PodReady, false, ReasonReadinessGatesNotReady, strings.Join(unready, ", "))
	}
	return condition(corev1.PodReady, true, "", "")
}

// podPhase is kubelet's phase for a pod whose restartPolicy is Never: Pending
// while an init container has not completed or a container waits, Failed
// when an init container failed, Succeeded or Failed once all have terminated,
// Running otherwise.
func podPhase(current corev1.PodPhase, run podRun) corev1.PodPhase {
	if terminal(current) {
		return current
	}
	if run.Rejected != nil {
		return corev1.PodFailed
	}
	if len(run.Containers) == 0 {
		return corev1.PodPending
	}
	for _, c := range run.InitContainers {
		switch t := c.State.Terminated; {
		case t != nil && t.ExitCode != 0:
			return corev1.PodFailed
		case t == nil:
			return corev1.PodPending
		}
	}
	terminated, failed := 0, false
	for _, c := range run.Containers {
		switch {
		case c.State.Terminated != nil:
			terminated++
			failed = failed || c.State.Terminated.ExitCode != 0
		case c.State.Running == nil:
			return corev1.PodPending
		}
	}
	switch {
	case terminated < len(run.Containers):
		return corev1.PodRunning
	case failed:
		return corev1.PodFailed
	default:
		return corev1.PodSucceeded
	}
}

func terminal(p corev1.PodPhase) bool { return p == corev1.PodSucceeded || p == corev1.PodFailed }

func condition(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
	s := corev1.ConditionFalse
	if ok {
		s = corev1.ConditionTrue
	}
	return corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg}
}

func findCondition(conds []corev1.PodCondition, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// terminatedState is a container's end as kubelet reports it, with its
// termination message (see terminationMessage).
func terminatedState(rec exitRecord, message string, started, finished metav1.Time) corev1.ContainerState {
	reason := rec.Reason
	if reason == "" {
		reason = ReasonCompleted
		if rec.Code != 0 {
			reason = ReasonError
		}
	}
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode:   rec.Code,
		Reason:     reason,
		Message:    message,
		StartedAt:  started.Rfc3339Copy(),
		FinishedAt: finished.Rfc3339Copy(),
	}}
}

func waitingState(reason, msg string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
}

func runningState(started metav1.Time) corev1.ContainerState {
	return corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started.Rfc3339Copy()}}
}

// limitMessage cuts the end of a terminated state's message to limit
// bytes, as kubelet does to keep the pod's status small, at a character
// boundary.
func limitMessage(st corev1.ContainerState, limit int) corev1.ContainerState {
	if st.Terminated == nil || len(st.Terminated.Message) <= limit {
		return st
	}
	t := *st.Terminated
	n := limit
	for n > 0 && !utf8.RuneStart(t.Message[n]) {
		n--
	}
	t.Message = t.Message[:n]
	st.Terminated = &t
	return st
}

// fallbackToLogs reports whether the message of spec's container, ended as
// rec says, is the tail of its log, as kubelet decides it: its
// terminationMessagePolicy is FallbackToLogsOnError and it failed (a
// container that could not even be started has no log worth reading). An
// unset policy is File, the API's default.
func fallbackToLogs(spec *corev1.Container, rec exitRecord) bool {
	return spec != nil && spec.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError &&
		rec.Code != 0 && rec.Reason != "ContainerCannotRun"
}

// logTail is a failed container's termination message from the end of its
// log: at most its last maxTerminationMessageLogLines lines and its last
// maxTerminationMessageLogLength bytes, as kubelet reads it. end is the end
// of the log (longer is fine), cut whether bytes of the log precede it. The
// message is valid UTF-8, so that it reads back from the API server as it
// was written: a character the byte limit cut is dropped, bytes that are no
// text are U+FFFD.
func logTail(end []byte, cut bool) string {
	if len(end) > maxTerminationMessageLogLength {
		end, cut = end[len(end)-maxTerminationMessageLogLength:], true
	}
	// The last byte ends the last line, a newline or not.
	for i, lines := len(end)-2, 0; i >= 0; i-- {
		if end[i] != '\n' {
			continue
		}
		if lines++; lines == maxTerminationMessageLogLines {
			end, cut = end[i+1:], false
			break
		}
	}
	for k := 0; cut && k < utf8.UTFMax-1 && len(end) > 0 && !utf8.RuneStart(end[0]); k++ {
		end = end[1:]
	}
	msg := strings.ToValidUTF8(string(end), string(utf8.RuneError))
	for len(msg) > maxTerminationMessageLogLength {
		_, size := utf8.DecodeRuneInString(msg)
		msg = msg[size:]
	}
	return msg
}
