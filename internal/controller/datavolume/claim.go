package datavolume

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	"github.com/virtkube/virtkube/internal/cdi"
)

// Source kinds a DataVolume can fill its claim from.
const (
	sourceBlank    = "blank"
	sourceHTTP     = "http"
	sourceRegistry = "registry"
	sourcePVC      = "pvc"
	sourceUpload   = "upload"
)

// sourceKind is the one source dv names; anything else is a field error
// the user must fix.
func sourceKind(dv *cdiv1.DataVolume) (string, error) {
	p := field.NewPath("spec", "source")
	s := dv.Spec.Source
	if s == nil {
		if dv.Spec.SourceRef != nil {
			return "", field.NotSupported(field.NewPath("spec", "sourceRef"), "sourceRef", []string{"spec.source"})
		}
		return "", field.Required(p, "one of blank, http, registry, pvc or upload")
	}
	var kinds []string
	for kind, set := range map[string]bool{
		sourceBlank: s.Blank != nil, sourceHTTP: s.HTTP != nil, sourceRegistry: s.Registry != nil,
		sourcePVC: s.PVC != nil, sourceUpload: s.Upload != nil,
		"s3": s.S3 != nil, "gcs": s.GCS != nil, "imageio": s.Imageio != nil, "vddk": s.VDDK != nil, "snapshot": s.Snapshot != nil,
	} {
		if set {
			kinds = append(kinds, kind)
		}
	}
	supported := []string{sourceBlank, sourceHTTP, sourceRegistry, sourcePVC, sourceUpload}
	switch {
	case len(kinds) == 0:
		return "", field.Required(p, "one of blank, http, registry, pvc or upload")
	case len(kinds) > 1:
		return "", field.Invalid(p, kinds, "exactly one source may be set")
	}
	kind := kinds[0]
	switch kind {
	case sourceBlank, sourceUpload:
	case sourceHTTP:
		h := s.HTTP
		switch {
		case h.URL == "":
			return "", field.Required(p.Child("http", "url"), "the image to download")
		case h.SecretRef != "" || h.CertConfigMap != "" || len(h.ExtraHeaders) > 0 || len(h.SecretExtraHeaders) > 0:
			return "", field.Forbidden(p.Child("http"), "secretRef, certConfigMap and extra headers are not supported; serve the image without authentication")
		}
	case sourceRegistry:
		if s.Registry.URL == nil || *s.Registry.URL == "" {
			return "", field.Required(p.Child("registry", "url"), "docker://<image> of a containerDisk")
		}
	case sourcePVC:
		if s.PVC.Name == "" {
			return "", field.Required(p.Child("pvc", "name"), "the claim to clone")
		}
	default:
		return "", field.NotSupported(p.Child(kind), kind, supported)
	}
	return kind, nil
}

// claimFor is the PersistentVolumeClaim dv fills: named as dv, owned by
// it, from spec.pvc or spec.storage (class, access modes and size; no class
// means the cluster's default). source is the claim a clone copies (nil
// for other kinds): a clone into spec.storage that gives no size takes the
// source's, as CDI's storage API does; spec.pvc must always give one.
func claimFor(dv *cdiv1.DataVolume, kind string, source *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, error) {
	var (
		spec corev1.PersistentVolumeClaimSpec
		p    *field.Path
	)
	switch {
	case dv.Spec.PVC != nil && dv.Spec.Storage != nil:
		return nil, field.Invalid(field.NewPath("spec"), "pvc and storage", "set only one of spec.pvc and spec.storage")
	case dv.Spec.PVC != nil:
		spec, p = *dv.Spec.PVC.DeepCopy(), field.NewPath("spec", "pvc")
	case dv.Spec.Storage != nil:
		s := dv.Spec.Storage.DeepCopy()
		p = field.NewPath("spec", "storage")
		spec = corev1.PersistentVolumeClaimSpec{
			AccessModes: s.AccessModes, Selector: s.Selector, Resources: s.Resources,
			VolumeName: s.VolumeName, StorageClassName: s.StorageClassName, VolumeMode: s.VolumeMode,
		}
	default:
		return nil, field.Required(field.NewPath("spec", "pvc"), "spec.pvc or spec.storage")
	}
	sizePath := p.Child("resources", "requests", "storage")
	size, ok := spec.Resources.Requests[corev1.ResourceStorage]
	if !ok && dv.Spec.Storage != nil && kind == sourcePVC && source != nil {
		if size, ok = sourceSize(source); !ok {
			return nil, field.Required(sizePath, fmt.Sprintf(
				"the size of the disk: the source claim %s/%s has neither a capacity nor a requested size to take", source.Namespace, source.Name))
		}
		if spec.Resources.Requests == nil {
			spec.Resources.Requests = corev1.ResourceList{}
		}
		spec.Resources.Requests[corev1.ResourceStorage] = size
	}
	if !ok || size.Sign() <= 0 {
		return nil, field.Required(sizePath, "the size of the disk")
	}
	if len(spec.AccessModes) == 0 {
		spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name: dv.Name, Namespace: dv.Namespace,
			Labels:      map[string]string{"app": "containerized-data-importer", "app.kubernetes.io/managed-by": "virtkube"},
			Annotations: map[string]string{cdi.AnnSource: kind},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(dv,
				cdiv1.SchemeGroupVersion.WithKind("DataVolume"))},
		},
		Spec: spec,
	}
	switch kind {
	case sourceUpload:
		pvc.Annotations[cdi.AnnUploadRequest] = ""
	case sourcePVC:
		src := cloneSource(dv)
		pvc.Annotations[cdi.AnnCloneRequest] = src.Namespace + "/" + src.Name
	}
	return pvc, nil
}

// claimSize is the storage a claim requests: the size of its disk.img.
func claimSize(pvc *corev1.PersistentVolumeClaim) (int64, error) {
	q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return 0, errors.New("claim has no spec.resources.requests.storage")
	}
	return q.Value(), nil
}
