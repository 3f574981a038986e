// Package virtapi carries the virt-api manifests of deploy/virt-api, so
// `virtkube server` installs the very YAML a real cluster applies.
package virtapi

import (
	_ "embed"
)

// ClusterRoles is clusterroles.yaml: KubeVirt's kubevirt.io:admin, edit and
// view ClusterRoles, several YAML documents.
//
//go:embed clusterroles.yaml
var ClusterRoles []byte
