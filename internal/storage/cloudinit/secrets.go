package cloudinit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	virtv1 "kubevirt.io/api/core/v1"
)

// SecretsDir is where the launcher pod mounts the Secrets a cloud-init
// volume refers to, as KubeVirt mounts them:
// <SecretsDir>/<volume>/userdata and <SecretsDir>/<volume>/networkdata.
const SecretsDir = "/var/run/kubevirt-private/secret"

// Which part of cloud-init data a Secret holds.
const (
	UserDataSecret    = "userdata"
	NetworkDataSecret = "networkdata"
)

// SecretMountPath is where the Secret holding which (UserDataSecret or
// NetworkDataSecret) of volume is mounted in the compute container.
func SecretMountPath(volume, which string) string {
	return path.Join(SecretsDir, volume, which)
}

// SecretRefs are the Secrets v refers to, by which part of the data they
// hold; empty for a volume that is no cloud-init volume or refers to none.
func SecretRefs(v *virtv1.Volume) map[string]string {
	var user, network *corev1.LocalObjectReference
	switch {
	case v.CloudInitNoCloud != nil:
		user, network = v.CloudInitNoCloud.UserDataSecretRef, v.CloudInitNoCloud.NetworkDataSecretRef
	case v.CloudInitConfigDrive != nil:
		user, network = v.CloudInitConfigDrive.UserDataSecretRef, v.CloudInitConfigDrive.NetworkDataSecretRef
	}
	refs := map[string]string{}
	if user != nil && user.Name != "" {
		refs[UserDataSecret] = user.Name
	}
	if network != nil && network.Name != "" {
		refs[NetworkDataSecret] = network.Name
	}
	return refs
}

// MountedSecrets reads the Secrets of vmi's cloud-init volume from where
// the pod mounts them under root (SecretsDir in a launcher pod).
func MountedSecrets(vmi *virtv1.VirtualMachineInstance, root string) SecretGetter {
	return func(name string) (map[string][]byte, error) {
		_, v := Find(vmi)
		if v == nil {
			return nil, fmt.Errorf("secret %q: the VMI has no cloud-init volume", name)
		}
		for which, ref := range SecretRefs(v) {
			if ref == name {
				return readSecretDir(filepath.Join(root, v.Name, which))
			}
		}
		return nil, fmt.Errorf("secret %q is not mounted in this pod", name)
	}
}

// readSecretDir reads a mounted Secret: one file per key (kubelet's
// ..data links and dot files are skipped).
func readSecretDir(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("not mounted at %s", dir)
	}
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if data[e.Name()], err = os.ReadFile(p); err != nil {
			return nil, err
		}
	}
	return data, nil
}
