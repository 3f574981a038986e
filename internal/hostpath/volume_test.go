package hostpath

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
)

func claim(mutate func(*corev1.PersistentVolumeClaim)) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data", UID: "1234"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To("hostpath-csi"),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
		},
	}
	if mutate != nil {
		mutate(pvc)
	}
	return pvc
}

var seedClass = &storagev1.StorageClass{
	ObjectMeta:    metav1.ObjectMeta{Name: "hostpath-csi"},
	Provisioner:   Provisioner,
	ReclaimPolicy: ptr.To(corev1.PersistentVolumeReclaimDelete),
	Parameters:    map[string]string{PoolParameter: "local"},
}

func TestVolume(t *testing.T) {
	pools := map[string]string{"local": "/var/hpvolumes"}
	pv, err := Volume(claim(nil), seedClass, "node1", pools)
	if err != nil {
		t.Fatal(err)
	}
	if pv.Name != "pvc-1234" || pv.Spec.HostPath.Path != "/var/hpvolumes/csi/pvc-1234" {
		t.Errorf("PV %s at %s, want pvc-1234 at /var/hpvolumes/csi/pvc-1234 (the seed's layout)", pv.Name, pv.Spec.HostPath.Path)
	}
	if got := pv.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("64Mi")) != 0 {
		t.Errorf("capacity = %s, want the request 64Mi", got.String())
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != "ns" || ref.Name != "data" || ref.UID != "1234" {
		t.Errorf("claimRef = %+v", ref)
	}
	if Node(pv) != "node1" || pv.Spec.StorageClassName != "hostpath-csi" || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("node %q, class %q, reclaim %q", Node(pv), pv.Spec.StorageClassName, pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if len(pv.Finalizers) != 1 || pv.Finalizers[0] != Finalizer {
		t.Errorf("finalizers = %v, want the directory finalizer of a Delete volume", pv.Finalizers)
	}
	if dir, ok := ownDir(pv); !ok || dir != pv.Spec.HostPath.Path {
		t.Errorf("ownDir = %q, %v", dir, ok)
	}

	retain := seedClass.DeepCopy()
	retain.ReclaimPolicy = ptr.To(corev1.PersistentVolumeReclaimRetain)
	if pv, err := Volume(claim(nil), retain, "node1", pools); err != nil || len(pv.Finalizers) != 0 {
		t.Errorf("a Retain volume: finalizers %v, err %v; its directory must outlive it", pv.Finalizers, err)
	}

	for _, tc := range []struct {
		name    string
		pvc     *corev1.PersistentVolumeClaim
		class   *storagev1.StorageClass
		wantErr string
	}{
		{"block", claim(func(c *corev1.PersistentVolumeClaim) { c.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock) }), seedClass, "spec.volumeMode"},
		{"rwx", claim(func(c *corev1.PersistentVolumeClaim) {
			c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
		}), seedClass, "spec.accessModes"},
		{"no request", claim(func(c *corev1.PersistentVolumeClaim) { c.Spec.Resources.Requests = nil }), seedClass, "spec.resources.requests.storage"},
		{"unknown pool", claim(nil), &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Parameters: map[string]string{PoolParameter: "fast"}}, `no storage pool "fast"`},
		{"no pool", claim(nil), &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, "parameters.storagePool"},
	} {
		if _, err := Volume(tc.pvc, tc.class, "node1", pools); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want one naming %s", tc.name, err, tc.wantErr)
		}
	}
}

// Only directories made here, named after their PV inside a pool's csi
// directory, are ever removed.
func TestOwnDirRefusesOtherPaths(t *testing.T) {
	for _, p := range []string{"/", "/var/hpvolumes", "/var/hpvolumes/csi/other", "relative/csi/pvc-1"} {
		pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-1"},
			Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p}}}}
		if dir, ok := ownDir(pv); ok {
			t.Errorf("ownDir(%q) = %q: would remove a directory not made for the PV", p, dir)
		}
	}
}

func TestPools(t *testing.T) {
	pools, err := Pools(nil, "/data/hpvolumes")
	if err != nil || len(pools) != 1 || pools["local"] != "/data/hpvolumes" {
		t.Errorf("no CR: %v, %v; want the default pool local", pools, err)
	}
	// The seed's CR replaces the default pool.
	seed := unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "hostpath-provisioner"},
		"spec": map[string]any{
			"imagePullPolicy": "Always",
			"storagePools":    []any{map[string]any{"name": "local", "path": "/var/hpvolumes"}},
			"workload":        map[string]any{"nodeSelector": map[string]any{"kubernetes.io/os": "linux"}},
		},
	}}
	pools, err = Pools([]unstructured.Unstructured{seed}, "/data/hpvolumes")
	if err != nil || len(pools) != 1 || pools["local"] != "/var/hpvolumes" {
		t.Errorf("seed CR: %v, %v", pools, err)
	}
	other := *seed.DeepCopy()
	other.SetName("second")
	unstructured.SetNestedSlice(other.Object, []any{map[string]any{"name": "local", "path": "/elsewhere"}}, "spec", "storagePools")
	if _, err := Pools([]unstructured.Unstructured{seed, other}, "/d"); err == nil || !strings.Contains(err.Error(), "also defined by hostpath-provisioner") {
		t.Errorf("a pool defined twice: err = %v", err)
	}
}
