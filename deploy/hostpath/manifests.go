// Package hostpath carries the manifests of the hostpath provisioner, as a
// real cluster applies them from this directory and as `virtkube server`
// installs them: the HostPathProvisioner CRD (written by hand: no Go module
// with its types resolves beside our Kubernetes modules) and the
// StorageClass the seed uses.
package hostpath

import _ "embed"

// CRD is the CustomResourceDefinition of hostpathprovisioner.kubevirt.io
// HostPathProvisioner.
//
//go:embed hostpathprovisioners.hostpathprovisioner.kubevirt.io.yaml
var CRD []byte

// StorageClass is the StorageClass hostpath-csi, served from the storage
// pool "local".
//
//go:embed storageclass.yaml
var StorageClass []byte
