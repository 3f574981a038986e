// Package cdi holds what virtkube's implementation of CDI's API (the
// Containerized Data Importer: DataVolumes, uploads) shares between the
// DataVolume controllers, the upload proxy and the worker pods' program
// (package importer): the scheme, the annotations that pass state through
// the claim, the upload pods' names and tokens, and writing a disk image
// into a claim as CDI lays it out (one raw disk.img per filesystem claim).
// See docs/design/0006-datavolumes.md and 0008-datavolumes-on-a-cluster.md.
package cdi

import (
	"k8s.io/apimachinery/pkg/runtime"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	uploadv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/upload/v1beta1"
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
	// AnnPodPhase is the phase of the pod that fills a claim (importer
	// or upload pod), as CDI's controllers record it on the claim:
	// Succeeded once disk.img is complete.
	AnnPodPhase = "cdi.kubevirt.io/storage.pod.phase"
	// AnnPodReady is "true" while the claim's upload pod takes data, as
	// CDI's upload controller writes it; virtctl waits for it.
	AnnPodReady = "cdi.kubevirt.io/storage.pod.ready"
	// AnnPodRestarts counts the claim's upload pods that failed and were
	// replaced.
	AnnPodRestarts = "cdi.kubevirt.io/storage.pod.restarts"
	// AnnUploadRequest marks a claim that takes an upload; the upload
	// proxy refuses others.
	AnnUploadRequest = "cdi.kubevirt.io/storage.upload.target"
	// AnnCloneRequest marks a clone's target claim with its source
	// ("<namespace>/<name>"), as CDI does; its upload pod takes the
	// source pod's stream, never the upload proxy's.
	AnnCloneRequest = "k8s.io/CloneRequest"
	// AnnSource records the source kind a DataVolume fills its claim from.
	AnnSource = "cdi.kubevirt.io/storage.import.source"
	// ConfigName is the one CDIConfig, as CDI names it.
	ConfigName = "config"
	// DiskFile is a filesystem claim's disk.
	DiskFile = "disk.img"
)

// UploadTokenKey is the key of the token in an upload pod's Secret.
const UploadTokenKey = "token"

// UploadPodName is the upload pod of claim, as CDI names it; the upload
// proxy forwards to it.
func UploadPodName(claim string) string { return "cdi-upload-" + claim }

// UploadTokenSecretName holds the token the upload pod of claim wants from
// whoever writes to it (the upload proxy, a clone source pod).
func UploadTokenSecretName(claim string) string { return "cdi-upload-" + claim }
