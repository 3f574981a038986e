package replicaset

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/conditions"
)

// burstReplicas caps how many VMIs one reconcile creates or deletes, so a
// large scale step does not flood the API server (KubeVirt's default).
const burstReplicas = 250

// Reasons on the ReplicaSet's conditions and events, KubeVirt's.
const (
	ReasonSuccessfulCreate  = "SuccessfulCreate"
	ReasonFailedCreate      = "FailedCreate"
	ReasonSuccessfulDelete  = "SuccessfulDelete"
	ReasonFailedDelete      = "FailedDelete"
	ReasonSuccessfulPaused  = "SuccessfulPaused"
	ReasonSuccessfulResumed = "SuccessfulResumed"
	ReasonInvalidSpec       = "InvalidSpec"
	reasonPaused            = "Paused"
)

// desiredReplicas is spec.replicas, 1 when unset.
func desiredReplicas(rs *virtv1.VirtualMachineInstanceReplicaSet) int {
	if rs.Spec.Replicas == nil {
		return 1
	}
	return int(*rs.Spec.Replicas)
}

// selectorOf validates what the controller needs of the spec and returns
// the selector. The error names the field and what to change.
func selectorOf(rs *virtv1.VirtualMachineInstanceReplicaSet) (labels.Selector, error) {
	switch {
	case rs.Spec.Template == nil:
		return nil, errors.New("spec.template must be set")
	case rs.Spec.Selector == nil:
		return nil, errors.New("spec.selector must be set")
	case len(rs.Spec.Template.ObjectMeta.Labels) == 0:
		return nil, errors.New("spec.template.metadata.labels must be set: the selector finds the replicas by them")
	case rs.Spec.Replicas != nil && *rs.Spec.Replicas < 0:
		return nil, fmt.Errorf("spec.replicas %d: must not be negative", *rs.Spec.Replicas)
	}
	sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("spec.selector: %w", err)
	}
	if sel.Empty() {
		return nil, errors.New("spec.selector must not be empty: it would select every VMI in the namespace")
	}
	if !sel.Matches(labels.Set(rs.Spec.Template.ObjectMeta.Labels)) {
		return nil, fmt.Errorf("spec.selector %q does not match spec.template.metadata.labels %v: the replicas would not be found", sel, rs.Spec.Template.ObjectMeta.Labels)
	}
	return sel, nil
}

// claim sorts the namespace's VMIs by their relation to rs, the way
// Kubernetes' ReplicaSet claims pods: a VMI rs controls belongs to it while
// the selector matches and is released when it no longer does; an orphan
// that matches is adopted unless either side is being deleted; VMIs of other
// controllers are left alone.
type claim struct {
	owned, adopt, release []*virtv1.VirtualMachineInstance
}

func claimVMIs(rs *virtv1.VirtualMachineInstanceReplicaSet, sel labels.Selector, vmis []virtv1.VirtualMachineInstance) claim {
	var c claim
	for i := range vmis {
		vmi := &vmis[i]
		matches := sel.Matches(labels.Set(vmi.Labels))
		ref := metav1.GetControllerOf(vmi)
		switch {
		case ref != nil && ref.UID == rs.UID && matches:
			c.owned = append(c.owned, vmi)
		case ref != nil && ref.UID == rs.UID:
			if vmi.DeletionTimestamp == nil {
				c.release = append(c.release, vmi)
			}
		case ref == nil && matches && rs.DeletionTimestamp == nil && vmi.DeletionTimestamp == nil:
			c.adopt = append(c.adopt, vmi)
		}
	}
	return c
}

// split separates the replicas that count (neither finished nor going away)
// from the finished ones that must be replaced. A VMI whose pod is
// terminating counts as finished too, as in KubeVirt. VMIs already being
// deleted are in neither list.
func split(vmis []*virtv1.VirtualMachineInstance) (active, finished []*virtv1.VirtualMachineInstance) {
	for _, vmi := range vmis {
		switch {
		case vmi.DeletionTimestamp != nil:
		case vmi.IsFinal() || podTerminating(vmi):
			finished = append(finished, vmi)
		default:
			active = append(active, vmi)
		}
	}
	return active, finished
}

func podTerminating(vmi *virtv1.VirtualMachineInstance) bool {
	for _, c := range vmi.Status.Conditions {
		if c.Type == virtv1.VirtualMachineInstanceReady && c.Status == corev1.ConditionFalse && c.Reason == virtv1.PodTerminatingReason {
			return true
		}
	}
	return false
}

func ready(vmi *virtv1.VirtualMachineInstance) bool {
	for _, c := range vmi.Status.Conditions {
		if c.Type == virtv1.VirtualMachineInstanceReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// scaling is what one reconcile does to reach spec.replicas.
type scaling struct {
	create int
	delete []*virtv1.VirtualMachineInstance
}

// planScale compares the active replicas with spec.replicas. Surplus
// replicas are deleted in the order deletionOrder gives.
func planScale(rs *virtv1.VirtualMachineInstanceReplicaSet, active []*virtv1.VirtualMachineInstance) scaling {
	diff := len(active) - desiredReplicas(rs)
	switch {
	case diff < 0:
		return scaling{create: min(-diff, burstReplicas)}
	case diff > 0:
		return scaling{delete: deletionOrder(active)[:min(diff, burstReplicas)]}
	}
	return scaling{}
}

// deletionOrder sorts replicas so the ones that cost least to lose come
// first: those not running yet (the earlier in their start the better),
// then running ones that are not ready, then ready ones; among equals the
// youngest first, which has done the least work.
func deletionOrder(vmis []*virtv1.VirtualMachineInstance) []*virtv1.VirtualMachineInstance {
	rank := func(vmi *virtv1.VirtualMachineInstance) int {
		switch vmi.Status.Phase {
		case virtv1.VmPhaseUnset, virtv1.Pending:
			return 0
		case virtv1.Scheduling:
			return 1
		case virtv1.Scheduled:
			return 2
		case virtv1.Running:
			if ready(vmi) {
				return 4
			}
			return 3
		default:
			return 0
		}
	}
	sorted := append([]*virtv1.VirtualMachineInstance{}, vmis...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if rank(a) != rank(b) {
			return rank(a) < rank(b)
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return b.CreationTimestamp.Before(&a.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	return sorted
}

// newReplica is a VMI for rs, built from the template as KubeVirt builds it:
// the template's labels, annotations and spec, rs as controller owner, and a
// generated name with the template's name (or generateName), else the
// ReplicaSet's name, as prefix.
func newReplica(rs *virtv1.VirtualMachineInstanceReplicaSet) *virtv1.VirtualMachineInstance {
	tmpl := rs.Spec.Template
	base := rs.Name
	switch {
	case tmpl.ObjectMeta.Name != "":
		base = tmpl.ObjectMeta.Name
	case tmpl.ObjectMeta.GenerateName != "":
		base = tmpl.ObjectMeta.GenerateName
	}
	return &virtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    base,
			Namespace:       rs.Namespace,
			Labels:          maps.Clone(tmpl.ObjectMeta.Labels),
			Annotations:     maps.Clone(tmpl.ObjectMeta.Annotations),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, virtv1.VirtualMachineInstanceReplicaSetGroupVersionKind)},
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
}

// scaleError is a failed create or delete; the ReplicaFailure condition
// shows it with its reason.
type scaleError struct {
	reason string
	err    error
}

func (e *scaleError) Error() string { return e.err.Error() }
func (e *scaleError) Unwrap() error { return e.err }

// nextStatus is the ReplicaSet's status after a reconcile that saw active
// replicas and ended with failure (nil: none). sel is nil when the spec is
// invalid; the label selector then stays as it was.
func nextStatus(rs *virtv1.VirtualMachineInstanceReplicaSet, sel labels.Selector, active []*virtv1.VirtualMachineInstance, failure *scaleError, now time.Time) virtv1.VirtualMachineInstanceReplicaSetStatus {
	st := *rs.Status.DeepCopy()
	if sel != nil {
		st.LabelSelector = sel.String()
	}
	st.Replicas = int32(len(active))
	st.ReadyReplicas = 0
	for _, vmi := range active {
		if ready(vmi) {
			st.ReadyReplicas++
		}
	}
	t := metav1.NewTime(now)
	if rs.Spec.Paused {
		setCondition(&st, virtv1.VirtualMachineInstanceReplicaSetCondition{Type: virtv1.VirtualMachineInstanceReplicaSetReplicaPaused,
			Status: corev1.ConditionTrue, Reason: reasonPaused, Message: "Controller got paused", LastProbeTime: t, LastTransitionTime: t})
	} else {
		removeCondition(&st, virtv1.VirtualMachineInstanceReplicaSetReplicaPaused)
	}
	if failure != nil {
		setCondition(&st, virtv1.VirtualMachineInstanceReplicaSetCondition{Type: virtv1.VirtualMachineInstanceReplicaSetReplicaFailure,
			Status: corev1.ConditionTrue, Reason: failure.reason, Message: failure.Error(), LastProbeTime: t, LastTransitionTime: t})
	} else {
		removeCondition(&st, virtv1.VirtualMachineInstanceReplicaSetReplicaFailure)
	}
	return st
}

func setCondition(st *virtv1.VirtualMachineInstanceReplicaSetStatus, c virtv1.VirtualMachineInstanceReplicaSetCondition) {
	st.Conditions = conditions.Set(st.Conditions, c, rsCondition)
}

func removeCondition(st *virtv1.VirtualMachineInstanceReplicaSetStatus, t virtv1.VirtualMachineInstanceReplicaSetConditionType) {
	st.Conditions = conditions.Remove(st.Conditions, string(t), rsCondition)
}

func rsCondition(c *virtv1.VirtualMachineInstanceReplicaSetCondition) (conditions.Fields, *metav1.Time) {
	return conditions.Fields{Type: string(c.Type), Status: c.Status, Reason: c.Reason, Message: c.Message}, &c.LastTransitionTime
}
