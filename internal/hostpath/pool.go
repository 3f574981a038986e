// Package hostpath is the hostpath provisioner of a node: it serves the
// PersistentVolumeClaims of StorageClasses with provisioner
// kubevirt.io.hostpath-provisioner from directories of this node, as
// KubeVirt's hostpath-provisioner does.
//
// Binding follows the external-provisioner protocol. The StorageClass has
// volumeBindingMode WaitForFirstConsumer, so a claim stays Pending until
// kube-scheduler's VolumeBinding plugin picks a node for the first pod that
// uses it and writes that node into the claim's
// volume.kubernetes.io/selected-node annotation. The provisioner of that
// node then makes the directory <pool path>/csi/<volume name> and a hostPath
// PersistentVolume for it, pre-bound to the claim (claimRef) and pinned to
// the node (nodeAffinity); kube-controller-manager's PV controller completes
// the binding and the scheduler binds the pod.
//
// A volume of a class with reclaimPolicy Delete carries a finalizer: when
// its claim is deleted, the PV controller marks it Released, the
// provisioner deletes it, removes its directory and then the finalizer.
//
// One provisioner runs per node and acts only on its node: claims whose
// selected-node is that node, volumes pinned to it. `virtkube server` runs
// its node's in-process; on a real cluster `virtkube hostpath-provisioner`
// runs as a DaemonSet (deploy/hostpath) with the pool directories mounted
// at the same paths as on the host, so a volume's path is the node's.
//
// # Storage pools
//
// The class's parameters.storagePool names a pool of the cluster's
// HostPathProvisioner CR (spec.storagePools[].{name, path}). Without any
// HostPathProvisioner, one pool named "local" exists at the default path
// the node is given (under virtkube server's data directory; the
// standalone provisioner's --default-pool-path, /var/hpvolumes unless
// set), so the StorageClass hostpath-csi works without one.
//
// # Not done
//
// Only Filesystem volumes: a claim of volumeMode Block is refused with an
// event. The CR's workload placement, imagePullPolicy and the legacy
// pathConfig (provisioner kubevirt.io/hostpath-provisioner) are accepted and
// ignored: no operator deploys anything from the CR. Capacity
// is not checked against the pool's free space (directories are not quota
// limited, as with the real provisioner).
package hostpath

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	// Provisioner is the StorageClass provisioner name served here.
	Provisioner = "kubevirt.io.hostpath-provisioner"
	// PoolParameter is the StorageClass parameter naming the pool.
	PoolParameter = "storagePool"
	// DefaultPoolName is the pool that exists without a HostPathProvisioner.
	DefaultPoolName = "local"
	// DefaultStorageClass is the StorageClass virtkube server installs.
	DefaultStorageClass = "hostpath-csi"
)

// GroupVersionKind of the HostPathProvisioner CR.
var GroupVersionKind = schema.GroupVersionKind{Group: "hostpathprovisioner.kubevirt.io", Version: "v1beta1", Kind: "HostPathProvisioner"}

// Spec is the part of a HostPathProvisioner's spec the provisioner reads.
type Spec struct {
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	StoragePools    []StoragePool     `json:"storagePools,omitempty"`
}

// StoragePool is a directory volumes are made in, on every node.
type StoragePool struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// Pools are the storage pools, name to path, of the HostPathProvisioner
// objects crs; with none, the default pool "local" at defaultPath. A pool
// named twice with different paths is an error naming both objects.
func Pools(crs []unstructured.Unstructured, defaultPath string) (map[string]string, error) {
	if len(crs) == 0 {
		return map[string]string{DefaultPoolName: defaultPath}, nil
	}
	pools := map[string]string{}
	owner := map[string]string{}
	for _, cr := range crs {
		spec, _, err := unstructured.NestedMap(cr.Object, "spec")
		if err != nil {
			return nil, fmt.Errorf("HostPathProvisioner %s: spec: %w", cr.GetName(), err)
		}
		var s Spec
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(spec, &s); err != nil {
			return nil, fmt.Errorf("HostPathProvisioner %s: spec: %w", cr.GetName(), err)
		}
		for i, p := range s.StoragePools {
			if p.Name == "" || p.Path == "" {
				return nil, fmt.Errorf("HostPathProvisioner %s: spec.storagePools[%d]: name and path must be set", cr.GetName(), i)
			}
			if prev, ok := pools[p.Name]; ok && prev != p.Path {
				return nil, fmt.Errorf("HostPathProvisioner %s: spec.storagePools[%d]: pool %q is also defined by %s with path %s",
					cr.GetName(), i, p.Name, owner[p.Name], prev)
			}
			pools[p.Name], owner[p.Name] = p.Path, cr.GetName()
		}
	}
	return pools, nil
}
