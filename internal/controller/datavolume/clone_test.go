package datavolume

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/virtkube/virtkube/internal/cdi"
)

func TestReconcileCloneSource(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	source := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "golden", Name: "base"}}
	// Claims of DataVolumes: one filled, one still importing.
	filled := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "golden", Name: "filled",
		Annotations:     map[string]string{cdi.AnnPodPhase: string(corev1.PodSucceeded)},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "cdi.kubevirt.io/v1beta1", Kind: "DataVolume", Name: "filled", UID: "f", Controller: ptr.To(true)}}}}
	importing := filled.DeepCopy()
	importing.Name, importing.Annotations = "importing", nil
	importing.OwnerReferences[0].Name = "importing"
	podOn := func(name, claim string, phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "golden", Name: name},
			Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "disk", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}},
			Status: corev1.PodStatus{Phase: phase},
		}
	}
	for _, tc := range []struct {
		name string
		src  cdiv1.DataVolumeSourcePVC
		pods []client.Object
		// wantEvent and wantCondition are "" when the clone goes on.
		wantEvent     string
		wantCondition string
		wantPhase     cdiv1.DataVolumePhase
	}{
		{name: "source in another namespace", src: cdiv1.DataVolumeSourcePVC{Namespace: "golden", Name: "base"},
			pods:      []client.Object{podOn("done", "base", corev1.PodSucceeded), podOn("other", "other-claim", corev1.PodRunning)},
			wantPhase: cdiv1.Pending},
		{name: "missing in the DataVolume's namespace", src: cdiv1.DataVolumeSourcePVC{Namespace: "ns", Name: "base"},
			wantEvent: "Warning CloneWithoutSource The source pvc base doesn't exist", wantPhase: cdiv1.Pending},
		{name: "missing in another namespace", src: cdiv1.DataVolumeSourcePVC{Namespace: "golden", Name: "gone"},
			wantEvent: "Warning CloneWithoutSource The source pvc golden/gone doesn't exist", wantPhase: cdiv1.Pending},
		{name: "filled by its DataVolume", src: cdiv1.DataVolumeSourcePVC{Namespace: "golden", Name: "filled"}, wantPhase: cdiv1.Pending},
		{name: "its DataVolume still importing", src: cdiv1.DataVolumeSourcePVC{Namespace: "golden", Name: "importing"},
			wantCondition: "CloneSourceNotPopulated DataVolume importing has not filled PersistentVolumeClaim importing yet", wantPhase: cdiv1.CloneScheduled},
		{name: "used by a running pod", src: cdiv1.DataVolumeSourcePVC{Namespace: "golden", Name: "base"},
			pods:      []client.Object{podOn("virt-launcher-vm-x", "base", corev1.PodRunning)},
			wantEvent: "Warning CloneSourceInUse pod golden/virt-launcher-vm-x using PersistentVolumeClaim base", wantPhase: cdiv1.CloneScheduled},
		{name: "used by a pending pod", src: cdiv1.DataVolumeSourcePVC{Namespace: "golden", Name: "base"},
			pods:      []client.Object{podOn("waiting", "base", corev1.PodPending)},
			wantEvent: "Warning CloneSourceInUse pod golden/waiting using PersistentVolumeClaim base", wantPhase: cdiv1.CloneScheduled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := record.NewFakeRecorder(4)
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(append(tc.pods, source, filled, importing)...).Build()
			r := &Reconciler{Client: c, Recorder: rec}
			dv := dvWith(&cdiv1.DataVolumeSource{PVC: &tc.src}, "1Gi")
			dv.Status.Phase = cdiv1.Pending
			res, err := r.reconcileCloneSource(context.Background(), dv)
			if err != nil {
				t.Fatal(err)
			}
			if dv.Status.Phase != tc.wantPhase {
				t.Errorf("phase %s, want %s", dv.Status.Phase, tc.wantPhase)
			}
			if tc.wantEvent != "" && tc.wantCondition == "" {
				tc.wantCondition = strings.TrimPrefix(tc.wantEvent, "Warning ")
			}
			if tc.wantCondition == "" {
				if !res.IsZero() || len(rec.Events) != 0 || len(dv.Status.Conditions) != 0 {
					t.Errorf("source free: result %+v, %d events, conditions %+v; want the clone to go on", res, len(rec.Events), dv.Status.Conditions)
				}
				return
			}
			if res.RequeueAfter != cloneSourcePoll {
				t.Errorf("result %+v, want a look again after %s", res, cloneSourcePoll)
			}
			var got string
			if len(rec.Events) > 0 {
				got = <-rec.Events
			}
			if got != tc.wantEvent {
				t.Errorf("event %q, want %q", got, tc.wantEvent)
			}
			conds := dv.Status.Conditions
			if len(conds) != 1 || conds[0].Type != cdiv1.DataVolumeReady || conds[0].Status != corev1.ConditionFalse ||
				conds[0].Reason+" "+conds[0].Message != tc.wantCondition {
				t.Errorf("conditions %+v; want Ready False saying %q", conds, tc.wantCondition)
			}
		})
	}
}
