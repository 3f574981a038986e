package noderuntime

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestVolumePath(t *testing.T) {
	pinned := func(op corev1.NodeSelectorOperator, nodes ...string) *corev1.VolumeNodeAffinity {
		return &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: op, Values: nodes}},
		}}}}
	}
	hostPath := corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/pool/csi/pvc-1"}}
	tests := []struct {
		name    string
		spec    corev1.PersistentVolumeSpec
		want    string
		wantErr string
	}{
		{"hostPath on this node", corev1.PersistentVolumeSpec{PersistentVolumeSource: hostPath, NodeAffinity: pinned(corev1.NodeSelectorOpIn, "n1")}, "/pool/csi/pvc-1", ""},
		{"hostPath anywhere", corev1.PersistentVolumeSpec{PersistentVolumeSource: hostPath}, "/pool/csi/pvc-1", ""},
		{"local", corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/mnt/d"}}}, "/mnt/d", ""},
		{"other node", corev1.PersistentVolumeSpec{PersistentVolumeSource: hostPath, NodeAffinity: pinned(corev1.NodeSelectorOpIn, "n2")}, "", "another node than n1"},
		{"not this node", corev1.PersistentVolumeSpec{PersistentVolumeSource: hostPath, NodeAffinity: pinned(corev1.NodeSelectorOpNotIn, "n1")}, "", "another node"},
		{"block", corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/dev/loop3"}}, VolumeMode: ptr.To(corev1.PersistentVolumeBlock)}, "/dev/loop3", ""},
		{"nfs", corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "s", Path: "/"}}}, "", "is a nfs volume"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := volumePath(&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-1"}, Spec: tt.spec}, "n1")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("volumePath = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// A claim's directory is bound where the pod mounts it, read-only when the
// pod says so.
func TestMountsClaim(t *testing.T) {
	w := &podWorker{dir: "/kubelet/pods/u", claimDirs: map[string]string{"data": "/pool/csi/pvc-1"}}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c", ReadOnly: true}}},
	}}}
	c := &container{spec: &corev1.Container{Name: "compute", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/run/kubevirt-private/vmi-disks/data"}}}}
	ms, err := w.mounts(pod, c)
	if err != nil {
		t.Fatal(err)
	}
	want := bindMount{Source: "/pool/csi/pvc-1", Target: "/var/run/kubevirt-private/vmi-disks/data", ReadOnly: true}
	if len(ms) != 1 || ms[0] != want {
		t.Errorf("mounts = %+v, want %+v", ms, want)
	}
}
