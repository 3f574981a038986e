package vm

import (
	"errors"
	"fmt"
	"time"

	virtv1 "kubevirt.io/api/core/v1"
)

// errRunningAndRunStrategy is the one spec error this controller refuses to
// act on: the deprecated spec.running and spec.runStrategy say the same thing
// twice and may disagree. Admission refuses it too; objects stored before
// admission existed still reach us.
var errRunningAndRunStrategy = errors.New("spec.running and spec.runStrategy are mutually exclusive: remove spec.running and keep spec.runStrategy")

// supportedStrategies are the run strategies this controller implements.
// WaitAsReceiver (decentralized live migration) is not among them.
var supportedStrategies = map[virtv1.VirtualMachineRunStrategy]bool{
	virtv1.RunStrategyAlways:         true,
	virtv1.RunStrategyRerunOnFailure: true,
	virtv1.RunStrategyManual:         true,
	virtv1.RunStrategyHalted:         true,
	virtv1.RunStrategyOnce:           true,
}

// runStrategy is the strategy vm asks for. The deprecated spec.running maps
// to Always (true) or Halted (false), and no field at all means Halted, as in
// KubeVirt.
func runStrategy(vm *virtv1.VirtualMachine) (virtv1.VirtualMachineRunStrategy, error) {
	switch {
	case vm.Spec.Running != nil && vm.Spec.RunStrategy != nil:
		return "", errRunningAndRunStrategy
	case vm.Spec.Running != nil:
		if *vm.Spec.Running {
			return virtv1.RunStrategyAlways, nil
		}
		return virtv1.RunStrategyHalted, nil
	case vm.Spec.RunStrategy != nil:
		s := *vm.Spec.RunStrategy
		if !supportedStrategies[s] {
			return "", fmt.Errorf("spec.runStrategy: unsupported value %q: use one of Always, RerunOnFailure, Manual, Halted, Once", s)
		}
		return s, nil
	default:
		return virtv1.RunStrategyHalted, nil
	}
}

// trimDoneRequests drops the state change requests at the head of the queue
// that the VMI seen now (nil: none) shows as done. Only the head counts, as
// in KubeVirt: a later request has not been acted on yet.
//
//   - Stop is done once no VMI exists, or once the VMI is not the one the
//     request named (it was stopped and a new one runs).
//   - Start is done once a VMI exists that is neither finished nor deleting.
//   - An action this controller does not know can never be done; it is
//     dropped rather than blocking the queue.
func trimDoneRequests(reqs []virtv1.VirtualMachineStateChangeRequest, vmi *virtv1.VirtualMachineInstance) []virtv1.VirtualMachineStateChangeRequest {
	for len(reqs) > 0 && requestDone(reqs[0], vmi) {
		reqs = reqs[1:]
	}
	if len(reqs) == 0 {
		return nil
	}
	return reqs
}

func requestDone(r virtv1.VirtualMachineStateChangeRequest, vmi *virtv1.VirtualMachineInstance) bool {
	switch r.Action {
	case virtv1.StopRequest:
		return vmi == nil || (r.UID != nil && *r.UID != vmi.UID)
	case virtv1.StartRequest:
		return vmi != nil && vmi.DeletionTimestamp == nil && !vmi.IsFinal()
	default:
		return true
	}
}

// action is what one reconcile does to the VM's VMI.
type action int

const (
	// noAction leaves the VMI as it is.
	noAction action = iota
	// startVMI creates the VMI from the template.
	startVMI
	// stopVMI deletes the VMI; the launcher shuts the guest down.
	stopVMI
	// backOff waits before creating the VMI again after start failures.
	backOff
	// switchToAlways turns a Halted VM into an Always one: a Start request
	// on a Halted VM (virt-api's paused start) means "run from now on".
	switchToAlways
)

// decision is what decide chose, with what the reconciler needs to carry it
// out.
type decision struct {
	action action
	// why explains the action in logs.
	why string
	// retryIn is how long a backOff lasts.
	retryIn time.Duration
	// requestStart queues a Start request behind the stop, so a failed VMI
	// of a RerunOnFailure VM is started again once it is gone.
	requestStart bool
}

// decide is the heart of the controller: given the VM (its queue of state
// change requests already trimmed), its VMI (nil: none) and the resolved run
// strategy, what happens to the VMI now.
//
//   - Always: a VMI runs; a finished one is deleted and created again, a
//     Stop request for the running one restarts it (virt-api's restart).
//   - RerunOnFailure: a Failed VMI is deleted and started again; a Succeeded
//     one, or one asked to stop, is deleted and stays down until a Start
//     request or a change of strategy.
//   - Manual: only Start and Stop requests create and delete the VMI; a VMI
//     that finishes by itself stays as it is.
//   - Halted: no VMI; a Start request switches the VM to Always.
//   - Once: a VMI is started when there is none; one that finishes stays,
//     Succeeded or Failed, for its status to be read (deleting it starts
//     another, as in KubeVirt).
//
// Starts of Always and RerunOnFailure VMs wait out the start-failure
// back-off.
func decide(vm *virtv1.VirtualMachine, vmi *virtv1.VirtualMachineInstance, strategy virtv1.VirtualMachineRunStrategy, now time.Time) decision {
	var head *virtv1.VirtualMachineStateChangeRequest
	if len(vm.Status.StateChangeRequests) > 0 {
		head = &vm.Status.StateChangeRequests[0]
	}
	startAsked := head != nil && head.Action == virtv1.StartRequest
	stopAsked := head != nil && head.Action == virtv1.StopRequest && vmi != nil &&
		(head.UID == nil || *head.UID == vmi.UID)
	if vmi != nil && vmi.DeletionTimestamp != nil {
		// Stopping already; the VMI's disappearance brings us back.
		return decision{action: noAction, why: "VMI is being deleted"}
	}
	// Once the VMI of a RerunOnFailure VM has been deleted, the status
	// remembers the strategy it ran under; the same strategy with no Start
	// request means it finished and stays down.
	ranBefore := vm.Status.RunStrategy == strategy

	switch strategy {
	case virtv1.RunStrategyAlways:
		switch {
		case vmi == nil:
			return startAfterBackOff(vm, now, "runStrategy Always")
		case stopAsked:
			return decision{action: stopVMI, why: "restart requested"}
		case vmi.IsFinal():
			return decision{action: stopVMI, why: fmt.Sprintf("VMI is %s and runStrategy is Always", vmi.Status.Phase)}
		}
	case virtv1.RunStrategyRerunOnFailure:
		switch {
		case vmi == nil && (startAsked || !ranBefore):
			return startAfterBackOff(vm, now, "runStrategy RerunOnFailure")
		case vmi == nil:
		case vmi.Status.Phase == virtv1.Failed:
			return decision{action: stopVMI, why: "VMI failed and runStrategy is RerunOnFailure", requestStart: true}
		case vmi.Status.Phase == virtv1.Succeeded:
			return decision{action: stopVMI, why: "VMI succeeded and runStrategy is RerunOnFailure"}
		case stopAsked:
			return decision{action: stopVMI, why: "stop requested"}
		}
	case virtv1.RunStrategyManual:
		switch {
		case vmi == nil && startAsked:
			return decision{action: startVMI, why: "start requested"}
		case stopAsked:
			return decision{action: stopVMI, why: "stop requested"}
		}
	case virtv1.RunStrategyHalted:
		switch {
		case vmi != nil:
			return decision{action: stopVMI, why: "runStrategy Halted"}
		case startAsked:
			return decision{action: switchToAlways, why: "start requested on a Halted VM"}
		}
	case virtv1.RunStrategyOnce:
		if vmi == nil {
			return decision{action: startVMI, why: "runStrategy Once"}
		}
	}
	return decision{action: noAction}
}

func startAfterBackOff(vm *virtv1.VirtualMachine, now time.Time, why string) decision {
	if left := backOffLeft(vm.Status.StartFailure, now); left > 0 {
		return decision{action: backOff, why: "start failure back-off", retryIn: left}
	}
	return decision{action: startVMI, why: why}
}
