package noderuntime

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// someBlockDevice is a block device node of this machine, or "".
func someBlockDevice() string {
	for _, p := range []string{"/dev/loop0", "/dev/vda", "/dev/sda", "/dev/nvme0n1"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
			return p
		}
	}
	return ""
}

func TestBlockDevice(t *testing.T) {
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	local := func(p string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv1"}, Spec: corev1.PersistentVolumeSpec{
			VolumeMode: ptr.To(corev1.PersistentVolumeBlock), PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: p}}}}
	}
	hostPath := func(p string, typ corev1.HostPathType) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv1"}, Spec: corev1.PersistentVolumeSpec{
			VolumeMode: ptr.To(corev1.PersistentVolumeBlock), PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p, Type: &typ}}}}
	}
	type blockCase struct {
		name    string
		pv      *corev1.PersistentVolume
		wantErr string
	}
	tests := []blockCase{
		{"local file", local(file), "local path " + file + " is not a block device"},
		{"local char device", local("/dev/null"), "/dev/null is not a block device"},
		{"local missing", local("/dev/virtkube-no-such-disk"), "no such file"},
		{"hostPath not a block device", hostPath("/dev/null", corev1.HostPathBlockDev), "hostPath type check failed: /dev/null is not a block device"},
		{"hostPath of a directory type", hostPath("/dev/null", corev1.HostPathDirectoryOrCreate), "hostPath type DirectoryOrCreate cannot be mapped as a block device; use type BlockDevice"},
	}
	if dev := someBlockDevice(); dev != "" {
		tests = append(tests, blockCase{"local block device", local(dev), ""}, blockCase{"hostPath BlockDevice", hostPath(dev, corev1.HostPathBlockDev), ""})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := volumePath(tt.pv, "n1")
			if err != nil {
				t.Fatal(err)
			}
			err = blockDevice(tt.pv, p)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("blockDevice: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("blockDevice = %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckVolumeUse(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name:          "compute",
		VolumeMounts:  []corev1.VolumeMount{{Name: "fs", MountPath: "/fs"}},
		VolumeDevices: []corev1.VolumeDevice{{Name: "blk", DevicePath: "/dev/blk"}},
	}}}}
	for _, tt := range []struct {
		volume  string
		block   bool
		wantErr string
	}{
		{"fs", false, ""},
		{"blk", true, ""},
		{"fs", true, "volume fs has volumeMode Block, but is specified in volumeMounts"},
		{"blk", false, "volume blk has volumeMode Filesystem, but is specified in volumeDevices"},
	} {
		err := checkVolumeUse(pod, tt.volume, tt.block)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
			t.Errorf("checkVolumeUse(%s, block=%v) = %v, want %q", tt.volume, tt.block, err, tt.wantErr)
		}
	}
}

func TestDevSubmounts(t *testing.T) {
	mountinfo := `44 43 254:0 / / rw,relatime - ext4 /dev/vda rw
59 44 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,mode=755
60 59 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
61 60 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw
62 59 0:24 / /dev/pts rw,relatime - devpts devpts rw
63 59 0:25 / /dev/hugepages rw,relatime - hugetlbfs hugetlbfs rw
64 63 0:26 / /dev/hugepages/inner rw,relatime - tmpfs tmpfs rw
65 44 0:27 / /devices rw,relatime - tmpfs tmpfs rw
66 59 0:28 / /dev/my\040disk rw,relatime - tmpfs tmpfs rw
`
	want := []string{"hugepages", "my disk", "pts", "shm"}
	if got := devSubmounts(mountinfo); !slices.Equal(got, want) {
		t.Errorf("devSubmounts = %q, want %q", got, want)
	}
}

// A container's volumeDevices become a private /dev with each claim's device
// at its devicePath; paths outside /dev and volumes that are no block claim
// are refused, naming the container and the device.
func TestDevices(t *testing.T) {
	w := testWorker(t)
	w.claimDevices = map[string]string{"data": "/dev/loop5"}
	c := &container{name: "compute", spec: &corev1.Container{Name: "compute",
		VolumeDevices: []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/data"}}}}
	d, err := w.devices(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/kr/pods/0123abcd-0000-0000-0000-000000000000/containers/compute/dev"; d.Stage != want {
		t.Errorf("stage = %s, want %s", d.Stage, want)
	}
	if want := []bindMount{{Source: "/dev/loop5", Target: "/dev/data"}}; !slices.Equal(d.Devices, want) {
		t.Errorf("devices = %+v, want %+v", d.Devices, want)
	}
	if d, err := w.devices(&container{name: "c", spec: &corev1.Container{Name: "c"}}); d != nil || err != nil {
		t.Errorf("a container without volumeDevices: %+v, %v; want no private /dev", d, err)
	}
	for _, bad := range []struct {
		vd   corev1.VolumeDevice
		want string
	}{
		{corev1.VolumeDevice{Name: "other", DevicePath: "/dev/other"}, `container c: volume device /dev/other: no bound persistentVolumeClaim volume "other" in volumeMode Block`},
		{corev1.VolumeDevice{Name: "data", DevicePath: "/var/data"}, `container c: volume device data: devicePath "/var/data" must be a path under /dev`},
		{corev1.VolumeDevice{Name: "data", DevicePath: "/dev/../etc/x"}, `devicePath "/dev/../etc/x" must be a path under /dev`},
		{corev1.VolumeDevice{Name: "data", DevicePath: "/dev"}, `devicePath "/dev" must be a path under /dev`},
		{corev1.VolumeDevice{Name: "data", DevicePath: "dev/data"}, `devicePath "dev/data" must be a path under /dev`},
	} {
		_, err := w.devices(&container{name: "c", spec: &corev1.Container{Name: "c", VolumeDevices: []corev1.VolumeDevice{bad.vd}}})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("devices(%+v) = %v, want an error with %q", bad.vd, err, bad.want)
		}
	}
}

// The private /dev really works: as root, a loop device over a file is seen
// at its devicePath inside the container, with the host's /dev entries and
// submounts still there; the host's /dev gets nothing.
func TestPrivateDevRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount namespaces and loop devices")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, append([]byte("marker-42"), make([]byte, 1<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })

	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	name := "virtkube-test-" + filepath.Base(dir)
	dev := &privateDev{
		Stage:     filepath.Join(dir, "stage"),
		Submounts: devSubmounts(string(mountinfo)),
		Devices: []bindMount{
			{Source: loop, Target: "/dev/" + name},
			{Source: loop, Target: "/dev/" + name + "-dir/disk"},
		},
	}
	if err := os.MkdirAll(dev.Stage, 0o700); err != nil {
		t.Fatal(err)
	}
	check := `set -e
test -b /dev/` + name + `
test "$(head -c 9 /dev/` + name + `)" = marker-42
test "$(head -c 9 /dev/` + name + `-dir/disk)" = marker-42
test -c /dev/null && echo ok >/dev/null
test -d /dev/pts
echo inside-ok`
	exitFile := filepath.Join(dir, "c.exit")
	cmd := exec.Command("/bin/sh", "-c", containerScript(nil, dev, nil, exitFile), "/bin/sh", "-c", check)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	got, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "inside-ok") {
		t.Fatalf("container: %v\n%s", err, got)
	}
	for _, p := range []string{"/dev/" + name, "/dev/" + name + "-dir"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was made on the host", p)
		}
	}
	if entries, err := os.ReadDir(dev.Stage); err != nil || len(entries) != 0 {
		t.Errorf("stage on the host: %v, %v; want an empty directory", entries, err)
	}
}
