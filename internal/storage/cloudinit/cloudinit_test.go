package cloudinit

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func decode(t *testing.T, volumes string) *virtv1.VirtualMachineInstance {
	t.Helper()
	vmi := &virtv1.VirtualMachineInstance{}
	doc := "metadata: {name: testvmi-nocloud2, namespace: default, uid: 0a6b2f44-0000-4000-8000-000000000001}\nspec:\n  domain: {devices: {}}\n  volumes:\n" + volumes
	if err := yaml.UnmarshalStrict([]byte(doc), vmi); err != nil {
		t.Fatal(err)
	}
	return vmi
}

// readISO opens an image and returns its label and the content of paths.
func readISO(t *testing.T, path string, paths ...string) (string, map[string]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, _ := f.Stat()
	fs, err := iso9660.Read(file.New(f, true), info.Size(), 0, 2048)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range paths {
		r, err := fs.OpenFile(p, os.O_RDONLY)
		if err != nil {
			t.Fatalf("open %s in ISO: %v", p, err)
		}
		b, _ := io.ReadAll(r)
		out[p] = string(b)
	}
	return fs.Label(), out
}

func TestNoCloudISOForSeedVMI(t *testing.T) {
	vmi := decode(t, `  - name: cloudinitdisk
    cloudInitNoCloud:
      userData: |-
        #cloud-config
        password: fedora
        chpasswd: { expire: False }
`)
	i, vol := Find(vmi)
	if vol == nil {
		t.Fatal("no cloud-init volume found")
	}
	data, err := Resolve(vmi, i, nil)
	if err != nil {
		t.Fatal(err)
	}
	label, files, err := Files(vmi, data)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "noCloud.iso")
	if err := WriteISO(path, label, files); err != nil {
		t.Fatal(err)
	}
	gotLabel, got := readISO(t, path, "/user-data", "/meta-data")
	if strings.TrimRight(gotLabel, " \x00") != "cidata" {
		t.Errorf("label = %q, want cidata", gotLabel)
	}
	if !strings.Contains(got["/user-data"], "password: fedora") {
		t.Errorf("user-data = %q", got["/user-data"])
	}
	if got["/meta-data"] != "instance-id: testvmi-nocloud2.default\nlocal-hostname: testvmi-nocloud2\n" {
		t.Errorf("meta-data = %q", got["/meta-data"])
	}
	// Guests find files by their Rock Ridge (or Joliet) names, not by the
	// 8.3 ISO names: the long name must be in the image as written.
	raw, _ := os.ReadFile(path)
	if !bytes.Contains(raw, []byte("NM")) || !bytes.Contains(raw, []byte("user-data")) {
		t.Error("no Rock Ridge name for user-data in the image")
	}
}

func TestConfigDriveISO(t *testing.T) {
	vmi := decode(t, `  - name: cloudinitdisk
    cloudInitConfigDrive:
      userDataBase64: I2Nsb3VkLWNvbmZpZwp2aXJ0a3ViZS1tYXJrZXI6IGNkLTQy
      networkData: "version: 2"
`)
	i, _ := Find(vmi)
	data, err := Resolve(vmi, i, nil)
	if err != nil {
		t.Fatal(err)
	}
	label, files, err := Files(vmi, data)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "configdrive.iso")
	if err := WriteISO(path, label, files); err != nil {
		t.Fatal(err)
	}
	gotLabel, got := readISO(t, path, "/openstack/latest/user_data", "/openstack/latest/meta_data.json", "/openstack/latest/network_data.json")
	if strings.TrimRight(gotLabel, " \x00") != "config-2" {
		t.Errorf("label = %q, want config-2", gotLabel)
	}
	if got["/openstack/latest/user_data"] != "#cloud-config\nvirtkube-marker: cd-42" {
		t.Errorf("user_data = %q", got["/openstack/latest/user_data"])
	}
	if !strings.Contains(got["/openstack/latest/meta_data.json"], `"uuid":"0a6b2f44-0000-4000-8000-000000000001"`) {
		t.Errorf("meta_data.json = %s", got["/openstack/latest/meta_data.json"])
	}
	if got["/openstack/latest/network_data.json"] != "version: 2" {
		t.Errorf("network_data.json = %q", got["/openstack/latest/network_data.json"])
	}
}

func TestResolveFromSecretAndErrors(t *testing.T) {
	secrets := func(name string) (map[string][]byte, error) {
		if name == "my-secret" {
			return map[string][]byte{"userdata": []byte("#cloud-config\nfrom: secret")}, nil
		}
		return nil, os.ErrNotExist
	}
	vmi := decode(t, "  - {name: ci, cloudInitNoCloud: {secretRef: {name: my-secret}}}\n")
	d, err := Resolve(vmi, 0, secrets)
	if err != nil || string(d.UserData) != "#cloud-config\nfrom: secret" {
		t.Errorf("secret user data = %q, %v", d.UserData, err)
	}
	for _, tc := range []struct{ volume, want string }{
		{"  - {name: ci, cloudInitNoCloud: {userDataBase64: '***'}}\n", "spec.volumes[0].cloudInitNoCloud.userDataBase64"},
		{"  - {name: ci, cloudInitNoCloud: {userData: a, userDataBase64: YQ==}}\n", "spec.volumes[0].cloudInitNoCloud.userData: Forbidden"},
		{"  - {name: ci, cloudInitNoCloud: {secretRef: {name: missing}}}\n", "spec.volumes[0].cloudInitNoCloud.secretRef.name"},
		{"  - {name: ci, cloudInitNoCloud: {}}\n", "spec.volumes[0].cloudInitNoCloud: Required"},
	} {
		_, err := Resolve(decode(t, tc.volume), 0, secrets)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", strings.TrimSpace(tc.volume), err, tc.want)
		}
	}
}

// Secrets mounted as the launcher pod mounts them are read by name, keys
// as files; kubelet's ..data entries are no keys.
func TestMountedSecrets(t *testing.T) {
	vmi := decode(t, "  - {name: ci, cloudInitNoCloud: {secretRef: {name: user}, networkDataSecretRef: {name: net}}}\n")
	root := t.TempDir()
	for p, body := range map[string]string{
		"ci/userdata/userdata":              "#cloud-config\nfrom: secret\n",
		"ci/userdata/..2026_11_26/userdata": "old",
		"ci/networkdata/networkData":        "version: 2\n",
	} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("..2026_11_26", filepath.Join(root, "ci/userdata/..data")); err != nil {
		t.Fatal(err)
	}
	d, err := Resolve(vmi, 0, MountedSecrets(vmi, root))
	if err != nil {
		t.Fatal(err)
	}
	if string(d.UserData) != "#cloud-config\nfrom: secret\n" || string(d.NetworkData) != "version: 2\n" {
		t.Errorf("resolved %q / %q", d.UserData, d.NetworkData)
	}
	if _, err := MountedSecrets(vmi, root)("other"); err == nil || !strings.Contains(err.Error(), `secret "other" is not mounted`) {
		t.Errorf("an unmounted secret: %v", err)
	}
	if got := SecretRefs(&vmi.Spec.Volumes[0]); len(got) != 2 || got[UserDataSecret] != "user" || got[NetworkDataSecret] != "net" {
		t.Errorf("SecretRefs = %v", got)
	}
}
