package subresource

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// vmPatch is what a start, stop or restart request writes: a JSON patch
// on the VM's spec, or on its status subresource (state change requests).
type vmPatch struct {
	Status bool
	Body   []byte
}

// stopPlan is what a stop request writes: VMIGrace, when set, is a JSON
// patch on the VMI shortening its terminationGracePeriodSeconds first
// (virtctl stop --grace-period), then VM.
type stopPlan struct {
	VMIGrace []byte
	VM       vmPatch
}

// patchOp is one JSON patch (RFC 6902) operation. Value is always written:
// a test for null must say so.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

func marshalPatch(ops ...patchOp) []byte {
	b, err := json.Marshal(ops)
	if err != nil {
		panic(fmt.Sprintf("marshal JSON patch: %v", err)) // only plain values are patched
	}
	return b
}

// changeRequestPatch appends requests to status.stateChangeRequests, testing
// the list it read so a concurrent writer cannot be overwritten. A VM with
// no status yet gets one. A lone Stop replaces pending requests (stopping
// wins); anything else while requests are pending is refused.
func changeRequestPatch(vm *virtv1.VirtualMachine, requests ...virtv1.VirtualMachineStateChangeRequest) ([]byte, *apierrors.StatusError) {
	var ops []patchOp
	pending := vm.Status.StateChangeRequests
	switch {
	case equality.Semantic.DeepEqual(vm.Status, virtv1.VirtualMachineStatus{}):
		ops = append(ops, patchOp{"add", "/status", virtv1.VirtualMachineStatus{StateChangeRequests: requests}})
	case len(pending) == 0:
		ops = append(ops, patchOp{"test", "/status/stateChangeRequests", pending}, patchOp{"add", "/status/stateChangeRequests", requests})
	case len(requests) == 1 && requests[0].Action == virtv1.StopRequest:
		ops = append(ops, patchOp{"test", "/status/stateChangeRequests", pending}, patchOp{"replace", "/status/stateChangeRequests", requests})
	default:
		return nil, conflict(vmResource, vm.Name, msgRequestPending)
	}
	if vm.Status.StartFailure != nil {
		ops = append(ops, patchOp{"remove", "/status/startFailure", nil})
	}
	return marshalPatch(ops...), nil
}

// runningPatch switches the VM on or off in its spec: runStrategy Always or
// Halted, or spec.running for a VM that uses that older field.
func runningPatch(vm *virtv1.VirtualMachine, running bool) []byte {
	if vm.Spec.RunStrategy != nil {
		strategy := virtv1.RunStrategyHalted
		if running {
			strategy = virtv1.RunStrategyAlways
		}
		return marshalPatch(patchOp{"test", "/spec/runStrategy", *vm.Spec.RunStrategy}, patchOp{"replace", "/spec/runStrategy", strategy})
	}
	return marshalPatch(patchOp{"test", "/spec/running", vm.Spec.Running}, patchOp{"replace", "/spec/running", running})
}

// active says whether vmi is a VMI that runs or is on its way: KubeVirt
// refuses to start a VM while one exists.
func active(vmi *virtv1.VirtualMachineInstance) bool {
	return vmi != nil && !vmi.IsFinal() && vmi.Status.Phase != virtv1.Unknown && vmi.Status.Phase != virtv1.VmPhaseUnset
}

func runStrategy(vm *virtv1.VirtualMachine) (virtv1.VirtualMachineRunStrategy, *apierrors.StatusError) {
	rs, err := vm.RunStrategy()
	if err != nil {
		return "", apierrors.NewInternalError(err)
	}
	return rs, nil
}

// planStart decides a start request on vm, whose VMI (nil: none) is vmi.
func planStart(vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, o virtv1.StartOptions) (vmPatch, *apierrors.StatusError) {
	if active(vmi) {
		return vmPatch{}, conflict(vmResource, vm.Name, msgVMIRunning)
	}
	rs, serr := runStrategy(vm)
	if serr != nil {
		return vmPatch{}, serr
	}
	start := virtv1.VirtualMachineStateChangeRequest{Action: virtv1.StartRequest}
	if o.Paused {
		start.Data = map[string]string{virtv1.StartRequestDataPausedKey: virtv1.StartRequestDataPausedTrue}
	}
	switch rs {
	case virtv1.RunStrategyHalted:
		// A paused start needs the request's data; the VM controller then
		// switches the run strategy itself.
		if o.Paused && !startsPaused(vm) {
			body, serr := changeRequestPatch(vm, start)
			return vmPatch{Status: true, Body: body}, serr
		}
		return vmPatch{Body: runningPatch(vm, true)}, nil
	case virtv1.RunStrategyManual, virtv1.RunStrategyRerunOnFailure:
		if rs == virtv1.RunStrategyRerunOnFailure && vmi != nil && vmi.Status.Phase == virtv1.Failed {
			return vmPatch{}, conflict(vmResource, vm.Name, fmt.Sprintf("%s does not support starting VM from failed state", rs))
		}
		// A finished VMI (Succeeded, or Failed under Manual) is
		// stopped first, so the controller makes a new one.
		requests := []virtv1.VirtualMachineStateChangeRequest{start}
		if vmi != nil && vmi.IsFinal() {
			requests = []virtv1.VirtualMachineStateChangeRequest{{Action: virtv1.StopRequest, UID: &vmi.UID}, start}
		}
		body, serr := changeRequestPatch(vm, requests...)
		return vmPatch{Status: true, Body: body}, serr
	default: // Always, Once
		return vmPatch{}, conflict(vmResource, vm.Name, fmt.Sprintf("%s does not support manual start requests", rs))
	}
}

func startsPaused(vm *virtv1.VirtualMachine) bool {
	t := vm.Spec.Template
	return t != nil && t.Spec.StartStrategy != nil && *t.Spec.StartStrategy == virtv1.StartStrategyPaused
}

// planStop decides a stop request on vm, whose VMI (nil: none) is vmi.
func planStop(vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, o virtv1.StopOptions) (stopPlan, *apierrors.StatusError) {
	rs, serr := runStrategy(vm)
	if serr != nil {
		return stopPlan{}, serr
	}
	running := vmi != nil && !vmi.IsFinal()
	var plan stopPlan
	var oldGrace *int64
	if running && o.GracePeriod != nil {
		oldGrace = vmi.Spec.TerminationGracePeriodSeconds
		plan.VMIGrace = marshalPatch(
			patchOp{"test", "/spec/terminationGracePeriodSeconds", oldGrace},
			patchOp{"replace", "/spec/terminationGracePeriodSeconds", *o.GracePeriod})
	}
	stopRunning := func() (stopPlan, *apierrors.StatusError) {
		body, serr := changeRequestPatch(vm, virtv1.VirtualMachineStateChangeRequest{Action: virtv1.StopRequest, UID: &vmi.UID})
		plan.VM = vmPatch{Status: true, Body: body}
		return plan, serr
	}
	switch rs {
	case virtv1.RunStrategyHalted:
		if !running {
			return stopPlan{}, conflict(vmResource, vm.Name, msgVMNotRunning)
		}
		if o.GracePeriod == nil || (oldGrace != nil && *o.GracePeriod >= *oldGrace) {
			return stopPlan{}, conflict(vmResource, vm.Name, fmt.Sprintf("%s only supports manual stop requests with a shorter graceperiod", rs))
		}
		return stopRunning()
	case virtv1.RunStrategyManual, virtv1.RunStrategyRerunOnFailure:
		if !running {
			return stopPlan{}, conflict(vmResource, vm.Name, msgVMNotRunning)
		}
		return stopRunning()
	default: // Always, Once
		plan.VM = vmPatch{Body: runningPatch(vm, false)}
		return plan, nil
	}
}

// planRestart decides a restart request: stop the VMI that runs, then
// start a new one.
func planRestart(vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, o virtv1.RestartOptions) (vmPatch, *apierrors.StatusError) {
	if g := o.GracePeriodSeconds; g != nil && *g != 0 {
		if *g < 0 {
			return vmPatch{}, apierrors.NewBadRequest("gracePeriod has to be greater or equal to 0")
		}
		return vmPatch{}, apierrors.NewBadRequest("For force restart, only gracePeriod=0 is supported for now")
	}
	rs, serr := runStrategy(vm)
	if serr != nil {
		return vmPatch{}, serr
	}
	if rs == virtv1.RunStrategyHalted || rs == virtv1.RunStrategyOnce {
		return vmPatch{}, conflict(vmResource, vm.Name, fmt.Sprintf("RunStategy %s does not support manual restart requests", rs))
	}
	if vmi == nil {
		return vmPatch{}, conflict(vmResource, vm.Name, fmt.Sprintf("%s: %s", msgVMNotRunning, virtv1.RunStrategyHalted))
	}
	body, serr := changeRequestPatch(vm,
		virtv1.VirtualMachineStateChangeRequest{Action: virtv1.StopRequest, UID: &vmi.UID},
		virtv1.VirtualMachineStateChangeRequest{Action: virtv1.StartRequest})
	return vmPatch{Status: true, Body: body}, serr
}

// decodeOptions reads a request's options body into into; an empty body
// leaves the defaults.
func decodeOptions(r *http.Request, into any) *apierrors.StatusError {
	if r.Body == nil {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("read request body: %v", err))
	}
	if len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, into); err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("Can not unmarshal Request body to struct, error: %v", err))
	}
	return nil
}

// vmAndVMI reads the VM of the request (404 when missing, in KubeVirt's
// words) and its VMI, nil when there is none.
func (s *Server) vmAndVMI(r *http.Request) (*virtv1.VirtualMachine, *virtv1.VirtualMachineInstance, error) {
	key := client.ObjectKey{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	vm := &virtv1.VirtualMachine{}
	if err := s.Client.Get(r.Context(), key, vm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, apierrors.NewNotFound(vmResource, key.Name)
		}
		return nil, nil, apierrors.NewInternalError(err)
	}
	vmi := &virtv1.VirtualMachineInstance{}
	if err := s.Client.Get(r.Context(), key, vmi); err != nil {
		if apierrors.IsNotFound(err) {
			return vm, nil, nil
		}
		return nil, nil, apierrors.NewInternalError(err)
	}
	return vm, vmi, nil
}

// vmVerb is the handler of a virtualmachines/{verb} subresource: it decodes
// the verb's options (O), reads the VM and its VMI, and lets act answer; an
// error from any step is written as a Status.
func vmVerb[O any](s *Server, act func(w http.ResponseWriter, r *http.Request, vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, o O) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var o O
		if err := decodeOptions(r, &o); err != nil {
			writeError(w, err)
			return
		}
		vm, vmi, err := s.vmAndVMI(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if err := act(w, r, vm, vmi, o); err != nil {
			writeError(w, err)
		}
	}
}

func (s *Server) start(w http.ResponseWriter, r *http.Request, vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, o virtv1.StartOptions) error {
	p, err := planStart(vm, vmi, o)
	if err != nil {
		return err
	}
	return s.patchVM(w, r, vm, p, o.DryRun)
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request, vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, o virtv1.StopOptions) error {
	plan, serr := planStop(vm, vmi, o)
	if serr != nil {
		return serr
	}
	if plan.VMIGrace != nil {
		err := s.Client.Patch(r.Context(), vmi, client.RawPatch(types.JSONPatchType, plan.VMIGrace), &client.PatchOptions{DryRun: o.DryRun})
		if err != nil {
			return patchError(vmiResource, vmi.Name, err)
		}
	}
	return s.patchVM(w, r, vm, plan.VM, o.DryRun)
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request, vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, o virtv1.RestartOptions) error {
	p, err := planRestart(vm, vmi, o)
	if err != nil {
		return err
	}
	return s.patchVM(w, r, vm, p, o.DryRun)
}

// migrate checks what KubeVirt checks, then says plainly that live
// migration is not available: virtkube has no migration controller yet,
// and a VirtualMachineInstanceMigration nobody acts on would only mislead.
func (s *Server) migrate(_ http.ResponseWriter, _ *http.Request, vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, _ virtv1.MigrateOptions) error {
	if vmi == nil || vmi.Status.Phase != virtv1.Running {
		return conflict(vmResource, vm.Name, msgVMNotRunning)
	}
	return notImplemented("live migration is not supported on this installation")
}

// patchVM writes p and answers 202 Accepted, as KubeVirt does.
func (s *Server) patchVM(w http.ResponseWriter, r *http.Request, vm *virtv1.VirtualMachine, p vmPatch, dryRun []string) error {
	patch := client.RawPatch(types.JSONPatchType, p.Body)
	var err error
	if p.Status {
		err = s.Client.Status().Patch(r.Context(), vm, patch, &client.SubResourcePatchOptions{PatchOptions: client.PatchOptions{DryRun: dryRun}})
	} else {
		err = s.Client.Patch(r.Context(), vm, patch, &client.PatchOptions{DryRun: dryRun})
	}
	if err != nil {
		return patchError(vmResource, vm.Name, err)
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// patchError maps the apiserver's answer to a patch: a failed JSON patch
// test (the object changed since it was read; the apiserver says 422
// without a reason) is KubeVirt's 409 Conflict; a refusal by validation
// (422 Invalid) or any other status is passed on as it came.
func patchError(gr schema.GroupResource, name string, err error) error {
	var s apierrors.APIStatus
	if !errors.As(err, &s) {
		return apierrors.NewInternalError(err)
	}
	if st := s.Status(); st.Code == http.StatusUnprocessableEntity && st.Reason != metav1.StatusReasonInvalid {
		return apierrors.NewConflict(gr, name, err)
	}
	return err
}
