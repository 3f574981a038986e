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

// claimSource is what a persistentVolumeClaim volume is on this node: the
// directory of a Filesystem volume, mounted into containers, or the block
// device of a Block volume, put at the devicePath of containers' volumeDevices.
type claimSource struct {
	Path  string
	Block bool
}

// claimSource resolves the persistentVolumeClaim volume v of pod: the claim
// must be bound, and its volume must be a hostPath or local volume of this
// node (the kinds a node-local provisioner such as the hostpath provisioner
// or the local static provisioner makes). In Filesystem mode it is a
// directory; a hostPath of type DirectoryOrCreate (or unset) is created as
// kubelet does. In Block mode its path must be a block device. The error
// messages follow kubelet's, so `kubectl describe pod` reads the same.
func (w *podWorker) claimSource(ctx context.Context, pod *corev1.Pod, v corev1.Volume) (claimSource, error) {
	claimName := v.PersistentVolumeClaim.ClaimName
	pvc, err := w.r.cfg.Client.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(ctx, claimName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return claimSource{}, fmt.Errorf("volume %q: persistentvolumeclaim %q not found", v.Name, claimName)
	case err != nil:
		return claimSource{}, fmt.Errorf("volume %q: get persistentvolumeclaim %q: %w", v.Name, claimName, err)
	case pvc.Spec.VolumeName == "" || pvc.Status.Phase != corev1.ClaimBound:
		return claimSource{}, fmt.Errorf("volume %q: persistentvolumeclaim %q is not bound yet", v.Name, claimName)
	}
	pv, err := w.r.cfg.Client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return claimSource{}, fmt.Errorf("volume %q: get persistentvolume %q of claim %q: %w", v.Name, pvc.Spec.VolumeName, claimName, err)
	}
	block := isBlock(pv)
	if err := checkVolumeUse(pod, v.Name, block); err != nil {
		return claimSource{}, err
	}
	p, err := volumePath(pv, w.r.cfg.NodeName)
	if block {
		if err == nil {
			err = blockDevice(pv, p)
		}
		if err != nil {
			return claimSource{}, fmt.Errorf("MapVolume.SetUpDevice failed for volume %q (claim %q): %w", v.Name, claimName, err)
		}
		return claimSource{Path: p, Block: true}, nil
	}
	if err != nil {
		return claimSource{}, fmt.Errorf("MountVolume.SetUp failed for volume %q (claim %q): %w", v.Name, claimName, err)
	}
	if hp := pv.Spec.HostPath; hp != nil {
		switch ptr.Deref(hp.Type, corev1.HostPathUnset) {
		case corev1.HostPathDirectoryOrCreate, corev1.HostPathUnset:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return claimSource{}, fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
			}
		}
	}
	fi, err := os.Stat(p)
	if err != nil {
		return claimSource{}, fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
	}
	if !fi.IsDir() {
		return claimSource{}, fmt.Errorf("MountVolume.SetUp failed for volume %q: %s is not a directory", v.Name, p)
	}
	return claimSource{Path: p}, nil
}

func isBlock(pv *corev1.PersistentVolume) bool {
	return ptr.Deref(pv.Spec.VolumeMode, corev1.PersistentVolumeFilesystem) == corev1.PersistentVolumeBlock
}

// checkVolumeUse refuses a pod whose containers use the claim volume name
// other than its volume's mode allows: a Block volume only in
// volumeDevices, a Filesystem one only in volumeMounts (kubelet's check and
// words).
func checkVolumeUse(pod *corev1.Pod, name string, block bool) error {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		for _, m := range c.VolumeMounts {
			if block && m.Name == name {
				return fmt.Errorf("volume %s has volumeMode %s, but is specified in volumeMounts", name, corev1.PersistentVolumeBlock)
			}
		}
		for _, d := range c.VolumeDevices {
			if !block && d.Name == name {
				return fmt.Errorf("volume %s has volumeMode %s, but is specified in volumeDevices", name, corev1.PersistentVolumeFilesystem)
			}
		}
	}
	return nil
}

// volumePath is the path of a hostPath or local volume pv on node: a
// directory in Filesystem mode, a block device in Block mode. A volume
// pinned to another node or of any other kind cannot be used here.
func volumePath(pv *corev1.PersistentVolume, node string) (string, error) {
	if !affineTo(pv, node) {
		return "", fmt.Errorf("persistentvolume %s is pinned by its nodeAffinity to another node than %s", pv.Name, node)
	}
	switch {
	case pv.Spec.HostPath != nil:
		return pv.Spec.HostPath.Path, nil
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path, nil
	}
	return "", fmt.Errorf("persistentvolume %s is a %s volume: this node runtime serves hostPath and local volumes only",
		pv.Name, volumeKind(pv.Spec.PersistentVolumeSource))
}

// blockDevice checks that path, the path of pv in volumeMode Block, is a
// block device: a local volume's path (as the local static provisioner
// makes them) or a hostPath of type BlockDevice (or unset).
func blockDevice(pv *corev1.PersistentVolume, path string) error {
	if hp := pv.Spec.HostPath; hp != nil {
		if t := ptr.Deref(hp.Type, corev1.HostPathUnset); t != corev1.HostPathUnset && t != corev1.HostPathBlockDev {
			return fmt.Errorf("persistentvolume %s in volumeMode Block: hostPath type %s cannot be mapped as a block device; use type %s",
				pv.Name, t, corev1.HostPathBlockDev)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("persistentvolume %s: %w", pv.Name, err)
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		if pv.Spec.HostPath != nil {
			return fmt.Errorf("hostPath type check failed: %s is not a block device", path)
		}
		return fmt.Errorf("persistentvolume %s in volumeMode Block: local path %s is not a block device", pv.Name, path)
	}
	return nil
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
