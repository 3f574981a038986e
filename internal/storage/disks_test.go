package storage

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/virtkube/virtkube/internal/containerdisk"
)

func vmiWith(t *testing.T, volumes string) *virtv1.VirtualMachineInstance {
	t.Helper()
	vmi := &virtv1.VirtualMachineInstance{}
	doc := "metadata: {name: v, namespace: ns}\nspec:\n  domain: {devices: {}}\n  volumes:\n" + volumes
	if err := yaml.Unmarshal([]byte(doc), vmi); err != nil {
		t.Fatal(err)
	}
	return vmi
}

func virtualSize(t *testing.T, path string) (string, int64) {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info.Format, info.VirtualSize
}

func TestPrepareMakesEveryKindOfDisk(t *testing.T) {
	dir := t.TempDir()
	dirs := Dirs{ContainerDisks: filepath.Join(dir, "cd"), Ephemeral: filepath.Join(dir, "eph")}
	// The containerDisk's container serves its image's disk.
	base := filepath.Join(dir, "image", "disk", "disk.img")
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dirs.ContainerDisks, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o444); err != nil {
		t.Fatal(err)
	}
	serving, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	go containerdisk.Serve(serving, containerdisk.SocketPath(dirs.ContainerDisks, "root"), base, nil)
	hostPath := filepath.Join(dir, "host", "disk.img")
	vmi := vmiWith(t, `  - {name: root, containerDisk: {image: x}}
  - {name: scratch, emptyDisk: {capacity: 2Gi}}
  - {name: data, hostDisk: {path: `+hostPath+`, type: DiskOrCreate, capacity: 1Gi}}
  - {name: ci, cloudInitNoCloud: {userData: "#cloud-config"}}
`)
	disks, err := Prepare(context.Background(), vmi, dirs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f, size := virtualSize(t, disks["root"].Path); f != "qcow2" || size != 1<<20 {
		t.Errorf("containerDisk overlay = %s of %d bytes, want qcow2 of 1MiB", f, size)
	}
	if f, size := virtualSize(t, disks["scratch"].Path); f != "qcow2" || size != 2<<30 {
		t.Errorf("emptyDisk = %s of %d bytes, want qcow2 of 2GiB", f, size)
	}
	info, err := os.Stat(hostPath)
	if err != nil || info.Size() != 1<<30 {
		t.Fatalf("hostDisk DiskOrCreate: %v, size %d; want a 1GiB file", err, info.Size())
	}
	if disks["ci"].Format != "raw" || !disks["ci"].ReadOnly {
		t.Errorf("cloud-init disk = %+v, want a read-only raw ISO", disks["ci"])
	}
	// The guest never writes into the image: the base is untouched and the
	// overlay points at it.
	if info, _ := os.Stat(base); info.Mode().Perm() != 0o444 {
		t.Errorf("base image mode changed to %v", info.Mode())
	}
	// A second Prepare (a launcher restart) keeps what exists.
	if err := os.WriteFile(disks["scratch"].Path+".marker", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := Prepare(context.Background(), vmi, dirs, nil)
	if err != nil || again["scratch"] != disks["scratch"] {
		t.Errorf("second Prepare: %v, %+v", err, again["scratch"])
	}
}

func TestPrepareErrorsNameTheField(t *testing.T) {
	dirs := Dirs{ContainerDisks: t.TempDir(), Ephemeral: t.TempDir()}
	for _, tc := range []struct{ volume, want string }{
		{"  - {name: d, hostDisk: {path: /nonexistent/virtkube/disk.img, type: Disk}}\n", "spec.volumes[0].hostDisk.path"},
		{"  - {name: d, hostDisk: {path: relative.img, type: DiskOrCreate, capacity: 1Gi}}\n", "spec.volumes[0].hostDisk.path"},
		{"  - {name: d, hostDisk: {path: " + t.TempDir() + "/new.img, type: DiskOrCreate}}\n", "spec.volumes[0].hostDisk.capacity"},
		{"  - {name: d, configMap: {name: c}}\n", `spec.volumes[0]: Unsupported value: "configMap"`},
		{"  - {name: d, ephemeral: {}}\n", "spec.volumes[0].ephemeral.persistentVolumeClaim: Required value"},
		{"  - {name: d, containerDisk: {image: nothing-here}}\n", "containerDisk d (nothing-here): containerDisk socket " + dirs.ContainerDisks + "/d.sock"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := Prepare(ctx, vmiWith(t, tc.volume), dirs, nil)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", strings.TrimSpace(tc.volume), err, tc.want)
		}
	}
}
