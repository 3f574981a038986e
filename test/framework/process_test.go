package framework

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Stop asks with SIGTERM, returns how the process exited, and kills what
// it left in its group; both output streams are in the log.
func TestProcessStop(t *testing.T) {
	dir := t.TempDir()
	// The shell exits 0 on SIGTERM and leaves a sleep behind in its group,
	// whose pid it writes down.
	script := `echo out; echo err >&2; trap 'exit 0' TERM; sleep 60 & echo $! > ` + filepath.Join(dir, "pid") + `; echo started; wait`
	p, err := StartProcess("sh", exec.Command("sh", "-c", script), filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, 10*time.Millisecond, func(context.Context) (bool, string) {
		return strings.Contains(p.Log(), "started"), "log: " + p.Log()
	})
	if p.Exited() || p.Err() != nil {
		t.Fatalf("before Stop: exited %v, error %v; want it running", p.Exited(), p.Err())
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v, want a clean exit", err)
	}
	if !p.Exited() {
		t.Error("Exited is false after Stop")
	}
	if got, want := p.Log(), "out\nerr\nstarted\n"; got != want {
		t.Errorf("Log = %q, want %q", got, want)
	}
	if got := p.LogTail(2); got != "err\nstarted" {
		t.Errorf("LogTail(2) = %q, want the last two lines", got)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	sleep, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, 10*time.Millisecond, func(context.Context) (bool, string) {
		// Gone, or a zombie nobody reaped yet: either way no longer running.
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sleep))
		fields := strings.Fields(string(stat))
		return err != nil || (len(fields) > 2 && fields[2] == "Z"), fmt.Sprintf("the sleep left in the group (pid %d) still runs: %s", sleep, stat)
	})
	// Once it has ended, Stop only says how.
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("Stop again: %v", err)
	}
}

// A process that ignores SIGTERM is killed after the timeout, and Stop
// says so, naming it.
func TestProcessStopTimeout(t *testing.T) {
	dir := t.TempDir()
	script := `trap '' TERM; echo started; sleep 60`
	p, err := StartProcess("stubborn", exec.Command("sh", "-c", script), filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, 10*time.Millisecond, func(context.Context) (bool, string) {
		return strings.Contains(p.Log(), "started"), "log: " + p.Log()
	})
	err = p.Stop(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "stubborn did not stop within 200ms after SIGTERM") {
		t.Errorf("Stop = %v, want it to say the process did not stop", err)
	}
	var exit *exec.ExitError
	if !p.Exited() || !errors.As(p.Err(), &exit) {
		t.Errorf("after Stop: exited %v, error %v; want killed", p.Exited(), p.Err())
	}
}

// Without a log file the command keeps its own output, and Log says there
// is none.
func TestProcessNoLog(t *testing.T) {
	var out strings.Builder
	cmd := exec.Command("echo", "hello")
	cmd.Stdout = &out
	p, err := StartProcess("echo", cmd, "")
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if p.Err() != nil || out.String() != "hello\n" {
		t.Errorf("echo: %v, output %q; want hello", p.Err(), out.String())
	}
	if got := p.LogTail(5); !strings.Contains(got, "echo has no log file") {
		t.Errorf("LogTail = %q, want it to say there is no log", got)
	}
	if _, err := StartProcess("missing", exec.Command(filepath.Join(t.TempDir(), "missing")), ""); err == nil || !strings.Contains(err.Error(), "start missing") {
		t.Errorf("StartProcess of a missing binary: %v, want an error naming it", err)
	}
}
