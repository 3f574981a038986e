package noderuntime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/virtkube/virtkube/internal/atomicfile"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// adoptPoll is how often a process this runtime did not start (it was
// started before a restart) is checked for its end.
const adoptPoll = 500 * time.Millisecond

// process is a container's first process, started here or adopted after a
// restart. A pid alone could name a different process later; the pid and
// its start time together cannot.
type process struct {
	PID       int
	StartTime uint64 // clock ticks after boot, /proc/<pid>/stat field 22
	// Started is when the process started, wall clock.
	Started time.Time

	done chan struct{}
	mu   sync.Mutex
	wait *syscall.WaitStatus // how it ended, when it was our child
}

// Done is closed when the process has ended.
func (p *process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended, without blocking.
func (p *process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitStatus is how our child ended, or nil for an adopted process.
func (p *process) waitStatus() *syscall.WaitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.wait
}

// Signal sends sig to the process if it is still the one started.
func (p *process) Signal(sig syscall.Signal) {
	if alive(p.PID, p.StartTime) {
		_ = syscall.Kill(p.PID, sig)
	}
}

// KillGroup sends SIGKILL to the process's group (the process leads it),
// when the leader is still the one started.
func (p *process) KillGroup() {
	if alive(p.PID, p.StartTime) {
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
	}
}

// startProcess starts cmd and follows it until it ends.
func startProcess(cmd *exec.Cmd) (*process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{PID: cmd.Process.Pid, done: make(chan struct{})}
	st, _, err := procStat(p.PID)
	if err == nil {
		p.StartTime = st
		p.Started = startedAt(st)
	} else {
		p.Started = time.Now()
	}
	go func() {
		err := cmd.Wait()
		var exit *exec.ExitError
		p.mu.Lock()
		if errors.As(err, &exit) {
			if ws, ok := exit.Sys().(syscall.WaitStatus); ok {
				p.wait = &ws
			}
		} else if err == nil {
			ws := syscall.WaitStatus(0)
			p.wait = &ws
		}
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// adoptProcess follows a process started before this runtime did, until
// it ends or ctx is done: it returns nil when pid with that start time no
// longer runs.
func adoptProcess(ctx context.Context, pid int, startTime uint64) *process {
	if !alive(pid, startTime) {
		return nil
	}
	p := &process{PID: pid, StartTime: startTime, Started: startedAt(startTime), done: make(chan struct{})}
	go func() {
		t := time.NewTicker(adoptPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if !alive(pid, startTime) {
				close(p.done)
				return
			}
		}
	}()
	return p
}

// alive reports whether pid runs and is the process that started at
// startTime (not a zombie, not a later process with the same pid).
func alive(pid int, startTime uint64) bool {
	st, state, err := procStat(pid)
	return err == nil && st == startTime && state != 'Z' && state != 'X'
}

// procStat reads the start time and state of pid from /proc/<pid>/stat.
func procStat(pid int) (startTime uint64, state byte, err error) {
	body, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	return parseStat(string(body))
}

// parseStat takes state (field 3) and starttime (field 22) from a
// /proc/<pid>/stat line. The command (field 2) may hold spaces and
// parentheses, so fields are counted from its last ')'.
func parseStat(line string) (startTime uint64, state byte, err error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed stat %q", line)
	}
	fields := strings.Fields(line[i+1:])
	if len(fields) < 20 || len(fields[0]) != 1 {
		return 0, 0, fmt.Errorf("malformed stat %q", line)
	}
	startTime, err = strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("malformed stat %q: %w", line, err)
	}
	return startTime, fields[0][0], nil
}

var (
	bootOnce sync.Once
	bootTime time.Time
)

// startedAt turns a start time in clock ticks after boot into wall time.
func startedAt(ticks uint64) time.Time {
	bootOnce.Do(func() {
		f, err := os.Open("/proc/stat")
		if err != nil {
			return
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			if v, ok := strings.CutPrefix(s.Text(), "btime "); ok {
				if sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					bootTime = time.Unix(sec, 0)
				}
			}
		}
	})
	if bootTime.IsZero() {
		return time.Now()
	}
	return bootTime.Add(time.Duration(ticks) * time.Second / clockTicks)
}

// pidRecord is the content of a container's pid file.
func pidRecord(p *process) []byte {
	return []byte(fmt.Sprintf("%d %d\n", p.PID, p.StartTime))
}

func writePidFile(path string, p *process) error {
	return atomicfile.WriteFile(path, pidRecord(p), 0o600)
}

// readPidFile returns the pid and start time in path; ok is false when
// there is no such file.
func readPidFile(path string) (pid int, startTime uint64, ok bool, err error) {
	body, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	if _, err := fmt.Sscanf(string(body), "%d %d", &pid, &startTime); err != nil {
		return 0, 0, false, fmt.Errorf("pid file %s: %w", path, err)
	}
	return pid, startTime, true, nil
}

// netnsProcesses lists the processes whose network namespace is the one
// bound at nsPath: every process of a pod, whatever its process group or
// session (QEMU, daemonised by libvirt, has its own).
func netnsProcesses(nsPath string) ([]int, error) {
	var want syscall.Stat_t
	if err := syscall.Stat(nsPath, &want); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &st); err != nil {
			continue
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killNetns sends SIGKILL to every process in the network namespace at
// nsPath until none is left or timeout passes.
func killNetns(nsPath string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := netnsProcesses(nsPath)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		live := 0
		for _, pid := range pids {
			if _, state, err := procStat(pid); err == nil && state != 'Z' && state != 'X' {
				live++
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if live == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes of %s still alive after SIGKILL", live, nsPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
