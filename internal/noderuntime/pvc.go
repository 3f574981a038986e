package noderuntime

import (
	"context"
	"fmt"
	"os"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// claimDir resolves the persistentVolumeClaim volume v of pod to the host
// directory it is mounted from: the claim must be bound, and its volume
// must be a hostPath or local volume of this node in Filesystem mode (the
// kinds a node-local provisioner such as the hostpath provisioner makes).
// A hostPath of type DirectoryOrCreate (or unset) is created as kubelet
// does. The error messages follow kubelet's, so `kubectl describe pod`
// reads the same.
func (w *podWorker) claimDir(ctx context.Context, pod *corev1.Pod, v corev1.Volume) (string, error) {
	claimName := v.PersistentVolumeClaim.ClaimName
	pvc, err := w.r.cfg.Client.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(ctx, claimName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", fmt.Errorf("volume %q: persistentvolumeclaim %q not found", v.Name, claimName)
	case err != nil:
		return "", fmt.Errorf("volume %q: get persistentvolumeclaim %q: %w", v.Name, claimName, err)
	case pvc.Spec.VolumeName == "" || pvc.Status.Phase != corev1.ClaimBound:
		return "", fmt.Errorf("volume %q: persistentvolumeclaim %q is not bound yet", v.Name, claimName)
	}
	pv, err := w.r.cfg.Client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("volume %q: get persistentvolume %q of claim %q: %w", v.Name, pvc.Spec.VolumeName, claimName, err)
	}
	dir, err := volumePath(pv, w.r.cfg.NodeName)
	if err != nil {
		return "", fmt.Errorf("MountVolume.SetUp failed for volume %q (claim %q): %w", v.Name, claimName, err)
	}
	if hp := pv.Spec.HostPath; hp != nil {
		switch ptr.Deref(hp.Type, corev1.HostPathUnset) {
		case corev1.HostPathDirectoryOrCreate, corev1.HostPathUnset:
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return "", fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
			}
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("MountVolume.SetUp failed for volume %q: %s is not a directory", v.Name, dir)
	}
	return dir, nil
}

// volumePath is the directory of a Filesystem-mode hostPath or local
// volume pv on node. A volume pinned to another node, one in Block mode or
// of any other kind cannot be mounted here.
func volumePath(pv *corev1.PersistentVolume, node string) (string, error) {
	if ptr.Deref(pv.Spec.VolumeMode, corev1.PersistentVolumeFilesystem) == corev1.PersistentVolumeBlock {
		return "", fmt.Errorf("persistentvolume %s has volumeMode Block: this node runtime mounts Filesystem volumes only", pv.Name)
	}
	if !affineTo(pv, node) {
		return "", fmt.Errorf("persistentvolume %s is pinned by its nodeAffinity to another node than %s", pv.Name, node)
	}
	switch {
	case pv.Spec.HostPath != nil:
		return pv.Spec.HostPath.Path, nil
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path, nil
	}
	return "", fmt.Errorf("persistentvolume %s is a %s volume: this node runtime mounts hostPath and local volumes only",
		pv.Name, volumeKind(pv.Spec.PersistentVolumeSource))
}

// affineTo reports whether pv's nodeAffinity admits a node named node by
// its hostname label (the one label a PV of a one-machine cluster is pinned
// by); a PV without nodeAffinity is everywhere.
func affineTo(pv *corev1.PersistentVolume, node string) bool {
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return true
	}
	for _, t := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		if termMatches(t, node) {
			return true
		}
	}
	return false
}

func termMatches(t corev1.NodeSelectorTerm, node string) bool {
	for _, e := range t.MatchExpressions {
		if e.Key != corev1.LabelHostname {
			continue
		}
		in := slices.Contains(e.Values, node)
		switch {
		case e.Operator == corev1.NodeSelectorOpIn && !in, e.Operator == corev1.NodeSelectorOpNotIn && in:
			return false
		}
	}
	return true
}
