package handler

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/controller/vmi"
	"github.com/virtkube/virtkube/internal/launcher"
	"github.com/virtkube/virtkube/internal/launcherrpc"
)

func TestReflectPause(t *testing.T) {
	now := metav1.Now()
	running := launcherrpc.DomainStatus{State: string(launcher.StateRunning)}
	pausedBy := func(r launcher.PauseReason) launcherrpc.DomainStatus {
		return launcherrpc.DomainStatus{State: string(launcher.StatePaused), PauseReason: string(r)}
	}
	cond := func(t virtv1.VirtualMachineInstanceConditionType, s corev1.ConditionStatus, reason, msg string) virtv1.VirtualMachineInstanceCondition {
		return virtv1.VirtualMachineInstanceCondition{Type: t, Status: s, Reason: reason, Message: msg}
	}
	ready := cond(virtv1.VirtualMachineInstanceReady, corev1.ConditionTrue, "", "")
	notReady := cond(virtv1.VirtualMachineInstanceReady, corev1.ConditionFalse, "ReadinessGatesNotReady",
		`the status of pod readiness gate "kubevirt.io/virtual-machine-unpaused" is not "True", but False`)
	byUser := cond(virtv1.VirtualMachineInstancePaused, corev1.ConditionTrue, "PausedByUser", "VMI was paused by user")
	emulated := cond(virtv1.VirtualMachineInstanceSoftwareEmulation, corev1.ConditionTrue, "SoftwareEmulation", "")

	for _, tc := range []struct {
		name   string
		before []virtv1.VirtualMachineInstanceCondition
		domain launcherrpc.DomainStatus
		want   []virtv1.VirtualMachineInstanceCondition
	}{
		{"running stays ready", []virtv1.VirtualMachineInstanceCondition{ready, emulated}, running,
			[]virtv1.VirtualMachineInstanceCondition{ready, emulated}},
		{"paused by the user", []virtv1.VirtualMachineInstanceCondition{ready, emulated}, pausedBy(launcher.PauseUser),
			[]virtv1.VirtualMachineInstanceCondition{notReady, emulated, byUser}},
		{"paused on an I/O error", []virtv1.VirtualMachineInstanceCondition{ready}, pausedBy(launcher.PauseIOError),
			[]virtv1.VirtualMachineInstanceCondition{notReady,
				cond(virtv1.VirtualMachineInstancePaused, corev1.ConditionTrue, "PausedIOError", "VMI was paused, low-level IO error detected")}},
		{"unpaused", []virtv1.VirtualMachineInstanceCondition{notReady, emulated, byUser}, running,
			[]virtv1.VirtualMachineInstanceCondition{ready, emulated}},
		{"paused for another reason shows no condition", []virtv1.VirtualMachineInstanceCondition{ready}, pausedBy(launcher.PauseStartingUp),
			[]virtv1.VirtualMachineInstanceCondition{ready}},
		{"an ended domain is left to the phase logic", []virtv1.VirtualMachineInstanceCondition{notReady, byUser},
			launcherrpc.DomainStatus{State: string(launcher.StateGone)},
			[]virtv1.VirtualMachineInstanceCondition{notReady, byUser}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &virtv1.VirtualMachineInstance{Status: virtv1.VirtualMachineInstanceStatus{
				Phase: virtv1.Running, Conditions: append([]virtv1.VirtualMachineInstanceCondition(nil), tc.before...)}}
			reflectPause(v, tc.domain, now)
			var got []virtv1.VirtualMachineInstanceCondition
			for _, c := range v.Status.Conditions {
				got = append(got, cond(c.Type, c.Status, c.Reason, c.Message))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("conditions = %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("condition %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
			if v.Status.Phase != virtv1.Running {
				t.Errorf("phase = %s, want Running", v.Status.Phase)
			}
		})
	}
}

// vmiReader serves VMIs from a map, as the API server would answer Get.
type vmiReader map[client.ObjectKey]*virtv1.VirtualMachineInstance

func (r vmiReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	v, ok := r[key]
	if !ok {
		return apierrors.NewNotFound(virtv1.Resource("virtualmachineinstances"), key.Name)
	}
	v.DeepCopyInto(obj.(*virtv1.VirtualMachineInstance))
	return nil
}

func (vmiReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("not used")
}

// pausingLauncher is a launcher that only pauses and unpauses, refusing as
// the real one does.
type pausingLauncher struct {
	launcherrpc.Server
	mu     sync.Mutex
	paused bool
}

func (l *pausingLauncher) Pause(context.Context, *launcherrpc.Empty) (*launcherrpc.Empty, error) {
	return l.set(true, launcherrpc.MsgAlreadyPaused)
}

func (l *pausingLauncher) Unpause(context.Context, *launcherrpc.Empty) (*launcherrpc.Empty, error) {
	return l.set(false, launcherrpc.MsgNotPaused)
}

func (l *pausingLauncher) set(paused bool, refusal string) (*launcherrpc.Empty, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.paused == paused {
		return nil, status.Error(codes.FailedPrecondition, refusal)
	}
	l.paused = paused
	return &launcherrpc.Empty{}, nil
}

// The pause and unpause endpoints: routes, 404 for VMIs this node does not
// run, 409 with KubeVirt's words, and the launcher's refusals passed on.
func TestPauseEndpoints(t *testing.T) {
	root := t.TempDir()
	const node, podUID = "node1", types.UID("p1")
	vmiOf := func(name, nodeName string, phase virtv1.VirtualMachineInstancePhase) *virtv1.VirtualMachineInstance {
		return &virtv1.VirtualMachineInstance{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Status: virtv1.VirtualMachineInstanceStatus{NodeName: nodeName, Phase: phase,
				ActivePods: map[types.UID]string{podUID: nodeName}},
		}
	}
	vmis := vmiReader{}
	for _, v := range []*virtv1.VirtualMachineInstance{
		vmiOf("guest", node, virtv1.Running),
		vmiOf("elsewhere", "node2", virtv1.Running),
		vmiOf("starting", node, virtv1.Scheduled),
	} {
		vmis[client.ObjectKeyFromObject(v)] = v
	}
	pods := PodDirs{KubeletRoot: root}
	sockets := pods.EmptyDir(podUID, vmi.SocketsVolume)
	if err := os.MkdirAll(sockets, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	socket := filepath.Join(sockets, launcherrpc.SocketName)
	go func() { _ = launcherrpc.Serve(ctx, socket, &pausingLauncher{}) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the launcher socket never appeared")
		}
	}

	srv := httptest.NewServer((&ConsoleServer{Client: vmis, NodeName: node, Pods: pods}).Handler())
	defer srv.Close()
	for _, step := range []struct {
		method, vmi, verb string
		wantCode          int
		wantBody          string
	}{
		{http.MethodPut, "guest", "pause", http.StatusOK, ""},
		{http.MethodPut, "guest", "pause", http.StatusConflict, "VMI is already paused"},
		{http.MethodPut, "guest", "unpause", http.StatusOK, ""},
		{http.MethodPut, "guest", "unpause", http.StatusConflict, "VMI is not paused"},
		{http.MethodPut, "starting", "pause", http.StatusConflict, "VM is not running"},
		{http.MethodPut, "starting", "unpause", http.StatusConflict, "VMI is not running"},
		{http.MethodPut, "elsewhere", "pause", http.StatusNotFound, "does not run on node node1"},
		{http.MethodPut, "missing", "unpause", http.StatusNotFound, "does not run on node node1"},
		{http.MethodGet, "guest", "pause", http.StatusMethodNotAllowed, ""},
	} {
		req, err := http.NewRequest(step.method, srv.URL+"/v1/namespaces/ns/virtualmachineinstances/"+step.vmi+"/"+step.verb, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != step.wantCode || !strings.Contains(body, step.wantBody) {
			t.Errorf("%s %s of %s = %d %q, want %d %q", step.method, step.verb, step.vmi, resp.StatusCode, body, step.wantCode, step.wantBody)
		}
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
