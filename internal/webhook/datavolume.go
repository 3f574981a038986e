package webhook

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// DataVolumes is CDI's resource, as an AdmissionRequest names it.
const DataVolumes = "datavolumes"

// dataVolumeAccessModes are the access modes CDI lets a DataVolume ask for.
var dataVolumeAccessModes = []string{
	string(corev1.ReadOnlyMany), string(corev1.ReadWriteMany), string(corev1.ReadWriteOnce),
}

// registrySchemes are the schemes of spec.source.registry.url CDI imports
// from.
var registrySchemes = []string{cdiv1.RegistrySchemeDocker, cdiv1.RegistrySchemeOci}

// DecodeDataVolume reads a DataVolume from an admission request. A value
// of the wrong type is a field error; anything else that does not decode is
// err.
func DecodeDataVolume(raw []byte) (*cdiv1.DataVolume, field.ErrorList, error) {
	dv := &cdiv1.DataVolume{}
	if err := decode(raw, dv); err != nil {
		errs, _, err := decodeErrors(err)
		return nil, errs, err
	}
	return dv, nil, nil
}

// ValidateDataVolume checks a DataVolume being created the way CDI's
// datavolume-validate webhook does, with field paths: a source (spec.source
// with exactly one kind, or spec.sourceRef to a DataSource), where the data
// goes (spec.pvc or spec.storage) and how big it is. What the CRD's schema
// already enforces (required http.url, pvc.name and namespace, the
// contentType enum) is left to the API server.
func ValidateDataVolume(dv *cdiv1.DataVolume) field.ErrorList {
	spec := field.NewPath("spec")
	errs := validateDataVolumeTarget(spec, &dv.Spec)
	switch s := &dv.Spec; {
	case s.Source == nil && s.SourceRef == nil:
		return append(errs, field.Required(spec.Child("source"), "one of blank, http, registry, pvc, upload (or spec.sourceRef to a DataSource)"))
	case s.Source != nil && s.SourceRef != nil:
		return append(errs, field.Invalid(spec.Child("sourceRef"), s.SourceRef.Name, "set either spec.source or spec.sourceRef, not both"))
	case s.SourceRef != nil:
		return append(errs, validateSourceRef(spec.Child("sourceRef"), s.SourceRef)...)
	}
	return append(errs, validateDataVolumeSource(spec.Child("source"), &dv.Spec)...)
}

// validateDataVolumeTarget: exactly one of spec.pvc and spec.storage, a
// positive size (which a clone into spec.storage may leave out: CDI takes
// the source claim's), and access modes CDI knows.
func validateDataVolumeTarget(spec *field.Path, s *cdiv1.DataVolumeSpec) field.ErrorList {
	var (
		p            *field.Path
		requests     corev1.ResourceList
		modes        []corev1.PersistentVolumeAccessMode
		sizeOptional bool
	)
	switch {
	case s.PVC == nil && s.Storage == nil:
		return field.ErrorList{field.Required(spec.Child("pvc"), "the claim to fill: set spec.pvc or spec.storage")}
	case s.PVC != nil && s.Storage != nil:
		return field.ErrorList{field.Invalid(spec.Child("storage"), "", "spec.pvc is set too; set only one of spec.pvc and spec.storage")}
	case s.PVC != nil:
		p, requests, modes = spec.Child("pvc"), s.PVC.Resources.Requests, s.PVC.AccessModes
	default:
		p, requests, modes = spec.Child("storage"), s.Storage.Resources.Requests, s.Storage.AccessModes
		sizeOptional = s.Source != nil && s.Source.PVC != nil
	}
	var errs field.ErrorList
	sizePath := p.Child("resources", "requests", string(corev1.ResourceStorage))
	switch size, ok := requests[corev1.ResourceStorage]; {
	case !ok && !sizeOptional:
		errs = append(errs, field.Required(sizePath, "the size of the disk, e.g. 1Gi"))
	case ok && size.Cmp(resource.Quantity{}) <= 0:
		errs = append(errs, field.Invalid(sizePath, size.String(), "must be greater than zero"))
	}
	for i, m := range modes {
		if !slices.Contains(dataVolumeAccessModes, string(m)) {
			errs = append(errs, field.NotSupported(p.Child("accessModes").Index(i), m, dataVolumeAccessModes))
		}
	}
	return errs
}

// validateDataVolumeSource: exactly one kind of source, and its URL where
// it has one.
func validateDataVolumeSource(p *field.Path, s *cdiv1.DataVolumeSpec) field.ErrorList {
	src := s.Source
	kinds := sourceKinds(src)
	switch len(kinds) {
	case 0:
		return field.ErrorList{field.Required(p, "one of blank, http, registry, pvc or upload")}
	case 1:
	default:
		return field.ErrorList{field.Invalid(p, strings.Join(kinds, ", "), "exactly one kind of source may be set")}
	}
	var errs field.ErrorList
	switch {
	case src.HTTP != nil:
		if msg := httpURLProblem(src.HTTP.URL); msg != "" {
			errs = append(errs, field.Invalid(p.Child("http", "url"), src.HTTP.URL, msg))
		}
	case src.Registry != nil:
		errs = append(errs, validateRegistry(p.Child("registry"), src.Registry)...)
		if s.ContentType == cdiv1.DataVolumeArchive {
			errs = append(errs, field.NotSupported(field.NewPath("spec", "contentType"), s.ContentType,
				[]string{string(cdiv1.DataVolumeKubeVirt)}))
		}
	case src.Blank != nil:
		if s.ContentType == cdiv1.DataVolumeArchive {
			errs = append(errs, field.NotSupported(field.NewPath("spec", "contentType"), s.ContentType,
				[]string{string(cdiv1.DataVolumeKubeVirt)}))
		}
	case src.PVC != nil:
		if src.PVC.Name == "" {
			errs = append(errs, field.Required(p.Child("pvc", "name"), "the claim to clone"))
		}
	}
	return errs
}

// sourceKinds lists the kinds of source set, by their JSON names.
func sourceKinds(s *cdiv1.DataVolumeSource) []string {
	var kinds []string
	for _, k := range []struct {
		name string
		set  bool
	}{
		{"blank", s.Blank != nil}, {"gcs", s.GCS != nil}, {"http", s.HTTP != nil}, {"imageio", s.Imageio != nil},
		{"pvc", s.PVC != nil}, {"registry", s.Registry != nil}, {"s3", s.S3 != nil}, {"snapshot", s.Snapshot != nil},
		{"upload", s.Upload != nil}, {"vddk", s.VDDK != nil},
	} {
		if k.set {
			kinds = append(kinds, k.name)
		}
	}
	return kinds
}

// httpURLProblem says what is wrong with an http source's URL, or "".
func httpURLProblem(raw string) string {
	u, err := url.ParseRequestURI(raw)
	switch {
	case err != nil:
		return "must be an absolute http:// or https:// URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("scheme %q is not supported; use http:// or https://", u.Scheme)
	case u.Host == "":
		return "must name a host, e.g. https://example.com/disk.qcow2"
	}
	return ""
}

// validateRegistry: exactly one of url and imageStream; the url is
// docker://IMAGE or oci-archive://PATH.
func validateRegistry(p *field.Path, r *cdiv1.DataVolumeSourceRegistry) field.ErrorList {
	hasURL, hasStream := r.URL != nil && *r.URL != "", r.ImageStream != nil && *r.ImageStream != ""
	switch {
	case !hasURL && !hasStream:
		return field.ErrorList{field.Required(p.Child("url"), "docker://<image> or oci-archive://<path>")}
	case hasURL && hasStream:
		return field.ErrorList{field.Invalid(p.Child("imageStream"), *r.ImageStream, "set either url or imageStream, not both")}
	case hasStream:
		return nil
	}
	u, err := url.Parse(*r.URL)
	if err != nil || !slices.Contains(registrySchemes, u.Scheme) {
		return field.ErrorList{field.Invalid(p.Child("url"), *r.URL,
			"must be docker://<image> or oci-archive://<path>, e.g. docker://quay.io/containerdisks/fedora:latest")}
	}
	if m := r.PullMethod; m != nil && *m != cdiv1.RegistryPullPod && *m != cdiv1.RegistryPullNode {
		return field.ErrorList{field.NotSupported(p.Child("pullMethod"), *m,
			[]string{string(cdiv1.RegistryPullPod), string(cdiv1.RegistryPullNode)})}
	}
	return nil
}

// validateSourceRef: a named DataSource, the only kind CDI follows.
func validateSourceRef(p *field.Path, ref *cdiv1.DataVolumeSourceRef) field.ErrorList {
	var errs field.ErrorList
	if ref.Kind != cdiv1.DataVolumeDataSource {
		errs = append(errs, field.NotSupported(p.Child("kind"), ref.Kind, []string{cdiv1.DataVolumeDataSource}))
	}
	if ref.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), "the DataSource to populate from"))
	}
	return errs
}

// ValidateDataVolumeUpdate checks an update: as in CDI the spec is fixed
// once created. The one exception is CDI's too: a multi-stage import (vddk
// or imageio) may add checkpoints and set finalCheckpoint.
func ValidateDataVolumeUpdate(old, updated *cdiv1.DataVolume) field.ErrorList {
	if equality.Semantic.DeepEqual(old.Spec, updated.Spec) {
		return nil
	}
	if src := updated.Spec.Source; src != nil && (src.VDDK != nil || src.Imageio != nil) && len(updated.Spec.Checkpoints) > 0 {
		a, b := old.Spec.DeepCopy(), updated.Spec.DeepCopy()
		a.Checkpoints, a.FinalCheckpoint, b.Checkpoints, b.FinalCheckpoint = nil, false, nil, false
		if equality.Semantic.DeepEqual(a, b) {
			return nil
		}
	}
	var errs field.ErrorList
	for _, name := range changedFields(old.Spec, updated.Spec) {
		errs = append(errs, field.Forbidden(field.NewPath("spec", name),
			"the spec of a DataVolume cannot change after it is created; delete it and create a new one"))
	}
	return errs
}

// AccessReviewer answers a SubjectAccessReview: whether the user of spec
// may do what its resource attributes say.
type AccessReviewer func(ctx context.Context, spec authorizationv1.SubjectAccessReviewSpec) (bool, error)

// AuthorizeClone checks, as CDI does, that the user creating dv may read
// the claim it clones: a clone from another namespace needs `create` on
// `datavolumes/source` (cdi.kubevirt.io) in the source namespace — or,
// CDI's older rule, `create` on `pods` there, since a pod could mount the
// claim anyway. A clone within the DataVolume's own namespace needs
// neither, as in CDI: whoever may create the DataVolume may create a pod
// that mounts the claim. A DataVolume that clones nothing passes. The
// field error names spec.source.pvc; err is for a review that could not
// be asked.
func AuthorizeClone(ctx context.Context, dv *cdiv1.DataVolume, namespace string, user authenticationv1.UserInfo, review AccessReviewer) (*field.Error, error) {
	if dv.Namespace != "" {
		namespace = dv.Namespace
	}
	return authorizeClone(ctx, field.NewPath("spec"), &dv.Spec, namespace, user, review)
}

// authorizeClone is AuthorizeClone for the DataVolume spec at p, to be made
// in namespace: the field error names p's source.pvc.
func authorizeClone(ctx context.Context, p *field.Path, dv *cdiv1.DataVolumeSpec, namespace string, user authenticationv1.UserInfo, review AccessReviewer) (*field.Error, error) {
	if dv.Source == nil || dv.Source.PVC == nil {
		return nil, nil
	}
	src := dv.Source.PVC
	sourceNS := src.Namespace
	if sourceNS == "" {
		sourceNS = namespace
	}
	if sourceNS == namespace {
		return nil, nil
	}
	spec := authorizationv1.SubjectAccessReviewSpec{User: user.Username, UID: user.UID, Groups: user.Groups}
	if len(user.Extra) > 0 {
		spec.Extra = map[string]authorizationv1.ExtraValue{}
		for k, v := range user.Extra {
			spec.Extra[k] = authorizationv1.ExtraValue(v)
		}
	}
	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Namespace: sourceNS, Verb: "create", Group: cdiv1.SchemeGroupVersion.Group, Resource: DataVolumes,
			Subresource: cdiv1.DataVolumeCloneSourceSubresource, Name: src.Name},
		{Namespace: sourceNS, Verb: "create", Resource: "pods", Name: src.Name},
	} {
		s := spec
		s.ResourceAttributes = &attrs
		allowed, err := review(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("SubjectAccessReview for clone source %s/%s: %w", sourceNS, src.Name, err)
		}
		if allowed {
			return nil, nil
		}
	}
	return field.Forbidden(p.Child("source", "pvc"), fmt.Sprintf(
		"User %s has insufficient permissions in clone source namespace %s: "+
			"no permission to create datavolumes/source (API group %s) in namespace %s; "+
			"an admin of %s can grant it with a RoleBinding to the view, edit or admin ClusterRole",
		user.Username, sourceNS, cdiv1.SchemeGroupVersion.Group, sourceNS, sourceNS)), nil
}

// AuthorizeDataVolumeTemplates applies AuthorizeClone to the DataVolume
// templates of a VM, as KubeVirt's VM admitter does: virt-controller makes
// their DataVolumes as itself, so the clone source is checked, here,
// against the identity the VM acts as — its ServiceAccount (the one a
// serviceAccount volume of its template names, else "default"), which is
// what KubeVirt's and OpenShift's documentation bind the datavolumes/source
// role to. A template is checked when the VM is created (old is nil) and
// when an update adds it or changes its spec; one the stored VM already
// had, unchanged, is not asked about again. A template naming a namespace
// other than the VM's is refused: its DataVolume is made in the VM's.
// Field errors name spec.dataVolumeTemplates[i]; err is for a review that
// could not be asked.
func AuthorizeDataVolumeTemplates(ctx context.Context, vm, old *virtv1.VirtualMachine, namespace string, review AccessReviewer) (field.ErrorList, error) {
	if vm.Namespace != "" {
		namespace = vm.Namespace
	}
	user := serviceAccountUser(vm, namespace)
	var errs field.ErrorList
	for i := range vm.Spec.DataVolumeTemplates {
		t := &vm.Spec.DataVolumeTemplates[i]
		if old != nil && hasTemplate(old.Spec.DataVolumeTemplates, t) {
			continue
		}
		p := field.NewPath("spec", "dataVolumeTemplates").Index(i)
		if t.Namespace != "" && t.Namespace != namespace {
			errs = append(errs, field.Invalid(p.Child("metadata", "namespace"), t.Namespace, fmt.Sprintf(
				"the DataVolume is made in the VirtualMachine's namespace %s; leave metadata.namespace empty or set it to %s",
				namespace, namespace)))
			continue
		}
		forbidden, err := authorizeClone(ctx, p.Child("spec"), &t.Spec, namespace, user, review)
		if err != nil {
			return nil, fmt.Errorf("spec.dataVolumeTemplates[%d]: %w", i, err)
		}
		if forbidden != nil {
			errs = append(errs, forbidden)
		}
	}
	return errs, nil
}

// serviceAccountUser is the identity a VM in namespace acts as: the
// ServiceAccount its template's serviceAccount volume names, else
// "default", with the groups the API server gives a ServiceAccount.
func serviceAccountUser(vm *virtv1.VirtualMachine, namespace string) authenticationv1.UserInfo {
	name := "default"
	if t := vm.Spec.Template; t != nil {
		for _, v := range t.Spec.Volumes {
			if v.ServiceAccount != nil && v.ServiceAccount.ServiceAccountName != "" {
				name = v.ServiceAccount.ServiceAccountName
			}
		}
	}
	return authenticationv1.UserInfo{
		Username: "system:serviceaccount:" + namespace + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
}

// hasTemplate reports whether templates hold one of t's name, namespace
// and spec.
func hasTemplate(templates []virtv1.DataVolumeTemplateSpec, t *virtv1.DataVolumeTemplateSpec) bool {
	for i := range templates {
		o := &templates[i]
		if o.Name == t.Name && o.Namespace == t.Namespace && equality.Semantic.DeepEqual(o.Spec, t.Spec) {
			return true
		}
	}
	return false
}
