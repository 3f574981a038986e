// Package crdgen turns the Go types of kubevirt.io/api into the
// CustomResourceDefinitions virtkube serves. The schemas come from the types
// (and the kubebuilder markers KubeVirt keeps on them) through
// controller-tools; what the types cannot say — names, short names,
// categories, printer columns, subresources and the served versions — is
// declared here, once per kind, as KubeVirt publishes it.
package crdgen

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/tools/go/packages"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-tools/pkg/crd"
	"sigs.k8s.io/controller-tools/pkg/loader"
	"sigs.k8s.io/yaml"
)

// corePackage holds every kubevirt.io/v1 kind.
const corePackage = "kubevirt.io/api/core/v1"

// Group is the API group of the generated CRDs.
const Group = "kubevirt.io"

// StorageVersion is the version objects are stored in; ServedAlso lists the
// older versions still served with the same schema, as KubeVirt serves them.
const (
	StorageVersion = "v1"
	v1alpha3       = "v1alpha3"
)

var v1alpha3Warning = "kubevirt.io/v1alpha3 is now deprecated and will be removed in a future release."

// kind is what the Go type cannot tell about one CRD.
type kind struct {
	Kind       string
	Plural     string
	ShortNames []string
	Columns    []apiextv1.CustomResourceColumnDefinition
	// Scale, when set, enables the scale subresource.
	Scale *apiextv1.CustomResourceSubresourceScale
}

func column(name, typ, path string, priority int32) apiextv1.CustomResourceColumnDefinition {
	return apiextv1.CustomResourceColumnDefinition{Name: name, Type: typ, JSONPath: path, Priority: priority}
}

var (
	ageColumn   = column("Age", "date", ".metadata.creationTimestamp", 0)
	readyColumn = column("Ready", "string", ".status.conditions[?(@.type=='Ready')].status", 0)
	phaseColumn = column("Phase", "string", ".status.phase", 0)
)

// Kinds are the kubevirt.io kinds virtkube serves, in install order.
var Kinds = []kind{
	{
		Kind:       "KubeVirt",
		Plural:     "kubevirts",
		ShortNames: []string{"kv", "kvs"},
		Columns:    []apiextv1.CustomResourceColumnDefinition{ageColumn, phaseColumn},
	},
	{
		Kind:       "VirtualMachineInstance",
		Plural:     "virtualmachineinstances",
		ShortNames: []string{"vmi", "vmis"},
		Columns: []apiextv1.CustomResourceColumnDefinition{
			ageColumn,
			phaseColumn,
			column("IP", "string", ".status.interfaces[0].ipAddress", 0),
			column("NodeName", "string", ".status.nodeName", 0),
			readyColumn,
			column("Live-Migratable", "string", ".status.conditions[?(@.type=='LiveMigratable')].status", 1),
			column("Paused", "string", ".status.conditions[?(@.type=='Paused')].status", 1),
		},
	},
	{
		Kind:       "VirtualMachine",
		Plural:     "virtualmachines",
		ShortNames: []string{"vm", "vms"},
		Columns: []apiextv1.CustomResourceColumnDefinition{
			ageColumn,
			column("Status", "string", ".status.printableStatus", 0),
			readyColumn,
		},
	},
	{
		Kind:       "VirtualMachineInstanceReplicaSet",
		Plural:     "virtualmachineinstancereplicasets",
		ShortNames: []string{"vmirs", "vmirss"},
		Columns: []apiextv1.CustomResourceColumnDefinition{
			column("Desired", "integer", ".spec.replicas", 0),
			column("Current", "integer", ".status.replicas", 0),
			column("Ready", "integer", ".status.readyReplicas", 0),
			ageColumn,
		},
		Scale: &apiextv1.CustomResourceSubresourceScale{
			SpecReplicasPath:   ".spec.replicas",
			StatusReplicasPath: ".status.replicas",
			LabelSelectorPath:  ptr(".status.labelSelector"),
		},
	},
	{
		Kind:       "VirtualMachineInstanceMigration",
		Plural:     "virtualmachineinstancemigrations",
		ShortNames: []string{"vmim", "vmims"},
		Columns: []apiextv1.CustomResourceColumnDefinition{
			phaseColumn,
			column("VMI", "string", ".spec.vmiName", 0),
		},
	},
}

func ptr[T any](v T) *T { return &v }

// Generate loads kubevirt.io/api from the module cache and returns one CRD per
// entry of Kinds, in that order.
func Generate() ([]apiextv1.CustomResourceDefinition, error) {
	pkgs, err := loader.LoadRoots(corePackage)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", corePackage, err)
	}
	parser, err := newParser(pkgs)
	if err != nil {
		return nil, err
	}

	noDescriptions := 1 << 20
	var out []apiextv1.CustomResourceDefinition
	for _, k := range Kinds {
		gk := schema.GroupKind{Group: Group, Kind: k.Kind}
		parser.NeedCRDFor(gk, &noDescriptions)
		def, ok := parser.CustomResourceDefinitions[gk]
		if !ok {
			return nil, fmt.Errorf("no type for %s in %s", gk, corePackage)
		}
		out = append(out, decorate(def, k))
	}
	if err := packageErrors(pkgs); err != nil {
		return nil, err
	}
	return out, nil
}

// packageErrors gathers the errors controller-tools recorded while walking
// the types; any of them means a schema is wrong or missing.
func packageErrors(pkgs []*loader.Package) error {
	var msgs []string
	seen := map[*loader.Package]bool{}
	var visit func(p *loader.Package)
	visit = func(p *loader.Package) {
		if seen[p] {
			return
		}
		seen[p] = true
		for _, e := range p.Errors {
			// controller-tools type-checks only what it walks, so type
			// errors elsewhere are noise (controller-gen ignores them too).
			var perr packages.Error
			if errors.As(e, &perr) && perr.Kind == packages.TypeError {
				continue
			}
			msgs = append(msgs, e.Error())
		}
		for _, imp := range p.Imports() {
			visit(imp)
		}
	}
	for _, p := range pkgs {
		visit(p)
	}
	if len(msgs) > 0 {
		return fmt.Errorf("schema generation: %s", strings.Join(msgs, "; "))
	}
	return nil
}

// decorate adds what KubeVirt publishes beyond the schema: names, columns,
// subresources, and v1alpha3 served beside v1.
func decorate(def apiextv1.CustomResourceDefinition, k kind) apiextv1.CustomResourceDefinition {
	def.Spec.Names.Plural = k.Plural
	def.Spec.Names.Singular = strings.ToLower(k.Kind)
	def.Spec.Names.ShortNames = k.ShortNames
	def.Spec.Names.Categories = []string{"all"}
	def.Name = k.Plural + "." + Group
	def.Labels = map[string]string{"app.kubernetes.io/part-of": "virtkube"}

	if len(def.Spec.Versions) != 1 || def.Spec.Versions[0].Name != StorageVersion {
		panic(fmt.Sprintf("crdgen: %s: expected exactly version %s from %s", k.Kind, StorageVersion, corePackage))
	}
	// The object's own metadata is the apiserver's to validate.
	crd.FixTopLevelMetadata(def)
	v1 := def.Spec.Versions[0]
	v1.Served, v1.Storage = true, true
	v1.AdditionalPrinterColumns = k.Columns
	v1.Subresources = &apiextv1.CustomResourceSubresources{
		Status: &apiextv1.CustomResourceSubresourceStatus{},
		Scale:  k.Scale,
	}
	old := *v1.DeepCopy()
	old.Name, old.Storage = v1alpha3, false
	old.Deprecated, old.DeprecationWarning = true, &v1alpha3Warning
	def.Spec.Versions = []apiextv1.CustomResourceDefinitionVersion{v1, old}
	def.Status = apiextv1.CustomResourceDefinitionStatus{}
	return def
}

// header starts every generated file.
const header = "# Code generated by hack/crdgen from kubevirt.io/api; DO NOT EDIT.\n# Regenerate with: make generate\n"

// Marshal renders one CRD the way it is committed under deploy/crds.
func Marshal(def apiextv1.CustomResourceDefinition) ([]byte, error) {
	body, err := yaml.Marshal(def)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", def.Name, err)
	}
	// The status stanza is server-owned; drop it from the manifest.
	body = []byte(strings.Replace(string(body), "status:\n  acceptedNames:\n    kind: \"\"\n    plural: \"\"\n  conditions: null\n  storedVersions: null\n", "", 1))
	return append([]byte(header), body...), nil
}

// FileName is the name of the committed file for def.
func FileName(def apiextv1.CustomResourceDefinition) string {
	return def.Name + ".yaml"
}
