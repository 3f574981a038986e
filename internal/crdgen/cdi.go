package crdgen

import (
	"fmt"
	"slices"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-tools/pkg/crd"
	crdmarkers "sigs.k8s.io/controller-tools/pkg/crd/markers"
	"sigs.k8s.io/controller-tools/pkg/loader"
	"sigs.k8s.io/controller-tools/pkg/markers"
)

// cdiCorePackage is CDI's API package in
// kubevirt.io/containerized-data-importer-api. Its kubebuilder markers
// already say names, scope, short names and columns, so unlike KubeVirt's
// kinds these CRDs are used as controller-tools makes them.
const cdiCorePackage = "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

// CDIKinds are the CDI kinds virtkube serves as CRDs: what manifests
// written for CDI create (DataVolume, the CDI CR, CDIConfig).
// UploadTokenRequest (upload.cdi.kubevirt.io) is no CRD: as in CDI, an
// aggregated API answers it (virt-api, see internal/subresource).
var CDIKinds = []schema.GroupKind{
	{Group: "cdi.kubevirt.io", Kind: "CDI"},
	{Group: "cdi.kubevirt.io", Kind: "CDIConfig"},
	{Group: "cdi.kubevirt.io", Kind: "DataVolume"},
}

// GenerateCDI loads CDI's API from the module cache and returns one CRD per
// entry of CDIKinds.
func GenerateCDI() ([]apiextv1.CustomResourceDefinition, error) {
	pkgs, err := loader.LoadRoots(cdiCorePackage)
	if err != nil {
		return nil, fmt.Errorf("load CDI API: %w", err)
	}
	parser, err := newParser(pkgs)
	if err != nil {
		return nil, err
	}
	noDescriptions := 1 << 20
	var out []apiextv1.CustomResourceDefinition
	for _, gk := range CDIKinds {
		parser.NeedCRDFor(gk, &noDescriptions)
		def, ok := parser.CustomResourceDefinitions[gk]
		if !ok {
			return nil, fmt.Errorf("no type for %s in the CDI API", gk)
		}
		crd.FixTopLevelMetadata(def)
		def.Labels = map[string]string{"app.kubernetes.io/part-of": "virtkube"}
		for i := range def.Spec.Versions {
			v := &def.Spec.Versions[i]
			v.Served, v.Storage = true, true
			// The apiserver drops the status of a create when the status
			// subresource is on, so a required status could never pass.
			if v.Schema != nil && v.Schema.OpenAPIV3Schema != nil {
				v.Schema.OpenAPIV3Schema.Required = slices.DeleteFunc(v.Schema.OpenAPIV3Schema.Required, func(f string) bool { return f == "status" })
			}
			// A kind without a status subresource marker gets one
			// too: its status is written by a controller.
			if v.Subresources == nil {
				v.Subresources = &apiextv1.CustomResourceSubresources{Status: &apiextv1.CustomResourceSubresourceStatus{}}
			}
		}
		def.Status = apiextv1.CustomResourceDefinitionStatus{}
		out = append(out, def)
	}
	if err := packageErrors(pkgs); err != nil {
		return nil, err
	}
	return out, nil
}

// newParser is a controller-tools parser over pkgs, set up for KubeVirt's
// and CDI's types.
func newParser(pkgs []*loader.Package) (*crd.Parser, error) {
	registry := &markers.Registry{}
	if err := crdmarkers.Register(registry); err != nil {
		return nil, fmt.Errorf("register markers: %w", err)
	}
	parser := &crd.Parser{
		Collector: &markers.Collector{Registry: registry},
		Checker:   &loader.TypeChecker{},
		// KubeVirt's types use float64 in a few places (e.g. CPU ratios).
		AllowDangerousTypes: true,
		// Templates carry labels and annotations; without a schema for
		// embedded ObjectMeta they would be pruned.
		GenerateEmbeddedObjectMeta: true,
	}
	crd.AddKnownTypes(parser)
	for _, pkg := range pkgs {
		parser.NeedPackage(pkg)
	}
	return parser, nil
}
