package vm

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"
)

var now = time.Unix(100000, 0)

func testVM(mutate ...func(*virtv1.VirtualMachine)) *virtv1.VirtualMachine {
	vm := &virtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: "vm1", Namespace: "ns", UID: "vm-uid", Generation: 3},
		Spec: virtv1.VirtualMachineSpec{
			RunStrategy: ptr.To(virtv1.RunStrategyAlways),
			Template: &virtv1.VirtualMachineInstanceTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"note": "x"}},
			},
		},
	}
	for _, m := range mutate {
		m(vm)
	}
	return vm
}

func withStrategy(s virtv1.VirtualMachineRunStrategy) func(*virtv1.VirtualMachine) {
	return func(vm *virtv1.VirtualMachine) { vm.Spec.RunStrategy = &s }
}

func withRequests(reqs ...virtv1.VirtualMachineStateChangeRequest) func(*virtv1.VirtualMachine) {
	return func(vm *virtv1.VirtualMachine) { vm.Status.StateChangeRequests = reqs }
}

func withStatusStrategy(s virtv1.VirtualMachineRunStrategy) func(*virtv1.VirtualMachine) {
	return func(vm *virtv1.VirtualMachine) { vm.Status.RunStrategy = s }
}

func testVMI(phase virtv1.VirtualMachineInstancePhase, mutate ...func(*virtv1.VirtualMachineInstance)) *virtv1.VirtualMachineInstance {
	vmi := &virtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "vm1", Namespace: "ns", UID: "vmi-uid"},
		Status:     virtv1.VirtualMachineInstanceStatus{Phase: phase},
	}
	for _, m := range mutate {
		m(vmi)
	}
	return vmi
}

func deleting(vmi *virtv1.VirtualMachineInstance) {
	vmi.DeletionTimestamp = ptr.To(metav1.NewTime(now))
}

func stop(uid types.UID) virtv1.VirtualMachineStateChangeRequest {
	r := virtv1.VirtualMachineStateChangeRequest{Action: virtv1.StopRequest}
	if uid != "" {
		r.UID = &uid
	}
	return r
}

var start = virtv1.VirtualMachineStateChangeRequest{Action: virtv1.StartRequest}

func TestRunStrategy(t *testing.T) {
	tests := []struct {
		name    string
		spec    virtv1.VirtualMachineSpec
		want    virtv1.VirtualMachineRunStrategy
		wantErr bool
	}{
		{"nothing set means Halted", virtv1.VirtualMachineSpec{}, virtv1.RunStrategyHalted, false},
		{"running true", virtv1.VirtualMachineSpec{Running: ptr.To(true)}, virtv1.RunStrategyAlways, false},
		{"running false", virtv1.VirtualMachineSpec{Running: ptr.To(false)}, virtv1.RunStrategyHalted, false},
		{"runStrategy", virtv1.VirtualMachineSpec{RunStrategy: ptr.To(virtv1.RunStrategyRerunOnFailure)}, virtv1.RunStrategyRerunOnFailure, false},
		{"both set", virtv1.VirtualMachineSpec{Running: ptr.To(true), RunStrategy: ptr.To(virtv1.RunStrategyAlways)}, "", true},
		{"unsupported", virtv1.VirtualMachineSpec{RunStrategy: ptr.To(virtv1.RunStrategyWaitAsReceiver)}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runStrategy(&virtv1.VirtualMachine{Spec: tt.spec})
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("runStrategy = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := runStrategy(&virtv1.VirtualMachine{Spec: virtv1.VirtualMachineSpec{Running: ptr.To(true), RunStrategy: ptr.To(virtv1.RunStrategyHalted)}}); !errors.Is(err, errRunningAndRunStrategy) {
		t.Errorf("both set: error %v, want errRunningAndRunStrategy", err)
	}
}

func TestTrimDoneRequests(t *testing.T) {
	running := testVMI(virtv1.Running)
	tests := []struct {
		name string
		reqs []virtv1.VirtualMachineStateChangeRequest
		vmi  *virtv1.VirtualMachineInstance
		want int
	}{
		{"stop for the running VMI waits", []virtv1.VirtualMachineStateChangeRequest{stop("vmi-uid"), start}, running, 2},
		{"stop done when the VMI is gone", []virtv1.VirtualMachineStateChangeRequest{stop("vmi-uid"), start}, nil, 1},
		{"stop done when another VMI runs, start done too", []virtv1.VirtualMachineStateChangeRequest{stop("old-uid"), start}, running, 0},
		{"stop without uid waits for any VMI", []virtv1.VirtualMachineStateChangeRequest{stop("")}, running, 1},
		{"start waits while the VMI is deleting", []virtv1.VirtualMachineStateChangeRequest{start}, testVMI(virtv1.Running, deleting), 1},
		{"start waits while the VMI is finished", []virtv1.VirtualMachineStateChangeRequest{start}, testVMI(virtv1.Failed), 1},
		{"start done once a VMI is pending", []virtv1.VirtualMachineStateChangeRequest{start}, testVMI(""), 0},
		{"only the head counts", []virtv1.VirtualMachineStateChangeRequest{start, stop("other")}, nil, 2},
		{"unknown action dropped", []virtv1.VirtualMachineStateChangeRequest{{Action: "Reboot"}}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := trimDoneRequests(tt.reqs, tt.vmi); len(got) != tt.want {
				t.Errorf("%d requests left (%+v), want %d", len(got), got, tt.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	backingOff := func(vm *virtv1.VirtualMachine) {
		vm.Status.StartFailure = &virtv1.VirtualMachineStartFailure{ConsecutiveFailCount: 1,
			RetryAfterTimestamp: ptr.To(metav1.NewTime(now.Add(7 * time.Second)))}
	}
	tests := []struct {
		name         string
		vm           *virtv1.VirtualMachine
		vmi          *virtv1.VirtualMachineInstance
		want         action
		requestStart bool
		retryIn      time.Duration
	}{
		// Always
		{"Always starts", testVM(), nil, startVMI, false, 0},
		{"Always leaves a running VMI", testVM(), testVMI(virtv1.Running), noAction, false, 0},
		{"Always restarts a failed VMI", testVM(), testVMI(virtv1.Failed), stopVMI, false, 0},
		{"Always restarts a succeeded VMI", testVM(), testVMI(virtv1.Succeeded), stopVMI, false, 0},
		{"Always restart request", testVM(withRequests(stop("vmi-uid"), start)), testVMI(virtv1.Running), stopVMI, false, 0},
		{"Always ignores a stop for another VMI", testVM(withRequests(stop("old"))), testVMI(virtv1.Running), noAction, false, 0},
		{"Always waits for a deleting VMI", testVM(), testVMI(virtv1.Failed, deleting), noAction, false, 0},
		{"Always backs off", testVM(backingOff), nil, backOff, false, 7 * time.Second},
		{"Always after the back-off", testVM(backingOff, func(vm *virtv1.VirtualMachine) {
			vm.Status.StartFailure.RetryAfterTimestamp = ptr.To(metav1.NewTime(now.Add(-time.Second)))
		}), nil, startVMI, false, 0},
		// RerunOnFailure
		{"RerunOnFailure first start", testVM(withStrategy(virtv1.RunStrategyRerunOnFailure)), nil, startVMI, false, 0},
		{"RerunOnFailure coming from Halted starts", testVM(withStrategy(virtv1.RunStrategyRerunOnFailure), withStatusStrategy(virtv1.RunStrategyHalted)), nil, startVMI, false, 0},
		{"RerunOnFailure failed VMI: delete and request a start", testVM(withStrategy(virtv1.RunStrategyRerunOnFailure)), testVMI(virtv1.Failed), stopVMI, true, 0},
		{"RerunOnFailure succeeded VMI: delete only", testVM(withStrategy(virtv1.RunStrategyRerunOnFailure)), testVMI(virtv1.Succeeded), stopVMI, false, 0},
		{"RerunOnFailure stop request", testVM(withStrategy(virtv1.RunStrategyRerunOnFailure), withRequests(stop("vmi-uid"))), testVMI(virtv1.Running), stopVMI, false, 0},
		{"RerunOnFailure stays down after success", testVM(withStrategy(virtv1.RunStrategyRerunOnFailure), withStatusStrategy(virtv1.RunStrategyRerunOnFailure)), nil, noAction, false, 0},
		{"RerunOnFailure start request", testVM(withStrategy(virtv1.RunStrategyRerunOnFailure), withStatusStrategy(virtv1.RunStrategyRerunOnFailure), withRequests(start)), nil, startVMI, false, 0},
		{"RerunOnFailure start request backs off", testVM(withStrategy(virtv1.RunStrategyRerunOnFailure), withStatusStrategy(virtv1.RunStrategyRerunOnFailure), withRequests(start), backingOff), nil, backOff, false, 7 * time.Second},
		// Manual
		{"Manual does not start by itself", testVM(withStrategy(virtv1.RunStrategyManual)), nil, noAction, false, 0},
		{"Manual start request", testVM(withStrategy(virtv1.RunStrategyManual), withRequests(start)), nil, startVMI, false, 0},
		{"Manual start request ignores back-off", testVM(withStrategy(virtv1.RunStrategyManual), withRequests(start), backingOff), nil, startVMI, false, 0},
		{"Manual stop request", testVM(withStrategy(virtv1.RunStrategyManual), withRequests(stop("vmi-uid"))), testVMI(virtv1.Running), stopVMI, false, 0},
		{"Manual stop request without uid", testVM(withStrategy(virtv1.RunStrategyManual), withRequests(stop(""))), testVMI(virtv1.Running), stopVMI, false, 0},
		{"Manual keeps a finished VMI", testVM(withStrategy(virtv1.RunStrategyManual)), testVMI(virtv1.Succeeded), noAction, false, 0},
		// Halted
		{"Halted deletes the VMI", testVM(withStrategy(virtv1.RunStrategyHalted)), testVMI(virtv1.Running), stopVMI, false, 0},
		{"Halted stays stopped", testVM(withStrategy(virtv1.RunStrategyHalted)), nil, noAction, false, 0},
		{"Halted start request switches to Always", testVM(withStrategy(virtv1.RunStrategyHalted), withRequests(start)), nil, switchToAlways, false, 0},
		// Once
		{"Once starts", testVM(withStrategy(virtv1.RunStrategyOnce)), nil, startVMI, false, 0},
		{"Once lets it run", testVM(withStrategy(virtv1.RunStrategyOnce)), testVMI(virtv1.Running), noAction, false, 0},
		{"Once keeps the failed VMI", testVM(withStrategy(virtv1.RunStrategyOnce)), testVMI(virtv1.Failed), noAction, false, 0},
		{"Once keeps the succeeded VMI", testVM(withStrategy(virtv1.RunStrategyOnce), withStatusStrategy(virtv1.RunStrategyOnce)), testVMI(virtv1.Succeeded), noAction, false, 0},
		{"Once starts another when the finished one is deleted", testVM(withStrategy(virtv1.RunStrategyOnce), withStatusStrategy(virtv1.RunStrategyOnce)), nil, startVMI, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			strategy, err := runStrategy(tt.vm)
			if err != nil {
				t.Fatal(err)
			}
			d := decide(tt.vm, tt.vmi, strategy, now)
			if d.action != tt.want || d.requestStart != tt.requestStart || d.retryIn != tt.retryIn {
				t.Errorf("decide = %+v; want action %d, requestStart %v, retryIn %s", d, tt.want, tt.requestStart, tt.retryIn)
			}
		})
	}
}
