// Package deploy carries the manifests virtkube installs: the same YAML a
// real cluster applies from this directory is embedded in the binary.
package deploy

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

//go:embed crds/*.yaml
var crdFiles embed.FS

// CRDs returns the CustomResourceDefinitions under deploy/crds, sorted by name.
func CRDs() ([]*apiextv1.CustomResourceDefinition, error) {
	names, err := fs.Glob(crdFiles, "crds/*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]*apiextv1.CustomResourceDefinition, 0, len(names))
	for _, name := range names {
		body, err := crdFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		crd := &apiextv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(body, crd); err != nil {
			return nil, fmt.Errorf("decode %s: %w", name, err)
		}
		out = append(out, crd)
	}
	return out, nil
}
