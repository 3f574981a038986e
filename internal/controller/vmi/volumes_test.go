package vmi

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"
)

// The claim's capacity reaches the VMI's volumeStatus, where the launcher
// sizes a blank disk.img; what virt-handler wrote on the entry stays.
func TestSetClaimInfo(t *testing.T) {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
		},
		Status: corev1.PersistentVolumeClaimStatus{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
	}
	status := &virtv1.VirtualMachineInstanceStatus{VolumeStatus: []virtv1.VolumeStatus{{Name: "disk", Target: "vdb"}}}
	setClaimInfo(status, "disk", claimInfo(pvc))
	setClaimInfo(status, "other", claimInfo(pvc))
	if len(status.VolumeStatus) != 2 {
		t.Fatalf("volumeStatus = %+v, want the existing entry updated and one added", status.VolumeStatus)
	}
	got := status.VolumeStatus[0]
	if got.Target != "vdb" || got.PersistentVolumeClaimInfo == nil || got.PersistentVolumeClaimInfo.ClaimName != "data" {
		t.Errorf("entry = %+v", got)
	}
	if c := got.PersistentVolumeClaimInfo.Capacity[corev1.ResourceStorage]; c.String() != "1Gi" {
		t.Errorf("capacity = %s, want the claim's status capacity 1Gi", c.String())
	}
	if claimOf(virtv1.Volume{VolumeSource: virtv1.VolumeSource{Ephemeral: &virtv1.EphemeralVolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "golden"}}}}) != "golden" {
		t.Error("an ephemeral volume's claim is not reported")
	}
}
