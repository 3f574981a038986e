package framework

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Process is a child process of a test in a process group of its own, so
// that Stop and Kill reach everything it started, with its output in a log
// file the test can read or print when it fails.
type Process struct {
	// Name names the process in errors, e.g. "virtkube server".
	Name string

	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	exitErr error // how cmd ended; set before exited is closed
}

// StartProcess starts cmd as name in a process group of its own. Its
// standard output and error, where cmd does not set them already (as
// cmd.StdoutPipe does), are appended to logPath, which is created if need
// be; with logPath "" they stay as cmd has them and the process has no log.
func StartProcess(name string, cmd *exec.Cmd, logPath string) (*Process, error) {
	var logFile *os.File
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("log of %s: %w", name, err)
		}
		logFile = f
		if cmd.Stdout == nil {
			cmd.Stdout = f
		}
		if cmd.Stderr == nil {
			cmd.Stderr = f
		}
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.exitErr = cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(p.exited)
	}()
	return p, nil
}

// Pid is the process's id, which is also its process group's.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has ended.
func (p *Process) Done() <-chan struct{} { return p.exited }

// Exited reports whether the process has ended, without blocking.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Err is how the process ended (nil for exit status 0), or nil while it
// runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.exitErr
}

// Stop sends SIGTERM and waits up to timeout for the process to end; it
// returns the process's exit error (nil for status 0). Anything the process
// left behind in its group is killed once it has ended; after timeout the
// whole group is killed and Stop says so. A process that has already ended
// is only asked for its exit error.
func (p *Process) Stop(timeout time.Duration) error {
	if p.Exited() {
		return p.exitErr
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		return p.exitErr
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %s after SIGTERM", p.Name, timeout)
	}
}

// Kill ends the process's whole group at once, as a crash would, and waits
// for the process to end.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.exited
}

// Log is everything in the process's log so far.
func (p *Process) Log() string {
	if p.logPath == "" {
		return fmt.Sprintf("(%s has no log file)", p.Name)
	}
	body, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(body)
}

// LogTail is the last n lines of the process's log.
func (p *Process) LogTail(n int) string {
	if p.logPath == "" {
		return p.Log()
	}
	tail, err := logTail(p.logPath, n)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return tail
}

// logTail is the last n lines of the file at path.
func logTail(path string, n int) (string, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimRight(string(body), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n"), nil
}
