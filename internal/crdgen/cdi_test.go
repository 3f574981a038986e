package crdgen

import (
	"slices"
	"testing"
)

// CDI's CRDs keep what CDI's markers say (DataVolume's short names and
// columns, CDIConfig cluster-scoped), and no status is required on create.
func TestCDIKinds(t *testing.T) {
	defs, err := GenerateCDI()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]int{}
	for i, d := range defs {
		byName[d.Name] = i
		for _, v := range d.Spec.Versions {
			if slices.Contains(v.Schema.OpenAPIV3Schema.Required, "status") {
				t.Errorf("%s %s: status is required", d.Name, v.Name)
			}
			// The CDI CR has none in CDI either.
			if d.Name != "cdis.cdi.kubevirt.io" && (v.Subresources == nil || v.Subresources.Status == nil) {
				t.Errorf("%s %s: no status subresource", d.Name, v.Name)
			}
		}
	}
	for _, name := range []string{"datavolumes.cdi.kubevirt.io", "cdis.cdi.kubevirt.io", "cdiconfigs.cdi.kubevirt.io"} {
		if _, ok := byName[name]; !ok {
			t.Errorf("no CRD %s", name)
		}
	}
	// virt-api serves it as CDI's apiserver does; a CRD would shadow that.
	if _, ok := byName["uploadtokenrequests.upload.cdi.kubevirt.io"]; ok {
		t.Error("UploadTokenRequest is a CRD; it must be left to the aggregated API")
	}
	dv := defs[byName["datavolumes.cdi.kubevirt.io"]]
	if !slices.Equal(dv.Spec.Names.ShortNames, []string{"dv", "dvs"}) || len(dv.Spec.Versions[0].AdditionalPrinterColumns) == 0 {
		t.Errorf("DataVolume names %+v, columns %+v", dv.Spec.Names, dv.Spec.Versions[0].AdditionalPrinterColumns)
	}
	if cfg := defs[byName["cdiconfigs.cdi.kubevirt.io"]]; cfg.Spec.Scope != "Cluster" {
		t.Errorf("CDIConfig scope %s, want Cluster", cfg.Spec.Scope)
	}
}
