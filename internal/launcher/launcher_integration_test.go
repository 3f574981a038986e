package launcher

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/virtkube/virtkube/internal/domain"
	"github.com/virtkube/virtkube/test/guest"
)

// A real libvirtd of the launcher's own, a real QEMU (software emulation,
// as on this machine) and the test guest: the domain starts, the guest
// prints its marker on the serial console socket, and an ACPI shutdown
// stops it by itself within the grace period.
func TestLauncherBootsAndStopsTestGuest(t *testing.T) {
	disk, err := guest.Disk()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	overlay := filepath.Join(dir, "root.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", disk, "-F", "raw", overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	logFile, err := os.Create(filepath.Join(dir, "libvirtd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	daemon, err := StartDaemon(ctx, DaemonOptions{Dir: filepath.Join(dir, "libvirt"), PrivateDirs: true, Stderr: logFile})
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Stop()
	conn, err := daemon.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Disconnect()

	vmi := &virtv1.VirtualMachineInstance{}
	if err := yaml.Unmarshal([]byte(`metadata: {name: boot, namespace: default, uid: 6f1e0000-0000-4000-8000-00000000b007}
spec:
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks: [{name: root, disk: {bus: virtio}}]
  volumes: [{name: root, containerDisk: {image: test-guest}}]
`), vmi); err != nil {
		t.Fatal(err)
	}
	sockets := filepath.Join(dir, "sockets")
	if err := os.MkdirAll(sockets, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := domain.Convert(vmi, domain.Context{
		Emulation:  true,
		Disks:      map[string]domain.DiskSource{"root": {Path: overlay, Format: "qcow2"}},
		SocketsDir: sockets,
	})
	if err != nil {
		t.Fatal(err)
	}
	xml, err := domain.XML(d)
	if err != nil {
		t.Fatal(err)
	}
	drv := NewDriver(conn, domain.Name(vmi))
	begin := time.Now()
	if err := drv.Start(ctx, xml, false); err != nil {
		body, _ := os.ReadFile(logFile.Name())
		t.Fatalf("%v\n%s\nlibvirtd log:\n%s", err, xml, body)
	}
	if st, err := drv.State(ctx); err != nil || st.State != StateRunning {
		t.Fatalf("state after start = %s, %v", st.State, err)
	}

	console, err := net.Dial("unix", filepath.Join(sockets, domain.SerialSocket))
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	lines := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(console)
		for sc.Scan() {
			lines <- strings.TrimRight(sc.Text(), "\r")
		}
		close(lines)
	}()
	waitLine := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("console closed before %q", want)
				}
				if strings.Contains(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q on the console within %s", want, within)
			}
		}
	}
	waitLine(guest.ReadyMarker, 3*time.Minute)
	t.Logf("guest ready %s after domain start", time.Since(begin).Round(time.Millisecond))

	// Pause and resume: libvirt reports the pause as the user's.
	if err := drv.Suspend(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := drv.State(ctx); err != nil || st != (Status{State: StatePaused, PauseReason: PauseUser}) {
		t.Fatalf("state after suspend = %+v, %v; want Paused by User", st, err)
	}
	if err := drv.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := drv.State(ctx); err != nil || st.State != StateRunning {
		t.Fatalf("state after resume = %+v, %v; want Running", st, err)
	}

	stopped, err := StopGracefully(ctx, drv, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !stopped {
		t.Fatal("the guest did not power off on ACPI shutdown within the grace period; it was killed")
	}
	waitLine(guest.PoweroffMarker, 5*time.Second)
	if st, _ := drv.State(ctx); st.State != StateGone {
		t.Errorf("state after shutdown = %s, want Gone (transient domain)", st.State)
	}
	// Nothing of the domain is left running.
	if out, _ := exec.Command("pgrep", "-f", overlay).Output(); len(out) > 0 {
		t.Errorf("processes still use the disk: %s", out)
	}
}
