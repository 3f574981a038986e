package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/domain"
	"github.com/virtkube/virtkube/test/framework"
	"github.com/virtkube/virtkube/test/guest"
)

// The seed's "Create a Windows virtual machine" section, as far as this
// machine allows: an installer ISO uploaded with `virtctl image-upload` into
// a hostpath claim, the seed's win10 VM (kubevirt.io/v1alpha3, q35, 4 cores,
// 16G, e1000 masquerade NIC, an empty 50Gi hostDisk DiskOrCreate at bootOrder
// 1, the ISO as a SATA CD-ROM at bootOrder 2, a containerDisk as a second
// SATA CD-ROM) and `virtctl start win10`. The ISO is the test guest's bootable
// CD (ISOLINUX, the test guest's kernel and initramfs), not Windows: SeaBIOS
// finds no boot sector on the new hostDisk, boots the CD, and the guest
// prints its markers on the serial console; VNC answers; `virtctl stop`
// removes the VMI.
func TestSeedWindowsVMBootsFromUploadedISO(t *testing.T) {
	s := shared
	c := cdiClient(t, s)
	ns := s.Namespace(t)
	image := testGuestImage(t, s, "win10") // the seed's virtio-container-disk stand-in
	iso, err := guest.ISO()
	if err != nil {
		t.Fatal(err)
	}

	// The seed's feature gates (HardDisk, its spelling of HostDisk, and
	// DataVolumes).
	gates, err := os.ReadFile("../testdata/seed/kubevirt-feature-gates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, string(gates), "apply", "-f", "-")

	// The seed's upload, with the claim name its VM refers to (the seed
	// uploads to iso-win10 but its VM mounts iso-win10-3) and the proxy
	// URL it would read from `kubectl -n cdi get svc`, here CDIConfig's.
	config := &cdiv1.CDIConfig{}
	if err := c.Get(ctxT(t, time.Minute), client.ObjectKey{Name: "config"}, config); err != nil {
		t.Fatal(err)
	}
	if config.Status.UploadProxyURL == nil {
		t.Fatal("CDIConfig config has no status.uploadProxyURL")
	}
	stdout, stderr, code := virtctl(t, s, "virtctl", "image-upload", "-n", ns,
		"--image-path="+iso,
		"--storage-class", "hostpath-csi",
		"--pvc-name=iso-win10-3",
		"--pvc-size=10Gi",
		"--uploadproxy-url="+*config.Status.UploadProxyURL,
		"--insecure",
		"--wait-secs=240")
	if code != 0 || !strings.Contains(stdout, "PersistentVolumeClaim "+ns+"/iso-win10-3 created") ||
		!strings.Contains(stdout, "Uploading "+filepath.Base(iso)+" completed successfully") {
		t.Fatalf("virtctl image-upload: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	// The seed's manifest with what cannot work here replaced: the
	// containerDisk image (Docker Hub is out of reach; the test guest's
	// disk from the loopback registry takes its place as the second CD-ROM)
	// and the hostDisk's path (the node is this machine, whose /data is not
	// the test's: a directory of the test's instead, which does not exist
	// yet, so DiskOrCreate must make it as well as the file).
	// Cores, memory, machine type, NIC model, buses and boot orders are the
	// seed's; memory shrinks only if the node cannot hold 16G.
	seed, err := os.ReadFile("../testdata/seed/win10.yaml")
	if err != nil {
		t.Fatal(err)
	}
	hostDisk := filepath.Join(t.TempDir(), "data", "disk.img")
	manifest := string(seed)
	for _, r := range []struct{ old, new string }{
		{"path: /data/disk.img", "path: " + hostDisk},
		{"image: kubevirt/virtio-container-disk", "image: " + image},
	} {
		if strings.Count(manifest, r.old) != 1 {
			t.Fatalf("seed win10.yaml does not have %q once", r.old)
		}
		manifest = strings.Replace(manifest, r.old, r.new, 1)
	}
	memory := resource.MustParse("16G")
	if !nodeHolds(t, s, resource.MustParse("17Gi")) {
		t.Log("the node has less than 17Gi of memory: the VM asks for 1Gi instead of the seed's 16G")
		memory = resource.MustParse("1Gi")
		manifest = strings.Replace(manifest, "memory: 16G", "memory: 1Gi", 1)
	}
	// virt-api reads the gates through an informer: the first apply may
	// come before it has seen them.
	framework.Eventually(t, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		_, errOut, err := s.Kubectl(ctx, strings.NewReader(manifest), "apply", "-n", ns, "-f", "-")
		return err == nil, errOut
	})

	started := time.Now()
	out, errOut, code := virtctl(t, s, "virtctl", "start", "win10", "-n", ns)
	if code != 0 || out != "VM win10 was scheduled to start\n" {
		t.Fatalf("virtctl start win10: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	v := waitVMIFor(t, c, ns, "win10", 5*time.Minute, "Running", func(v *virtv1.VirtualMachineInstance) bool {
		return v.Status.Phase == virtv1.Running
	})
	waitVM(t, c, ns, "win10", time.Minute, "Running and ready", func(vm *virtv1.VirtualMachine) bool {
		return vm.Status.PrintableStatus == virtv1.VirtualMachineStatusRunning && vm.Status.Ready
	})

	// The serial console from the start: ISOLINUX's banner, then the
	// guest's markers. BOOTED-FROM iso comes from the CD's bootloader
	// config, so the guest booted the ISO, not the hostDisk (bootOrder 1,
	// no boot sector) nor the containerDisk CD-ROM (no El Torito record).
	// The cloud kernel has no SATA driver: of the three disks it sees the
	// virtio hostDisk only, at the seed's 50Gi.
	serial := filepath.Join(launcherSockets(t, s, v), "serial0.log")
	wantDisk := fmt.Sprintf("BLOCKDEV vda %d", int64(50)<<30)
	var console string
	framework.Eventually(t, 5*time.Minute, 200*time.Millisecond, func(context.Context) (bool, string) {
		b, _ := os.ReadFile(serial)
		console = strings.ReplaceAll(string(b), "\r", "")
		return strings.Contains(console, guest.ReadyMarker) && strings.Contains(console, wantDisk),
			"the guest has not printed " + guest.ReadyMarker + " and " + wantDisk + ":\n" + lastLines(console, 10)
	})
	t.Logf("virtctl start win10 to %s on the serial console: %s", guest.ReadyMarker, time.Since(started).Round(10*time.Millisecond))
	for _, want := range []string{guest.BootedFromISO, "NO-CLOUD-INIT"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(console) {
			t.Errorf("serial console has no line %q:\n%s", want, console)
		}
	}
	if !strings.Contains(console, "ISOLINUX ") {
		t.Errorf("serial console has no ISOLINUX banner:\n%s", console)
	}

	// The hostDisk was made on the node: sparse, of the seed's capacity.
	var st syscall.Stat_t
	if err := syscall.Stat(hostDisk, &st); err != nil {
		t.Fatalf("hostDisk on the node: %v", err)
	}
	if st.Size != 50<<30 || st.Blocks*512 > 64<<20 {
		t.Errorf("hostDisk %s: %d bytes, %d allocated; want a sparse 50Gi file", hostDisk, st.Size, st.Blocks*512)
	}

	// The domain QEMU runs has what the seed asked for: q35, 4 vCPUs, the
	// memory, an e1000 NIC, two SATA CD-ROMs (ide-cd on q35's AHCI) and the
	// boot order: the hostDisk first, the ISO second.
	qemu := qemuCommandLine(t, v)
	mib := (memory.Value() + 1<<20 - 1) >> 20
	for _, want := range []string{`-machine pc-q35`, `"driver":"e1000"`, `-smp 4,`, `cores=4`, fmt.Sprintf(" -m %d ", mib)} {
		if !strings.Contains(qemu, want) {
			t.Errorf("QEMU command line has no %s:\n%s", want, qemu)
		}
	}
	if n := strings.Count(qemu, `"driver":"ide-cd"`); n != 2 {
		t.Errorf("QEMU command line has %d SATA CD-ROMs (ide-cd), want 2:\n%s", n, qemu)
	}
	isoDrive := regexp.MustCompile(`"driver":"ide-cd",[^}]*"id":"ua-cdromiso"[^}]*"bootindex":2`)
	diskDrive := regexp.MustCompile(`"driver":"virtio-blk-pci",[^}]*"id":"ua-harddrive"[^}]*"bootindex":1`)
	if !isoDrive.MatchString(qemu) || !diskDrive.MatchString(qemu) {
		t.Errorf("QEMU command line: want the harddrive at bootindex 1 and the ISO CD-ROM at bootindex 2:\n%s", qemu)
	}

	// The serial console through `virtctl console`: the guest's shell
	// answers (it computes the number, so it is not an echo).
	consoleAnswers(t, s, ns, "win10")

	// VNC, as the seed's noVNC page would reach it: `virtctl vnc
	// --proxy-only` prints a port that speaks RFB.
	vncBanner(t, s, ns, "win10")

	out, errOut, code = virtctl(t, s, "virtctl", "stop", "win10", "-n", ns)
	if code != 0 || out != "VM win10 was scheduled to stop\n" {
		t.Fatalf("virtctl stop win10: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	waitVM(t, c, ns, "win10", 3*time.Minute, "Stopped with no VMI", func(vm *virtv1.VirtualMachine) bool {
		return vm.Status.PrintableStatus == virtv1.VirtualMachineStatusStopped && !vm.Status.Created
	})
}

// nodeHolds reports whether the server's node has at least mem allocatable.
func nodeHolds(t *testing.T, s *framework.Server, mem resource.Quantity) bool {
	t.Helper()
	nodes, err := s.Client.CoreV1().Nodes().List(ctxT(t, time.Minute), metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("list nodes: %v (%d)", err, len(nodes.Items))
	}
	have := nodes.Items[0].Status.Allocatable.Memory()
	return have.Cmp(mem) >= 0
}

// qemuCommandLine is the command line of the QEMU process running v's
// domain.
func qemuCommandLine(t *testing.T, v *virtv1.VirtualMachineInstance) string {
	t.Helper()
	name := "guest=" + domain.Name(v) + ","
	for _, p := range processesWith(name) {
		if strings.Contains(p, "qemu-system") {
			return p
		}
	}
	t.Fatalf("no QEMU process with -name %s", name)
	return ""
}

// consoleAnswers runs `virtctl console` with a pipe for a terminal and
// waits for the guest's shell to evaluate a command typed into it.
func consoleAnswers(t *testing.T, s *framework.Server, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, virtctlPath(t), "--kubeconfig", s.Kubeconfig, "console", name, "-n", ns)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		cancel()
		_ = cmd.Wait()
	}()
	lines := consoleLines(stdoutPipe)
	answered := false
	for deadline := time.Now().Add(2 * time.Minute); !answered && time.Now().Before(deadline); {
		if _, err := io.WriteString(stdin, "echo WIN10-CONSOLE-$((6*7))\r"); err != nil {
			t.Fatalf("write to virtctl console: %v; stderr: %s", err, stderr.String())
		}
		answered = waitLine(lines, "WIN10-CONSOLE-42", 5*time.Second)
	}
	if !answered {
		t.Fatalf("the guest's shell did not answer through virtctl console; stderr: %s", stderr.String())
	}
}

// vncBanner runs `virtctl vnc --proxy-only`, connects to the port it prints
// and reads the server's RFB protocol version.
func vncBanner(t *testing.T, s *framework.Server, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, virtctlPath(t), "--kubeconfig", s.Kubeconfig, "vnc", name, "-n", ns, "--proxy-only")
	stdoutPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdoutPipe).ReadString('\n')
	if err != nil {
		t.Fatalf("virtctl vnc --proxy-only printed no port: %v; stderr: %s", err, stderr.String())
	}
	var printed struct {
		Port int `json:"port"`
	}
	if err := json.Unmarshal([]byte(line), &printed); err != nil || printed.Port == 0 {
		t.Fatalf("virtctl vnc --proxy-only printed %q, want {\"port\": N}", line)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(printed.Port)), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	banner := make([]byte, 12)
	if _, err := io.ReadFull(conn, banner); err != nil {
		t.Fatalf("read the RFB banner through virtctl vnc: %v; stderr: %s", err, stderr.String())
	}
	if !regexp.MustCompile(`^RFB \d{3}\.\d{3}\n$`).Match(banner) {
		t.Errorf("VNC banner %q, want RFB xxx.yyy", banner)
	}
}
