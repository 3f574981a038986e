package launcher

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/virtkube/virtkube/internal/domain"
	"github.com/virtkube/virtkube/internal/launcherrpc"
	"github.com/virtkube/virtkube/internal/storage"
	"github.com/virtkube/virtkube/test/containerdisk"
	"github.com/virtkube/virtkube/test/guest"
)

// The seed's testvmi-nocloud2, with the test guest as its containerDisk:
// virt-handler's side of the protocol syncs it, the guest boots, reads its
// cloud-init user data, sees its 2Gi emptyDisk; the pod's end (ctx
// cancelled, as on SIGTERM) powers it off gracefully and Run returns.
func TestLauncherRunsSeedVMI(t *testing.T) {
	disk, err := guest.Disk()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	containerDisks := filepath.Join(dir, "container-disks")
	if err := os.MkdirAll(containerDisks, 0o755); err != nil {
		t.Fatal(err)
	}
	containerdisk.Serve(t, filepath.Join(containerDisks, "containerdisk.sock"), disk)
	vmi := &virtv1.VirtualMachineInstance{}
	if err := yaml.Unmarshal([]byte(`metadata: {name: testvmi-nocloud2, namespace: default, uid: 0a6b2f44-0000-4000-8000-000000000002}
spec:
  terminationGracePeriodSeconds: 30
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
      - {name: containerdisk, disk: {bus: virtio}}
      - {name: emptydisk, disk: {bus: virtio}}
      - {name: cloudinitdisk, disk: {bus: virtio}}
  volumes:
  - {name: containerdisk, containerDisk: {image: test-guest}}
  - {name: emptydisk, emptyDisk: {capacity: 2Gi}}
  - name: cloudinitdisk
    cloudInitNoCloud:
      userData: |-
        #cloud-config
        virtkube-marker: seed-42
`), vmi); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "libvirtd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cfg := Config{
		Name: vmi.Name, Namespace: vmi.Namespace, UID: string(vmi.UID),
		GracePeriod: 60 * time.Second,
		SocketsDir:  filepath.Join(dir, "sockets"),
		Disks:       storage.Dirs{ContainerDisks: containerDisks, Ephemeral: filepath.Join(dir, "ephemeral")},
		Libvirt:     DaemonOptions{Dir: filepath.Join(dir, "libvirt"), PrivateDirs: true, Stderr: logFile},
	}
	podCtx, endPod := context.WithCancel(context.Background())
	defer endPod()
	runErr := make(chan error, 1)
	go func() { runErr <- Run(podCtx, cfg) }()

	// virt-handler's side.
	socket := filepath.Join(cfg.SocketsDir, launcherrpc.SocketName)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var client *launcherrpc.Client
	for client == nil {
		if _, err := os.Stat(socket); err == nil {
			c, err := launcherrpc.Dial(socket)
			if err == nil {
				if _, err := c.Ping(ctx); err == nil {
					client = c
					break
				}
				c.Close()
			}
		}
		select {
		case err := <-runErr:
			t.Fatalf("launcher exited early: %v", err)
		case <-ctx.Done():
			t.Fatal("launcher socket never answered")
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer client.Close()

	wrong := vmi.DeepCopy()
	wrong.UID = "someone-else"
	if err := client.Sync(ctx, &launcherrpc.SyncRequest{VMI: wrong, Emulation: true}); err == nil {
		t.Error("a launcher accepted another VMI")
	}
	if err := client.Sync(ctx, &launcherrpc.SyncRequest{VMI: vmi, Emulation: true}); err != nil {
		body, _ := os.ReadFile(logFile.Name())
		t.Fatalf("sync: %v\nlibvirtd log:\n%s", err, body)
	}
	next, err := client.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := next(); err != nil || st.State != string(StateRunning) {
		t.Fatalf("first watched status = %+v, %v; want Running", st, err)
	}

	console, err := net.Dial("unix", filepath.Join(cfg.SocketsDir, domain.SerialSocket))
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	seen := map[string]bool{}
	want := []string{guest.ReadyMarker, guest.UserMarkerPrefix + "seed-42", fmt.Sprintf("BLOCKDEV vdb %d", 2<<30)}
	sc := bufio.NewScanner(console)
	deadline := time.Now().Add(3 * time.Minute)
	_ = console.SetReadDeadline(deadline)
	for len(seen) < len(want) && sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		for _, w := range want {
			if strings.Contains(line, w) {
				seen[w] = true
			}
		}
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("console never showed %q", w)
		}
	}

	// The console is also kept in a log file for later reading.
	if log, err := os.ReadFile(filepath.Join(cfg.SocketsDir, domain.SerialLog)); err != nil || !strings.Contains(string(log), guest.ReadyMarker) {
		t.Errorf("serial log lacks the ready marker: %v", err)
	}

	// The pod ends: the guest powers off by itself, Run returns cleanly.
	endPod()
	poweredOff := false
	for !poweredOff && sc.Scan() {
		poweredOff = strings.Contains(sc.Text(), guest.PoweroffMarker)
	}
	if !poweredOff {
		t.Error("the guest did not power off on the pod's end (no GUEST-POWEROFF on the console)")
	}
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run after SIGTERM: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("launcher did not stop within 2m of SIGTERM")
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("launcher socket left behind: %v", err)
	}
}
