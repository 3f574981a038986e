package noderuntime

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	t0 = metav1.NewTime(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
	t1 = metav1.NewTime(t0.Add(time.Minute))
	t2 = metav1.NewTime(t0.Add(2 * time.Minute))
)

func running(name string) containerRun {
	return containerRun{Name: name, Image: "img-" + name, ImageID: "id-" + name, State: runningState(t0)}
}
func waiting(name, reason string) containerRun {
	return containerRun{Name: name, Image: "img-" + name, State: waitingState(reason, "msg")}
}
func exited(name string, code int32) containerRun {
	return containerRun{Name: name, Image: "img-" + name, State: terminatedState(exitRecord{Code: code}, "", t0, t1)}
}

func TestPodPhase(t *testing.T) {
	tests := []struct {
		name    string
		current corev1.PodPhase
		run     podRun
		want    corev1.PodPhase
	}{
		{"nothing known yet", corev1.PodPending, podRun{}, corev1.PodPending},
		{"a container is being created", corev1.PodPending, podRun{Containers: []containerRun{running("compute"), waiting("volumeroot", ReasonContainerCreating)}}, corev1.PodPending},
		{"image pull failing", corev1.PodPending, podRun{Containers: []containerRun{waiting("compute", ReasonContainerCreating), waiting("volumeroot", "ErrImagePull")}}, corev1.PodPending},
		{"all running", corev1.PodPending, podRun{Containers: []containerRun{running("compute"), running("volumeroot")}}, corev1.PodRunning},
		{"one ended, one runs", corev1.PodRunning, podRun{Containers: []containerRun{exited("compute", 0), running("volumeroot")}}, corev1.PodRunning},
		{"all ended well", corev1.PodRunning, podRun{Containers: []containerRun{exited("compute", 0), exited("volumeroot", 0)}}, corev1.PodSucceeded},
		{"one ended badly", corev1.PodRunning, podRun{Containers: []containerRun{exited("compute", 1), exited("volumeroot", 0)}}, corev1.PodFailed},
		{"rejected", corev1.PodPending, podRun{Rejected: &rejection{Reason: ReasonUnsupportedVolume}, Containers: []containerRun{waiting("c", ReasonContainerCreating)}}, corev1.PodFailed},
		{"terminal stays terminal", corev1.PodSucceeded, podRun{Containers: []containerRun{running("compute")}}, corev1.PodSucceeded},
		{"failed stays failed", corev1.PodFailed, podRun{Containers: []containerRun{exited("compute", 0)}}, corev1.PodFailed},
		{"init container runs", corev1.PodPending, podRun{InitContainers: []containerRun{running("init")}, Containers: []containerRun{waiting("compute", ReasonPodInitializing)}}, corev1.PodPending},
		{"init container failed", corev1.PodPending, podRun{InitContainers: []containerRun{exited("init", 1)}, Containers: []containerRun{waiting("compute", ReasonPodInitializing)}}, corev1.PodFailed},
		{"initialized, all running", corev1.PodPending, podRun{InitContainers: []containerRun{exited("init", 0)}, Containers: []containerRun{running("compute")}}, corev1.PodRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := podPhase(tt.current, tt.run); got != tt.want {
				t.Errorf("podPhase = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPodStatus(t *testing.T) {
	scheduled := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: t0}
	pending := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, QOSClass: corev1.PodQOSBurstable, Conditions: []corev1.PodCondition{scheduled}}}
	tests := []struct {
		name  string
		pod   *corev1.Pod
		run   podRun
		check func(t *testing.T, st corev1.PodStatus)
	}{
		{
			name: "starting: Pending, not ready, unready containers named, scheduler's condition and QOS class kept",
			pod:  pending,
			run:  podRun{NetworkReady: true, PodIP: "10.250.0.2", HostIP: "192.0.2.1", Containers: []containerRun{running("compute"), waiting("volumeroot", "ErrImagePull")}},
			check: func(t *testing.T, st corev1.PodStatus) {
				want(t, "phase", st.Phase, corev1.PodPending)
				want(t, "QOS", st.QOSClass, corev1.PodQOSBurstable)
				want(t, "podIP", st.PodIP, "10.250.0.2")
				want(t, "podIPs", len(st.PodIPs), 1)
				want(t, "hostIP", st.HostIP, "192.0.2.1")
				want(t, "startTime", st.StartTime.Time, t2.Time)
				c := cond(t, st, corev1.PodReady)
				want(t, "Ready", c.Status, corev1.ConditionFalse)
				want(t, "Ready reason", c.Reason, ReasonContainersNotReady)
				want(t, "Ready message", c.Message, "containers with unready status: [volumeroot]")
				want(t, "ContainersReady", cond(t, st, corev1.ContainersReady).Status, corev1.ConditionFalse)
				want(t, "Initialized", cond(t, st, corev1.PodInitialized).Status, corev1.ConditionTrue)
				want(t, "ReadyToStart", cond(t, st, corev1.PodReadyToStartContainers).Status, corev1.ConditionTrue)
				want(t, "PodScheduled time", cond(t, st, corev1.PodScheduled).LastTransitionTime, t0)
				want(t, "statuses", len(st.ContainerStatuses), 2)
				cs := st.ContainerStatuses[1]
				want(t, "waiting reason", cs.State.Waiting.Reason, "ErrImagePull")
				want(t, "ready", cs.Ready, false)
				cs = st.ContainerStatuses[0]
				want(t, "compute ready", cs.Ready, true)
				want(t, "compute started", *cs.Started, true)
				want(t, "compute image", cs.Image, "img-compute")
				want(t, "compute imageID", cs.ImageID, "id-compute")
				want(t, "restarts", cs.RestartCount, int32(0))
			},
		},
		{
			name: "all running: Running and Ready",
			pod:  pending,
			run:  podRun{NetworkReady: true, PodIP: "10.250.0.2", Containers: []containerRun{running("compute"), running("volumeroot")}},
			check: func(t *testing.T, st corev1.PodStatus) {
				want(t, "phase", st.Phase, corev1.PodRunning)
				want(t, "Ready", cond(t, st, corev1.PodReady).Status, corev1.ConditionTrue)
				want(t, "ContainersReady", cond(t, st, corev1.ContainersReady).Status, corev1.ConditionTrue)
				want(t, "Ready time", cond(t, st, corev1.PodReady).LastTransitionTime, t2)
			},
		},
		{
			name: "ended: Failed, Ready False PodCompleted, exit code and reason",
			pod:  &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &t0, Conditions: []corev1.PodCondition{scheduled}}},
			run:  podRun{NetworkReady: true, Containers: []containerRun{exited("compute", 2), exited("volumeroot", 0)}},
			check: func(t *testing.T, st corev1.PodStatus) {
				want(t, "phase", st.Phase, corev1.PodFailed)
				want(t, "startTime kept", st.StartTime.Time, t0.Time)
				c := cond(t, st, corev1.PodReady)
				want(t, "Ready", c.Status, corev1.ConditionFalse)
				want(t, "Ready reason", c.Reason, ReasonPodCompleted)
				term := st.ContainerStatuses[0].State.Terminated
				want(t, "exit code", term.ExitCode, int32(2))
				want(t, "reason", term.Reason, ReasonError)
				want(t, "finished", term.FinishedAt, t1)
				want(t, "other reason", st.ContainerStatuses[1].State.Terminated.Reason, ReasonCompleted)
			},
		},
		{
			name: "rejected: Failed with the reason on the pod",
			pod:  pending,
			run:  podRun{Rejected: &rejection{Reason: ReasonUnsupportedVolume, Message: "volume x"}, Containers: []containerRun{waiting("compute", ReasonContainerCreating)}},
			check: func(t *testing.T, st corev1.PodStatus) {
				want(t, "phase", st.Phase, corev1.PodFailed)
				want(t, "reason", st.Reason, ReasonUnsupportedVolume)
				want(t, "message", st.Message, "volume x")
				want(t, "ReadyToStart", cond(t, st, corev1.PodReadyToStartContainers).Status, corev1.ConditionFalse)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, podStatus(tt.pod, tt.run, t2))
		})
	}
}

// While an init container runs, the pod is not Initialized, says which
// init container it waits for, and its containers wait with
// PodInitializing, as kubelet reports it.
func TestPodStatusInitContainers(t *testing.T) {
	pod := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}
	run := podRun{NetworkReady: true,
		InitContainers: []containerRun{running("container-disk-binary")},
		Containers:     []containerRun{waiting("compute", ReasonContainerCreating)}}
	st := podStatus(pod, run, t1)
	want(t, "phase", st.Phase, corev1.PodPending)
	init := cond(t, st, corev1.PodInitialized)
	want(t, "Initialized", init.Status, corev1.ConditionFalse)
	want(t, "Initialized message", init.Message, "containers with incomplete status: [container-disk-binary]")
	if len(st.InitContainerStatuses) != 1 || st.InitContainerStatuses[0].State.Running == nil || st.InitContainerStatuses[0].Ready {
		t.Errorf("init container statuses = %+v", st.InitContainerStatuses)
	}
	if w := st.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != ReasonPodInitializing {
		t.Errorf("compute while initializing: %+v", st.ContainerStatuses[0].State)
	}

	run.InitContainers[0] = exited("container-disk-binary", 0)
	run.Containers[0] = running("compute")
	st = podStatus(pod, run, t2)
	want(t, "phase once initialized", st.Phase, corev1.PodRunning)
	want(t, "Initialized once done", cond(t, st, corev1.PodInitialized).Status, corev1.ConditionTrue)
	want(t, "init container ready once done", st.InitContainerStatuses[0].Ready, true)
}

// A status computed again from the same facts is equal to the written one,
// so nothing is written twice; only a change moves transition times.
func TestPodStatusStable(t *testing.T) {
	pod := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}
	run := podRun{NetworkReady: true, PodIP: "10.250.0.2", Containers: []containerRun{running("compute")}}
	first := podStatus(pod, run, metav1.NewTime(t0.Add(1500*time.Millisecond)))
	pod.Status = first
	again := podStatus(pod, run, t2)
	if !equality.Semantic.DeepEqual(first, again) {
		t.Fatalf("status changed without a change:\n%+v\n%+v", first, again)
	}
	if got := cond(t, first, corev1.PodReady).LastTransitionTime; !got.Equal(&metav1.Time{Time: t0.Add(time.Second)}) {
		t.Errorf("times are not truncated to seconds: %v", got)
	}
	run.Containers[0] = exited("compute", 0)
	later := podStatus(pod, run, t2)
	want(t, "Ready time after a change", cond(t, later, corev1.PodReady).LastTransitionTime, t2)
	want(t, "Initialized time kept", cond(t, later, corev1.PodInitialized).LastTransitionTime, cond(t, first, corev1.PodInitialized).LastTransitionTime)
}

func cond(t *testing.T, st corev1.PodStatus, ty corev1.PodConditionType) corev1.PodCondition {
	t.Helper()
	if c := findCondition(st.Conditions, ty); c != nil {
		return *c
	}
	t.Fatalf("no %s condition in %+v", ty, st.Conditions)
	return corev1.PodCondition{}
}

func want[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// Ready also needs every readiness gate's condition True, with kubelet's
// reason and messages; ContainersReady ignores the gates; the gate
// conditions, written by others (virt-controller for the launcher's), are
// kept as they are.
func TestPodStatusReadinessGates(t *testing.T) {
	const unpaused = corev1.PodConditionType("kubevirt.io/virtual-machine-unpaused")
	gate := func(ty corev1.PodConditionType, s corev1.ConditionStatus) corev1.PodCondition {
		return corev1.PodCondition{Type: ty, Status: s, Reason: "ByOther", Message: "set by its owner", LastTransitionTime: t0}
	}
	up := []containerRun{running("compute"), running("volumeroot")}
	tests := []struct {
		name                string
		gates               []corev1.PodConditionType
		conds               []corev1.PodCondition
		containers          []containerRun
		wantReady           corev1.ConditionStatus
		wantReason, wantMsg string
		wantContainersReady corev1.ConditionStatus
	}{
		{"no gates", nil, nil, up, corev1.ConditionTrue, "", "", corev1.ConditionTrue},
		{"gate condition True", []corev1.PodConditionType{unpaused}, []corev1.PodCondition{gate(unpaused, corev1.ConditionTrue)}, up,
			corev1.ConditionTrue, "", "", corev1.ConditionTrue},
		{"gate condition missing", []corev1.PodConditionType{unpaused}, nil, up,
			corev1.ConditionFalse, ReasonReadinessGatesNotReady, `corresponding condition of pod readiness gate "kubevirt.io/virtual-machine-unpaused" does not exist.`, corev1.ConditionTrue},
		{"gate condition False", []corev1.PodConditionType{unpaused}, []corev1.PodCondition{gate(unpaused, corev1.ConditionFalse)}, up,
			corev1.ConditionFalse, ReasonReadinessGatesNotReady, `the status of pod readiness gate "kubevirt.io/virtual-machine-unpaused" is not "True", but False`, corev1.ConditionTrue},
		{"two gates, one missing, one Unknown", []corev1.PodConditionType{"a.example/one", "b.example/two"}, []corev1.PodCondition{gate("b.example/two", corev1.ConditionUnknown)}, up,
			corev1.ConditionFalse, ReasonReadinessGatesNotReady,
			`corresponding condition of pod readiness gate "a.example/one" does not exist., the status of pod readiness gate "b.example/two" is not "True", but Unknown`, corev1.ConditionTrue},
		{"containers not ready come first", []corev1.PodConditionType{unpaused}, []corev1.PodCondition{gate(unpaused, corev1.ConditionFalse)},
			[]containerRun{running("compute"), waiting("volumeroot", ReasonContainerCreating)},
			corev1.ConditionFalse, ReasonContainersNotReady, "containers with unready status: [volumeroot]", corev1.ConditionFalse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: tt.conds}}
			for _, g := range tt.gates {
				pod.Spec.ReadinessGates = append(pod.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: g})
			}
			st := podStatus(pod, podRun{NetworkReady: true, Containers: tt.containers}, t2)
			r := cond(t, st, corev1.PodReady)
			want(t, "Ready", r.Status, tt.wantReady)
			want(t, "Ready reason", r.Reason, tt.wantReason)
			want(t, "Ready message", r.Message, tt.wantMsg)
			want(t, "ContainersReady", cond(t, st, corev1.ContainersReady).Status, tt.wantContainersReady)
			for _, c := range tt.conds {
				n := 0
				for _, got := range st.Conditions {
					if got.Type == c.Type {
						n++
						if !equality.Semantic.DeepEqual(got, c) {
							t.Errorf("condition %s = %+v, want it kept as %+v", c.Type, got, c)
						}
					}
				}
				want(t, "copies of "+string(c.Type), n, 1)
			}
		})
	}
}

// A failed container's message is the end of its log as kubelet reads it:
// at most the last 80 lines and the last 2048 bytes, valid UTF-8.
func TestLogTail(t *testing.T) {
	numbered := func(n, width int) string {
		var b strings.Builder
		for i := range n {
			line := fmt.Sprintf("line %03d ", i)
			b.WriteString(line + strings.Repeat("x", width-len(line)-1) + "\n")
		}
		return b.String()
	}
	hundredShort := numbered(100, 10)
	thirtyLong := numbered(30, 100)
	accents := strings.Repeat("é", 1500) + "\n"
	tests := []struct {
		name string
		log  string
		cut  bool
		want string
	}{
		{"empty log", "", false, ""},
		{"short log, whole", "progress\ncdi-importer: boom\n", false, "progress\ncdi-importer: boom\n"},
		{"no final newline", "progress\ncdi-importer: boom", false, "progress\ncdi-importer: boom"},
		{"80 lines, whole", numbered(80, 10), false, numbered(80, 10)},
		{"81 lines, the first goes", numbered(81, 10), false, numbered(81, 10)[10:]},
		{"81 lines without a final newline, the first goes", strings.TrimSuffix(numbered(81, 10), "\n"), false, strings.TrimSuffix(numbered(81, 10)[10:], "\n")},
		{"lines bound first: the last 80 of 100", hundredShort, false, hundredShort[20*10:]},
		{"bytes bound first: the last 2048 of 3000", thirtyLong, false, thirtyLong[len(thirtyLong)-2048:]},
		{"given the last bytes only, lines still count", hundredShort[len(hundredShort)-900:], true, hundredShort[20*10:]},
		{"a character cut by the byte bound goes", accents, false, strings.Repeat("é", 1023) + "\n"},
		{"a character cut by the read goes", "\xa9 tail é\n", true, " tail é\n"},
		{"bytes that are no text are U+FFFD", "bad \xff byte\n", false, "bad \uFFFD byte\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := logTail([]byte(tt.log), tt.cut)
			if got != tt.want {
				t.Errorf("logTail = %q (%d bytes), want %q (%d bytes)", got, len(got), tt.want, len(tt.want))
			}
			if len(got) > maxTerminationMessageLogLength || !utf8.ValidString(got) {
				t.Errorf("logTail = %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
			}
		})
	}
}

// Only a failed container with terminationMessagePolicy
// FallbackToLogsOnError gets its log as its message, as with kubelet.
func TestFallbackToLogs(t *testing.T) {
	fallback := &corev1.Container{TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError}
	file := &corev1.Container{TerminationMessagePolicy: corev1.TerminationMessageReadFile}
	tests := []struct {
		name string
		spec *corev1.Container
		rec  exitRecord
		want bool
	}{
		{"failed, FallbackToLogsOnError", fallback, exitRecord{Code: 1}, true},
		{"succeeded", fallback, exitRecord{Code: 0}, false},
		{"killed", fallback, exitRecord{Code: 137}, true},
		{"setup failed: its log says why", fallback, exitRecord{Code: exitStartError, Reason: ReasonStartError}, true},
		{"could not run at all", fallback, exitRecord{Code: 128, Reason: "ContainerCannotRun"}, false},
		{"policy File", file, exitRecord{Code: 1}, false},
		{"policy unset: File", &corev1.Container{}, exitRecord{Code: 1}, false},
		{"no spec (a gone pod's)", nil, exitRecord{Code: 1}, false},
	}
	for _, tt := range tests {
		if got := fallbackToLogs(tt.spec, tt.rec); got != tt.want {
			t.Errorf("%s: fallbackToLogs = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// Termination messages reach the statuses of init containers and
// containers; together they stay within kubelet's 12KiB per pod, each cut
// at its end to an even share.
func TestPodStatusTerminationMessages(t *testing.T) {
	pod := &corev1.Pod{
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init"}},
			Containers:     []corev1.Container{{Name: "importer"}, {Name: "chatty"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	share := maxPodTerminationMessageLength / 3
	long := strings.Repeat("é", share) // twice the share in bytes
	run := podRun{
		InitContainers: []containerRun{{Name: "init", State: terminatedState(exitRecord{Code: 0}, "", t0, t1)}},
		Containers: []containerRun{
			{Name: "importer", State: terminatedState(exitRecord{Code: 1}, "cdi-importer: boom\n", t1, t2)},
			{Name: "chatty", State: terminatedState(exitRecord{Code: 2}, "x"+long, t1, t2)},
		},
	}
	st := podStatus(pod, run, t2)
	want(t, "phase", st.Phase, corev1.PodFailed)
	want(t, "init message", st.InitContainerStatuses[0].State.Terminated.Message, "")
	want(t, "importer message", st.ContainerStatuses[0].State.Terminated.Message, "cdi-importer: boom\n")
	want(t, "importer reason", st.ContainerStatuses[0].State.Terminated.Reason, ReasonError)
	// "x" then two-byte characters: the share ends inside one, which goes.
	want(t, "long message", st.ContainerStatuses[1].State.Terminated.Message, "x"+long[:share-2])
	want(t, "long message in the run", run.Containers[1].State.Terminated.Message, "x"+long)

	failedInit := podRun{
		InitContainers: []containerRun{{Name: "init", State: terminatedState(exitRecord{Code: 1}, "copy failed\n", t0, t1)}},
		Containers:     []containerRun{waiting("importer", ReasonContainerCreating), waiting("chatty", ReasonContainerCreating)},
	}
	st = podStatus(&corev1.Pod{Spec: pod.Spec, Status: corev1.PodStatus{Phase: corev1.PodPending}}, failedInit, t2)
	want(t, "phase after a failed init container", st.Phase, corev1.PodFailed)
	want(t, "init message", st.InitContainerStatuses[0].State.Terminated.Message, "copy failed\n")
}
