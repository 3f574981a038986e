package replicaset

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"
)

var now = time.Unix(100000, 0)

func testRS(mutate ...func(*virtv1.VirtualMachineInstanceReplicaSet)) *virtv1.VirtualMachineInstanceReplicaSet {
	rs := &virtv1.VirtualMachineInstanceReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "rs-uid"},
		Spec: virtv1.VirtualMachineInstanceReplicaSetSpec{
			Replicas: ptr.To(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: &virtv1.VirtualMachineInstanceTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "tier": "front"}, Annotations: map[string]string{"a": "b"}},
			},
		},
	}
	for _, m := range mutate {
		m(rs)
	}
	return rs
}

type vmiOpt func(*virtv1.VirtualMachineInstance)

func testVMI(name string, phase virtv1.VirtualMachineInstancePhase, opts ...vmiOpt) *virtv1.VirtualMachineInstance {
	vmi := &virtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(name), Labels: map[string]string{"app": "web"},
			CreationTimestamp: metav1.NewTime(now)},
		Status: virtv1.VirtualMachineInstanceStatus{Phase: phase},
	}
	for _, o := range opts {
		o(vmi)
	}
	return vmi
}

func ownedBy(uid types.UID) vmiOpt {
	return func(vmi *virtv1.VirtualMachineInstance) {
		vmi.OwnerReferences = []metav1.OwnerReference{{Kind: "VirtualMachineInstanceReplicaSet", Name: "x", UID: uid, Controller: ptr.To(true)}}
	}
}

func readyVMI(vmi *virtv1.VirtualMachineInstance) {
	vmi.Status.Conditions = append(vmi.Status.Conditions, virtv1.VirtualMachineInstanceCondition{Type: virtv1.VirtualMachineInstanceReady, Status: corev1.ConditionTrue})
}

func deletingVMI(vmi *virtv1.VirtualMachineInstance) {
	vmi.DeletionTimestamp = ptr.To(metav1.NewTime(now))
}

func age(d time.Duration) vmiOpt {
	return func(vmi *virtv1.VirtualMachineInstance) { vmi.CreationTimestamp = metav1.NewTime(now.Add(-d)) }
}

func names(vmis []*virtv1.VirtualMachineInstance) string {
	var out []string
	for _, v := range vmis {
		out = append(out, v.Name)
	}
	return strings.Join(out, ",")
}

func TestSelectorOf(t *testing.T) {
	tests := []struct {
		name    string
		rs      *virtv1.VirtualMachineInstanceReplicaSet
		wantErr string
	}{
		{"valid", testRS(), ""},
		{"no template", testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Template = nil }), "spec.template"},
		{"no selector", testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Selector = nil }), "spec.selector must be set"},
		{"no template labels", testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Template.ObjectMeta.Labels = nil }), "spec.template.metadata.labels"},
		{"selector does not match", testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) {
			rs.Spec.Selector.MatchLabels = map[string]string{"app": "db"}
		}), "does not match spec.template.metadata.labels"},
		{"empty selector", testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Selector = &metav1.LabelSelector{} }), "must not be empty"},
		{"bad operator", testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) {
			rs.Spec.Selector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}
		}), "spec.selector"},
		{"negative replicas", testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Replicas = ptr.To(int32(-1)) }), "spec.replicas -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := selectorOf(tt.rs)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.wantErr == "" && sel.String() != "app=web":
				t.Errorf("selector %q, want app=web", sel)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestClaimVMIs(t *testing.T) {
	rs := testRS()
	sel, _ := selectorOf(rs)
	vmis := []virtv1.VirtualMachineInstance{
		*testVMI("mine", virtv1.Running, ownedBy("rs-uid")),
		*testVMI("orphan", virtv1.Running),
		*testVMI("orphan-deleting", virtv1.Running, deletingVMI),
		*testVMI("other-owner", virtv1.Running, ownedBy("other")),
		*testVMI("relabelled", virtv1.Running, ownedBy("rs-uid"), func(v *virtv1.VirtualMachineInstance) { v.Labels = map[string]string{"app": "db"} }),
		*testVMI("unrelated", virtv1.Running, func(v *virtv1.VirtualMachineInstance) { v.Labels = nil }),
	}
	c := claimVMIs(rs, sel, vmis)
	if names(c.owned) != "mine" || names(c.adopt) != "orphan" || names(c.release) != "relabelled" {
		t.Errorf("owned %q adopt %q release %q; want mine, orphan, relabelled", names(c.owned), names(c.adopt), names(c.release))
	}
	deletingRS := testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.DeletionTimestamp = ptr.To(metav1.NewTime(now)) })
	if c := claimVMIs(deletingRS, sel, vmis); len(c.adopt) != 0 {
		t.Errorf("a deleting replica set adopts %q", names(c.adopt))
	}
}

func TestSplit(t *testing.T) {
	terminating := func(v *virtv1.VirtualMachineInstance) {
		v.Status.Conditions = []virtv1.VirtualMachineInstanceCondition{{Type: virtv1.VirtualMachineInstanceReady, Status: corev1.ConditionFalse, Reason: virtv1.PodTerminatingReason}}
	}
	active, finished := split([]*virtv1.VirtualMachineInstance{
		testVMI("pending", virtv1.Pending),
		testVMI("running", virtv1.Running),
		testVMI("failed", virtv1.Failed),
		testVMI("succeeded", virtv1.Succeeded),
		testVMI("going", virtv1.Running, deletingVMI),
		testVMI("failed-going", virtv1.Failed, deletingVMI),
		testVMI("terminating-pod", virtv1.Running, terminating),
	})
	if names(active) != "pending,running" || names(finished) != "failed,succeeded,terminating-pod" {
		t.Errorf("active %q finished %q", names(active), names(finished))
	}
}

func TestPlanScale(t *testing.T) {
	replicas := func(n int32) func(*virtv1.VirtualMachineInstanceReplicaSet) {
		return func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Replicas = &n }
	}
	tests := []struct {
		name       string
		rs         *virtv1.VirtualMachineInstanceReplicaSet
		active     []*virtv1.VirtualMachineInstance
		wantCreate int
		wantDelete string
	}{
		{"scale up from nothing", testRS(), nil, 2, ""},
		{"replicas default to one", testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Replicas = nil }), nil, 1, ""},
		{"in balance", testRS(), []*virtv1.VirtualMachineInstance{testVMI("a", virtv1.Running), testVMI("b", virtv1.Running)}, 0, ""},
		{"burst cap", testRS(replicas(1000)), nil, burstReplicas, ""},
		{"scale down prefers not running", testRS(replicas(1)), []*virtv1.VirtualMachineInstance{
			testVMI("ready", virtv1.Running, readyVMI),
			testVMI("scheduled", virtv1.Scheduled),
			testVMI("pending", virtv1.Pending),
		}, 0, "pending,scheduled"},
		{"scale down prefers not ready, then younger", testRS(replicas(1)), []*virtv1.VirtualMachineInstance{
			testVMI("old-ready", virtv1.Running, readyVMI, age(time.Hour)),
			testVMI("young-ready", virtv1.Running, readyVMI),
			testVMI("booting", virtv1.Running, age(2*time.Hour)),
		}, 0, "booting,young-ready"},
		{"scale to zero", testRS(replicas(0)), []*virtv1.VirtualMachineInstance{testVMI("a", virtv1.Running)}, 0, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := planScale(tt.rs, tt.active)
			if s.create != tt.wantCreate || names(s.delete) != tt.wantDelete {
				t.Errorf("create %d delete %q; want %d, %q", s.create, names(s.delete), tt.wantCreate, tt.wantDelete)
			}
		})
	}
}

func TestNewReplica(t *testing.T) {
	rs := testRS()
	vmi := newReplica(rs)
	if vmi.GenerateName != "web" || vmi.Name != "" || vmi.Namespace != "ns" {
		t.Errorf("name %q generateName %q namespace %q; want generated from web in ns", vmi.Name, vmi.GenerateName, vmi.Namespace)
	}
	if vmi.Labels["app"] != "web" || vmi.Labels["tier"] != "front" || vmi.Annotations["a"] != "b" {
		t.Errorf("labels %v annotations %v, want the template's", vmi.Labels, vmi.Annotations)
	}
	if ref := metav1.GetControllerOf(vmi); ref == nil || ref.UID != "rs-uid" || ref.Kind != "VirtualMachineInstanceReplicaSet" {
		t.Errorf("controller %+v, want the replica set", ref)
	}
	vmi.Labels["x"] = "y"
	if _, ok := rs.Spec.Template.ObjectMeta.Labels["x"]; ok {
		t.Error("the replica shares its label map with the template")
	}
	named := testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Template.ObjectMeta.GenerateName = "cache-" })
	if got := newReplica(named).GenerateName; got != "cache-" {
		t.Errorf("generateName %q, want the template's cache-", got)
	}
}

func TestNextStatus(t *testing.T) {
	rs := testRS(func(rs *virtv1.VirtualMachineInstanceReplicaSet) { rs.Spec.Paused = true })
	sel, _ := selectorOf(rs)
	active := []*virtv1.VirtualMachineInstance{testVMI("a", virtv1.Running, readyVMI), testVMI("b", virtv1.Scheduling)}
	st := nextStatus(rs, sel, active, &scaleError{reason: ReasonFailedCreate, err: errors.New("quota exceeded")}, now)
	if st.Replicas != 2 || st.ReadyReplicas != 1 || st.LabelSelector != "app=web" {
		t.Errorf("replicas %d ready %d selector %q; want 2, 1, app=web", st.Replicas, st.ReadyReplicas, st.LabelSelector)
	}
	conds := map[virtv1.VirtualMachineInstanceReplicaSetConditionType]virtv1.VirtualMachineInstanceReplicaSetCondition{}
	for _, c := range st.Conditions {
		conds[c.Type] = c
	}
	if c := conds[virtv1.VirtualMachineInstanceReplicaSetReplicaPaused]; c.Status != corev1.ConditionTrue || c.Reason != "Paused" {
		t.Errorf("ReplicaPaused %+v", c)
	}
	if c := conds[virtv1.VirtualMachineInstanceReplicaSetReplicaFailure]; c.Status != corev1.ConditionTrue || c.Reason != ReasonFailedCreate || c.Message != "quota exceeded" {
		t.Errorf("ReplicaFailure %+v", c)
	}

	rs.Status = st
	rs.Spec.Paused = false
	st = nextStatus(rs, sel, active, nil, now.Add(time.Minute))
	if len(st.Conditions) != 0 {
		t.Errorf("conditions %+v after resuming without failures, want none", st.Conditions)
	}
}
