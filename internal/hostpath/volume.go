package hostpath

import (
	"fmt"
	"path/filepath"
	"slices"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const (
	// AnnSelectedNode is where kube-scheduler writes the node chosen for a
	// WaitForFirstConsumer claim.
	AnnSelectedNode = "volume.kubernetes.io/selected-node"
	// annProvisionedBy names the provisioner of a dynamically made PV; the
	// PV controller leaves the deletion of such a PV to it.
	annProvisionedBy = "pv.kubernetes.io/provisioned-by"
	// annBetaStorageClass is the old way a claim names its class.
	annBetaStorageClass = "volume.beta.kubernetes.io/storage-class"
	// Finalizer keeps a PV until its directory is removed.
	Finalizer = "hostpathprovisioner.kubevirt.io/directory"
	// volumesDir is the pool's subdirectory of volumes, as the CSI
	// hostpath-provisioner lays them out (<pool>/csi/<volume>).
	volumesDir = "csi"
)

// VolumeName is the PV made for claim, named as external-provisioner names
// them.
func VolumeName(pvc *corev1.PersistentVolumeClaim) string { return "pvc-" + string(pvc.UID) }

// VolumeDir is where the volume name of the pool at poolPath lives.
func VolumeDir(poolPath, name string) string { return filepath.Join(poolPath, volumesDir, name) }

// ClassName is the StorageClass a claim asks for, "" for none.
func ClassName(pvc *corev1.PersistentVolumeClaim) string {
	if c, ok := pvc.Annotations[annBetaStorageClass]; ok {
		return c
	}
	return ptr.Deref(pvc.Spec.StorageClassName, "")
}

// Volume is the PV serving claim from a directory of the class's pool on
// node; pools maps pool names to paths. Its errors are what the user must
// change, naming the claim's or the class's field.
func Volume(pvc *corev1.PersistentVolumeClaim, class *storagev1.StorageClass, node string, pools map[string]string) (*corev1.PersistentVolume, error) {
	if ptr.Deref(pvc.Spec.VolumeMode, corev1.PersistentVolumeFilesystem) == corev1.PersistentVolumeBlock {
		return nil, fmt.Errorf("spec.volumeMode: Block is not supported by %s, which serves directories (Filesystem) only", Provisioner)
	}
	if slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) {
		return nil, fmt.Errorf("spec.accessModes: ReadWriteMany is not supported by %s: a volume is a directory of one node", Provisioner)
	}
	request, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok || request.Sign() <= 0 {
		return nil, fmt.Errorf("spec.resources.requests.storage: must be set and greater than zero")
	}
	poolName := class.Parameters[PoolParameter]
	if poolName == "" {
		return nil, fmt.Errorf("StorageClass %s: parameters.%s must name a storage pool", class.Name, PoolParameter)
	}
	poolPath, ok := pools[poolName]
	if !ok {
		return nil, fmt.Errorf("StorageClass %s: parameters.%s: no storage pool %q in the HostPathProvisioner (have %v)",
			class.Name, PoolParameter, poolName, sortedKeys(pools))
	}
	reclaim := ptr.Deref(class.ReclaimPolicy, corev1.PersistentVolumeReclaimDelete)
	name := VolumeName(pvc)
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{annProvisionedBy: Provisioner},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity: corev1.ResourceList{corev1.ResourceStorage: request},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: VolumeDir(poolPath, name),
				Type: ptr.To(corev1.HostPathDirectoryOrCreate),
			}},
			AccessModes: pvc.Spec.AccessModes,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion,
			},
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              class.Name,
			VolumeMode:                    ptr.To(corev1.PersistentVolumeFilesystem),
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node},
				}}}},
			}},
		},
	}
	if reclaim == corev1.PersistentVolumeReclaimDelete {
		pv.Finalizers = []string{Finalizer}
	}
	return pv, nil
}

// Node is the node a PV made here is pinned to, "" if it is none of ours.
func Node(pv *corev1.PersistentVolume) string {
	if pv.Annotations[annProvisionedBy] != Provisioner || pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return ""
	}
	for _, t := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		for _, e := range t.MatchExpressions {
			if e.Key == corev1.LabelHostname && e.Operator == corev1.NodeSelectorOpIn && len(e.Values) == 1 {
				return e.Values[0]
			}
		}
	}
	return ""
}

// ownDir is the directory of a PV made here: a hostPath in a pool's csi
// directory named after the PV. Anything else is never removed.
func ownDir(pv *corev1.PersistentVolume) (string, bool) {
	hp := pv.Spec.HostPath
	if hp == nil || !filepath.IsAbs(hp.Path) {
		return "", false
	}
	dir := filepath.Clean(hp.Path)
	if filepath.Base(dir) != pv.Name || filepath.Base(filepath.Dir(dir)) != volumesDir {
		return "", false
	}
	return dir, true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
