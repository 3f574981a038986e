package subresource

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"
)

func vmWith(strategy virtv1.VirtualMachineRunStrategy, pending ...virtv1.StateChangeRequestAction) *virtv1.VirtualMachine {
	vm := &virtv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "vm1", Namespace: "ns"}}
	if strategy != "" {
		vm.Spec.RunStrategy = &strategy
	}
	for _, a := range pending {
		vm.Status.StateChangeRequests = append(vm.Status.StateChangeRequests, virtv1.VirtualMachineStateChangeRequest{Action: a})
	}
	if len(pending) == 0 {
		vm.Status.PrintableStatus = virtv1.VirtualMachineStatusStopped
	}
	return vm
}

func vmiIn(phase virtv1.VirtualMachineInstancePhase) *virtv1.VirtualMachineInstance {
	return &virtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "vm1", Namespace: "ns", UID: types.UID("uid-1")},
		Status:     virtv1.VirtualMachineInstanceStatus{Phase: phase},
	}
}

// ops decodes a JSON patch into "op path value" strings, which read well in
// a table.
func ops(t *testing.T, body []byte) []string {
	t.Helper()
	var patch []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(body, &patch); err != nil {
		t.Fatalf("not a JSON patch: %s", body)
	}
	var out []string
	for _, p := range patch {
		out = append(out, p.Op+" "+p.Path+" "+string(p.Value))
	}
	return out
}

func TestPlanStart(t *testing.T) {
	for _, tc := range []struct {
		name     string
		vm       *virtv1.VirtualMachine
		vmi      *virtv1.VirtualMachineInstance
		opts     virtv1.StartOptions
		status   bool
		want     []string
		code     int32
		errorMsg string
	}{
		{name: "halted starts by its run strategy", vm: vmWith(virtv1.RunStrategyHalted),
			want: []string{`test /spec/runStrategy "Halted"`, `replace /spec/runStrategy "Always"`}},
		{name: "spec.running is flipped where used", vm: &virtv1.VirtualMachine{Spec: virtv1.VirtualMachineSpec{Running: ptr.To(false)}},
			want: []string{`test /spec/running false`, `replace /spec/running true`}},
		{name: "paused start is a request with data", vm: vmWith(virtv1.RunStrategyHalted), opts: virtv1.StartOptions{Paused: true}, status: true,
			want: []string{`test /status/stateChangeRequests null`, `add /status/stateChangeRequests [{"action":"Start","data":{"paused":"true"}}]`}},
		{name: "manual appends a start", vm: vmWith(virtv1.RunStrategyManual), status: true,
			want: []string{`test /status/stateChangeRequests null`, `add /status/stateChangeRequests [{"action":"Start"}]`}},
		{name: "a VM without status gets one", vm: &virtv1.VirtualMachine{Spec: virtv1.VirtualMachineSpec{RunStrategy: ptr.To(virtv1.RunStrategyManual)}}, status: true,
			want: []string{`add /status {"stateChangeRequests":[{"action":"Start"}]}`}},
		{name: "manual with a finished VMI stops it first", vm: vmWith(virtv1.RunStrategyManual), vmi: vmiIn(virtv1.Succeeded), status: true,
			want: []string{`test /status/stateChangeRequests null`, `add /status/stateChangeRequests [{"action":"Stop","uid":"uid-1"},{"action":"Start"}]`}},
		{name: "running VMI", vm: vmWith(virtv1.RunStrategyManual), vmi: vmiIn(virtv1.Running), code: 409, errorMsg: "VM is already running"},
		{name: "always refuses", vm: vmWith(virtv1.RunStrategyAlways), code: 409, errorMsg: "Always does not support manual start requests"},
		{name: "once refuses", vm: vmWith(virtv1.RunStrategyOnce), code: 409, errorMsg: "Once does not support manual start requests"},
		{name: "rerun on failure after failure", vm: vmWith(virtv1.RunStrategyRerunOnFailure), vmi: vmiIn(virtv1.Failed), code: 409,
			errorMsg: "RerunOnFailure does not support starting VM from failed state"},
		{name: "pending requests", vm: vmWith(virtv1.RunStrategyManual, virtv1.StopRequest), code: 409, errorMsg: "stop/start already underway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, serr := planStart(tc.vm, tc.vmi, tc.opts)
			checkPlan(t, p, serr, tc.status, tc.want, tc.code, tc.errorMsg)
		})
	}
}

func checkPlan(t *testing.T, p vmPatch, serr *apierrors.StatusError, status bool, want []string, code int32, msg string) {
	t.Helper()
	if code != 0 {
		if serr == nil {
			t.Fatalf("no error, want %d %q; patch %s", code, msg, p.Body)
		}
		if s := serr.Status(); s.Code != code || !strings.Contains(s.Message, msg) {
			t.Errorf("error %d %q, want %d containing %q", s.Code, s.Message, code, msg)
		}
		return
	}
	if serr != nil {
		t.Fatalf("error %v", serr)
	}
	if p.Status != status {
		t.Errorf("status subresource = %v, want %v", p.Status, status)
	}
	if got := ops(t, p.Body); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("patch\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestPlanStop(t *testing.T) {
	withGrace := func(s int64) *virtv1.VirtualMachineInstance {
		v := vmiIn(virtv1.Running)
		v.Spec.TerminationGracePeriodSeconds = &s
		return v
	}
	for _, tc := range []struct {
		name     string
		vm       *virtv1.VirtualMachine
		vmi      *virtv1.VirtualMachineInstance
		opts     virtv1.StopOptions
		status   bool
		want     []string
		grace    []string
		code     int32
		errorMsg string
	}{
		{name: "always halts", vm: vmWith(virtv1.RunStrategyAlways), vmi: vmiIn(virtv1.Running),
			want: []string{`test /spec/runStrategy "Always"`, `replace /spec/runStrategy "Halted"`}},
		{name: "manual asks to stop that VMI", vm: vmWith(virtv1.RunStrategyManual), vmi: vmiIn(virtv1.Running), status: true,
			want: []string{`test /status/stateChangeRequests null`, `add /status/stateChangeRequests [{"action":"Stop","uid":"uid-1"}]`}},
		{name: "a stop replaces pending requests", vm: vmWith(virtv1.RunStrategyManual, virtv1.StartRequest), vmi: vmiIn(virtv1.Running), status: true,
			want: []string{`test /status/stateChangeRequests [{"action":"Start"}]`, `replace /status/stateChangeRequests [{"action":"Stop","uid":"uid-1"}]`}},
		{name: "manual without a VMI", vm: vmWith(virtv1.RunStrategyManual), code: 409, errorMsg: "VM is not running"},
		{name: "halted without a VMI", vm: vmWith(virtv1.RunStrategyHalted), vmi: vmiIn(virtv1.Succeeded), code: 409, errorMsg: "VM is not running"},
		{name: "halted needs a shorter grace period", vm: vmWith(virtv1.RunStrategyHalted), vmi: withGrace(30), opts: virtv1.StopOptions{GracePeriod: ptr.To[int64](30)},
			code: 409, errorMsg: "Halted only supports manual stop requests with a shorter graceperiod"},
		{name: "halted force stop", vm: vmWith(virtv1.RunStrategyHalted), vmi: withGrace(30), opts: virtv1.StopOptions{GracePeriod: ptr.To[int64](0)}, status: true,
			grace: []string{`test /spec/terminationGracePeriodSeconds 30`, `replace /spec/terminationGracePeriodSeconds 0`},
			want:  []string{`test /status/stateChangeRequests null`, `add /status/stateChangeRequests [{"action":"Stop","uid":"uid-1"}]`}},
		{name: "grace period on an unset field", vm: vmWith(virtv1.RunStrategyAlways), vmi: vmiIn(virtv1.Running), opts: virtv1.StopOptions{GracePeriod: ptr.To[int64](5)},
			grace: []string{`test /spec/terminationGracePeriodSeconds null`, `replace /spec/terminationGracePeriodSeconds 5`},
			want:  []string{`test /spec/runStrategy "Always"`, `replace /spec/runStrategy "Halted"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, serr := planStop(tc.vm, tc.vmi, tc.opts)
			if serr != nil {
				checkPlan(t, p.VM, serr, false, nil, tc.code, tc.errorMsg)
				return
			}
			checkPlan(t, p.VM, nil, tc.status, tc.want, tc.code, tc.errorMsg)
			if tc.grace == nil && p.VMIGrace != nil {
				t.Errorf("unexpected VMI patch %s", p.VMIGrace)
			} else if tc.grace != nil && strings.Join(ops(t, p.VMIGrace), "\n") != strings.Join(tc.grace, "\n") {
				t.Errorf("VMI patch %s, want %q", p.VMIGrace, tc.grace)
			}
		})
	}
}

func TestPlanRestart(t *testing.T) {
	for _, tc := range []struct {
		name     string
		vm       *virtv1.VirtualMachine
		vmi      *virtv1.VirtualMachineInstance
		opts     virtv1.RestartOptions
		want     []string
		code     int32
		errorMsg string
	}{
		{name: "stop then start", vm: vmWith(virtv1.RunStrategyAlways), vmi: vmiIn(virtv1.Running),
			want: []string{`test /status/stateChangeRequests null`, `add /status/stateChangeRequests [{"action":"Stop","uid":"uid-1"},{"action":"Start"}]`}},
		{name: "halted refuses", vm: vmWith(virtv1.RunStrategyHalted), vmi: vmiIn(virtv1.Running), code: 409,
			errorMsg: "RunStategy Halted does not support manual restart requests"},
		{name: "no VMI", vm: vmWith(virtv1.RunStrategyAlways), code: 409, errorMsg: "VM is not running"},
		{name: "only grace period zero", vm: vmWith(virtv1.RunStrategyAlways), vmi: vmiIn(virtv1.Running),
			opts: virtv1.RestartOptions{GracePeriodSeconds: ptr.To[int64](5)}, code: 400, errorMsg: "only gracePeriod=0 is supported"},
		{name: "negative grace period", vm: vmWith(virtv1.RunStrategyAlways), vmi: vmiIn(virtv1.Running),
			opts: virtv1.RestartOptions{GracePeriodSeconds: ptr.To[int64](-1)}, code: 400, errorMsg: "greater or equal to 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, serr := planRestart(tc.vm, tc.vmi, tc.opts)
			if serr != nil {
				checkPlan(t, p, serr, true, tc.want, tc.code, tc.errorMsg)
				return
			}
			checkPlan(t, p, nil, true, tc.want, tc.code, tc.errorMsg)
		})
	}
}

func TestDecodeOptions(t *testing.T) {
	for _, tc := range []struct {
		body string
		want virtv1.StopOptions
		bad  bool
	}{
		{body: ""},
		{body: "{}"},
		{body: `{"gracePeriod":0,"dryRun":["All"]}`, want: virtv1.StopOptions{GracePeriod: ptr.To[int64](0), DryRun: []string{"All"}}},
		{body: `{"gracePeriod":"soon"}`, bad: true},
	} {
		var got virtv1.StopOptions
		serr := decodeOptions(httptest.NewRequest(http.MethodPut, "/", strings.NewReader(tc.body)), &got)
		if tc.bad {
			if serr == nil || serr.Status().Code != http.StatusBadRequest || !strings.Contains(serr.Status().Message, "Can not unmarshal Request body") {
				t.Errorf("%q: %v, want 400", tc.body, serr)
			}
			continue
		}
		if serr != nil {
			t.Errorf("%q: %v", tc.body, serr)
			continue
		}
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(tc.want)
		if string(gb) != string(wb) {
			t.Errorf("%q decoded to %s, want %s", tc.body, gb, wb)
		}
	}
}
