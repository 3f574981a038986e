// Package hostpath carries the manifests of the hostpath provisioner, as a
// real cluster applies them from this directory and as `virtkube server`
// installs them: the HostPathProvisioner CRD (written by hand: no Go module
// with its types resolves beside our Kubernetes modules) and the
// StorageClass the seed uses. A real cluster also applies the provisioner's
// DaemonSet and RBAC (virtkube server runs its node's provisioner itself).
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

// Provisioner is provisioner.yaml, several YAML documents: the namespace
// hostpath-provisioner, the ServiceAccount and ClusterRole(Binding) of
// `virtkube hostpath-provisioner` and its DaemonSet.
//
//go:embed provisioner.yaml
var Provisioner []byte

// ExampleHostPathProvisioner is the seed's HostPathProvisioner: pool "local"
// at /var/hpvolumes.
//
//go:embed examples/hostpathprovisioner.yaml
var ExampleHostPathProvisioner []byte
