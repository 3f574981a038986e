// Package cdi holds what virtkube's implementation of CDI's API (the
// Containerized Data Importer: DataVolumes, uploads) shares between the
// DataVolume controller and the upload proxy: the scheme, the annotations
// that pass state between them through the claim, the claim's directory on
// this machine, and writing a disk image into it as CDI lays it out (one raw
// disk.img per filesystem claim). See docs/design/0006-datavolumes.md.
package cdi

import (
	"context"
	"errors"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	uploadv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/upload/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// AddToScheme registers CDI's DataVolume, CDIConfig and UploadTokenRequest
// types.
func AddToScheme(s *runtime.Scheme) error {
	if err := cdiv1.AddToScheme(s); err != nil {
		return err
	}
	return uploadv1.AddToScheme(s)
}

const (
	// AnnPodPhase is where the writer of a claim's data (importer or
	// upload proxy) reports how it went, as CDI's importer and upload
	// pods do: Succeeded once disk.img is complete.
	AnnPodPhase = "cdi.kubevirt.io/storage.pod.phase"
	// AnnUploadRequest marks a claim that takes an upload; the upload
	// proxy refuses others.
	AnnUploadRequest = "cdi.kubevirt.io/storage.upload.target"
	// AnnSource records the source kind a DataVolume fills its claim from.
	AnnSource = "cdi.kubevirt.io/storage.import.source"
	// ConfigName is the one CDIConfig, as CDI names it.
	ConfigName = "config"
	// DiskFile is a filesystem claim's disk.
	DiskFile = "disk.img"
)

// ErrNotBound is returned by VolumeDir while the claim waits for its volume.
var ErrNotBound = errors.New("claim is not bound to a volume yet")

// VolumeDir is the directory of claim's volume on this machine. Only
// hostPath volumes (the hostpath provisioner's) are served: their
// directory is here when the writer runs on the claim's node, as it does
// inside `virtkube server`.
func VolumeDir(ctx context.Context, c client.Reader, pvc *corev1.PersistentVolumeClaim) (string, error) {
	if pvc.Spec.VolumeName == "" || pvc.Status.Phase != corev1.ClaimBound {
		return "", ErrNotBound
	}
	pv := &corev1.PersistentVolume{}
	if err := c.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
		return "", fmt.Errorf("get volume %s of claim %s: %w", pvc.Spec.VolumeName, pvc.Name, err)
	}
	if pv.Spec.HostPath == nil {
		return "", fmt.Errorf("claim %s: volume %s is not a hostPath volume; only the hostpath provisioner's volumes can be filled", pvc.Name, pv.Name)
	}
	fi, err := os.Stat(pv.Spec.HostPath.Path)
	if err != nil {
		return "", fmt.Errorf("claim %s: volume directory: %w", pvc.Name, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("claim %s: volume path %s is not a directory", pvc.Name, pv.Spec.HostPath.Path)
	}
	return pv.Spec.HostPath.Path, nil
}
