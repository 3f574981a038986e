package noderuntime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A restarted runtime finds its pod's processes by their pid files: one
// that still runs is adopted (and followed to its end), never started
// again; one that ended is reported with the exit code its wrapper
// recorded, or as unknown; a pid now used by another process is not taken
// for the container.
func TestAdoptFromPidFiles(t *testing.T) {
	root := t.TempDir()
	r := &Runtime{cfg: RuntimeConfig{KubeletRoot: root}}
	w := newPodWorker(r, "0123abcd-0000-0000-0000-000000000000")
	if err := os.MkdirAll(w.dir, 0o700); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	running, err := startProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-running.PID, syscall.SIGKILL) })
	if err := writePidFile(w.pidFile("compute"), running); err != nil {
		t.Fatal(err)
	}
	// "ended": its process is gone and it left an exit record.
	if err := os.WriteFile(w.pidFile("ended"), []byte("999999 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.exitFile("ended"), []byte("3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// "reused": the pid runs, but it is another process (start time).
	self, _, _ := procStat(os.Getpid())
	if err := os.WriteFile(w.pidFile("reused"), pidRecord(&process{PID: os.Getpid(), StartTime: self + 1}), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.ctx = ctx
	w.loadProcesses(nil)

	c := w.containers["compute"]
	if c == nil || c.proc == nil || c.proc.PID != running.PID || c.exit != nil {
		t.Fatalf("running container not adopted: %+v", c)
	}
	if d := time.Since(c.startedAt); d < 0 || d > time.Minute {
		t.Errorf("adopted container started %s ago", d)
	}
	if ps := w.processes(); len(ps) != 1 {
		t.Errorf("%d live processes, want 1", len(ps))
	}
	if c := w.containers["ended"]; c == nil || c.proc != nil || c.exit == nil || *c.exit != (exitRecord{Code: 3}) {
		t.Errorf("ended container: %+v", c)
	}
	if c := w.containers["reused"]; c == nil || c.proc != nil || c.exit == nil || c.exit.Code != unknownExitCode || c.exit.Reason != "ContainerStatusUnknown" {
		t.Errorf("container whose pid was reused: %+v", c)
	}

	// The adopted process ends: the worker hears of it.
	_ = syscall.Kill(running.PID, syscall.SIGKILL)
	select {
	case <-c.proc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the end of an adopted process went unnoticed")
	}
	select {
	case <-w.notify:
	case <-time.After(time.Second):
		t.Error("the worker was not poked")
	}
}

func TestPidFileRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.pid")
	if _, _, ok, err := readPidFile(p); ok || err != nil {
		t.Fatalf("missing pid file: ok=%v err=%v", ok, err)
	}
	if err := writePidFile(p, &process{PID: 42, StartTime: 123456}); err != nil {
		t.Fatal(err)
	}
	pid, st, ok, err := readPidFile(p)
	if pid != 42 || st != 123456 || !ok || err != nil {
		t.Errorf("readPidFile = %d %d %v %v", pid, st, ok, err)
	}
	if err := os.WriteFile(p, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := readPidFile(p); err == nil {
		t.Error("garbage accepted")
	}
}
