// Package cloudinit builds the cloud-init disk of a VMI: a NoCloud (label
// cidata) or ConfigDrive (label config-2) ISO9660 image with Rock Ridge and
// Joliet names, made in Go, as KubeVirt makes it with genisoimage.
package cloudinit

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
)

// Volume labels the guest looks for.
const (
	NoCloudLabel     = "cidata"
	ConfigDriveLabel = "config-2"
)

// Kind is the cloud-init datasource.
type Kind string

const (
	NoCloud     Kind = "noCloud"
	ConfigDrive Kind = "configDrive"
)

// SecretGetter returns the data of a Secret in the VMI's namespace; the
// launcher reads secrets mounted into its pod.
type SecretGetter func(name string) (map[string][]byte, error)

// Data is a resolved cloud-init source.
type Data struct {
	Kind        Kind
	UserData    []byte
	NetworkData []byte
}

// Find returns the VMI's cloud-init volume, if it has one.
func Find(vmi *virtv1.VirtualMachineInstance) (int, *virtv1.Volume) {
	for i := range vmi.Spec.Volumes {
		v := &vmi.Spec.Volumes[i]
		if v.CloudInitNoCloud != nil || v.CloudInitConfigDrive != nil {
			return i, v
		}
	}
	return -1, nil
}

// Resolve reads user and network data from the volume at index i: inline,
// base64, or from a Secret. Errors name the field.
func Resolve(vmi *virtv1.VirtualMachineInstance, i int, secrets SecretGetter) (Data, error) {
	v := vmi.Spec.Volumes[i]
	path := field.NewPath("spec", "volumes").Index(i)
	var (
		d                                          Data
		userData, userDataB64, netData, netDataB64 string
		userSecret, netSecret                      string
		srcPath                                    *field.Path
	)
	switch {
	case v.CloudInitNoCloud != nil:
		s := v.CloudInitNoCloud
		d.Kind, srcPath = NoCloud, path.Child("cloudInitNoCloud")
		userData, userDataB64, netData, netDataB64 = s.UserData, s.UserDataBase64, s.NetworkData, s.NetworkDataBase64
		if s.UserDataSecretRef != nil {
			userSecret = s.UserDataSecretRef.Name
		}
		if s.NetworkDataSecretRef != nil {
			netSecret = s.NetworkDataSecretRef.Name
		}
	case v.CloudInitConfigDrive != nil:
		s := v.CloudInitConfigDrive
		d.Kind, srcPath = ConfigDrive, path.Child("cloudInitConfigDrive")
		userData, userDataB64, netData, netDataB64 = s.UserData, s.UserDataBase64, s.NetworkData, s.NetworkDataBase64
		if s.UserDataSecretRef != nil {
			userSecret = s.UserDataSecretRef.Name
		}
		if s.NetworkDataSecretRef != nil {
			netSecret = s.NetworkDataSecretRef.Name
		}
	default:
		return d, fmt.Errorf("%s is not a cloud-init volume", path)
	}

	var err error
	if d.UserData, err = pick(srcPath, [3]string{"userData", "userDataBase64", "secretRef"},
		userData, userDataB64, userSecret, secrets, "userdata", "userData"); err != nil {
		return d, err
	}
	if d.NetworkData, err = pick(srcPath, [3]string{"networkData", "networkDataBase64", "networkDataSecretRef"},
		netData, netDataB64, netSecret, secrets, "networkdata", "networkData"); err != nil {
		return d, err
	}
	if d.UserData == nil && d.NetworkData == nil {
		return d, field.Required(srcPath, "set userData, userDataBase64, secretRef or their networkData counterparts")
	}
	return d, nil
}

// pick resolves one of the three ways to give a piece of data; names are
// the JSON names of the inline, base64 and secret fields.
func pick(path *field.Path, names [3]string, inline, b64, secret string, secrets SecretGetter, keys ...string) ([]byte, error) {
	set := 0
	for _, s := range []string{inline, b64, secret} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		return nil, field.Forbidden(path.Child(names[0]), fmt.Sprintf("give only one of %s, %s and %s", names[0], names[1], names[2]))
	}
	switch {
	case inline != "":
		return []byte(inline), nil
	case b64 != "":
		out, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, field.Invalid(path.Child(names[1]), "…", "not valid base64: "+err.Error())
		}
		return out, nil
	case secret != "":
		if secrets == nil {
			return nil, field.Invalid(path.Child(names[2]), secret, "secrets cannot be read here")
		}
		data, err := secrets(secret)
		if err != nil {
			return nil, field.Invalid(path.Child(names[2], "name"), secret, err.Error())
		}
		for _, k := range keys {
			if v, ok := data[k]; ok {
				return v, nil
			}
		}
		return nil, field.Invalid(path.Child(names[2], "name"), secret,
			fmt.Sprintf("the secret has no key %s", strings.Join(keys, " or ")))
	}
	return nil, nil
}

// Files lays out d as its datasource expects, for vmi.
func Files(vmi *virtv1.VirtualMachineInstance, d Data) (label string, files map[string][]byte, err error) {
	hostname := vmi.Spec.Hostname
	if hostname == "" {
		hostname = vmi.Name
	}
	switch d.Kind {
	case NoCloud:
		files = map[string][]byte{
			"meta-data": []byte(fmt.Sprintf("instance-id: %s.%s\nlocal-hostname: %s\n", vmi.Name, vmi.Namespace, hostname)),
			"user-data": d.UserData,
		}
		if d.NetworkData != nil {
			files["network-config"] = d.NetworkData
		}
		return NoCloudLabel, files, nil
	case ConfigDrive:
		meta, err := json.Marshal(map[string]string{
			"instance_type": "",
			"uuid":          string(vmi.UID),
			"hostname":      hostname,
			"name":          vmi.Name,
		})
		if err != nil {
			return "", nil, err
		}
		files = map[string][]byte{
			"openstack/latest/meta_data.json": meta,
			"openstack/latest/user_data":      d.UserData,
		}
		if d.NetworkData != nil {
			files["openstack/latest/network_data.json"] = d.NetworkData
		}
		return ConfigDriveLabel, files, nil
	}
	return "", nil, fmt.Errorf("unknown cloud-init kind %q", d.Kind)
}

// WriteISO writes an ISO9660 image with Rock Ridge and Joliet names at path,
// replacing any previous one only once the new one is complete.
func WriteISO(path, label string, files map[string][]byte) (retErr error) {
	if label == "" {
		return errors.New("an ISO needs a volume label")
	}
	dir := filepath.Dir(path)
	work, err := os.MkdirTemp(dir, ".iso-work-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	tmp := filepath.Join(work, "image.iso")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer f.Close()
	var size int64 = 64 * 2048
	for _, b := range files {
		size += (int64(len(b))/2048 + 2) * 2048
	}
	tree := filepath.Join(work, "tree")
	// Rock Ridge records carry the workspace modes: keep them readable.
	if err := os.Mkdir(tree, 0o755); err != nil {
		return err
	}
	fs, err := iso9660.Create(file.New(f, false), size, 0, 2048, tree)
	if err != nil {
		return fmt.Errorf("create ISO: %w", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := "/" + name
		if d := filepath.Dir(p); d != "/" {
			if err := fs.Mkdir(d); err != nil {
				return fmt.Errorf("ISO mkdir %s: %w", d, err)
			}
		}
		out, err := fs.OpenFile(p, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("ISO file %s: %w", p, err)
		}
		if _, err := out.Write(files[name]); err != nil {
			return fmt.Errorf("ISO write %s: %w", p, err)
		}
	}
	if err := fs.Finalize(iso9660.FinalizeOptions{RockRidge: true, Joliet: true, VolumeIdentifier: label}); err != nil {
		return fmt.Errorf("finalize ISO: %w", err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
