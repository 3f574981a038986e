package crdgen

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The committed manifests under deploy/crds are exactly what the generator
// makes from the kubevirt.io/api version in go.mod. Run `make generate` when
// this fails.
func TestCommittedCRDsAreCurrent(t *testing.T) {
	defs, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	cdi, err := GenerateCDI()
	if err != nil {
		t.Fatal(err)
	}
	defs = append(defs, cdi...)
	dir := filepath.Join("..", "..", "deploy", "crds")
	committed, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(committed) != len(defs) {
		t.Errorf("deploy/crds has %d files, the generator makes %d; run make generate", len(committed), len(defs))
	}
	for _, def := range defs {
		want, err := Marshal(def)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, FileName(def)))
		if err != nil {
			t.Errorf("%s: %v; run make generate", FileName(def), err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("deploy/crds/%s is stale; run make generate", FileName(def))
		}
	}
}

func TestKindsAreDecorated(t *testing.T) {
	defs, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, def := range defs {
		if len(def.Spec.Versions) != 2 || def.Spec.Versions[0].Name != "v1" || !def.Spec.Versions[0].Storage ||
			def.Spec.Versions[1].Name != "v1alpha3" || def.Spec.Versions[1].Storage || !def.Spec.Versions[1].Served {
			t.Errorf("%s: versions = %+v, want v1 (storage) and v1alpha3 (served)", def.Name, def.Spec.Versions)
		}
		for _, v := range def.Spec.Versions {
			props := v.Schema.OpenAPIV3Schema.Properties
			if len(props["spec"].Properties) == 0 {
				t.Errorf("%s %s: spec has no schema", def.Name, v.Name)
			}
			if md := props["metadata"]; md.Type != "object" || len(md.Properties) != 0 {
				t.Errorf("%s %s: top-level metadata schema must be a bare object, got %+v", def.Name, v.Name, md)
			}
		}
		if def.Spec.Names.Kind == "VirtualMachineInstanceReplicaSet" {
			scale := def.Spec.Versions[0].Subresources.Scale
			if scale == nil || scale.SpecReplicasPath != ".spec.replicas" || scale.StatusReplicasPath != ".status.replicas" ||
				scale.LabelSelectorPath == nil || *scale.LabelSelectorPath != ".status.labelSelector" {
				t.Errorf("VMIRS scale subresource = %+v", scale)
			}
		}
	}
}
