package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/virtkube/virtkube/test/framework"
)

// findServer returns the pid of the `virtkube server` whose --data-dir
// holds kubeconfig; with one server on the machine, that one.
func findServer(kubeconfig string) (int, error) {
	dataDir := filepath.Dir(kubeconfig)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var all []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) < 2 || filepath.Base(args[0]) != "virtkube" || args[1] != "server" {
			continue
		}
		if framework.FlagValue(args, "--data-dir", "") == dataDir {
			return pid, nil
		}
		all = append(all, pid)
	}
	if len(all) == 1 {
		return all[0], nil
	}
	return 0, fmt.Errorf("no single `virtkube server` process with --data-dir %s (found %d others); set --server-pid", dataDir, len(all))
}

// server is a `virtkube server` the bench started (--ab mode).
type server struct {
	proc       *framework.Process
	cmd        *exec.Cmd // proc's command, for its pid
	args       []string  // the command line, binary first
	dataDir    string
	kubeconfig string
}

// startServer runs command (a binary and its arguments, e.g.
// "bin/virtkube server --kube-proxy=false") on dataDir with free API and
// console ports, its standard error to logTo, and returns once it is ready.
func startServer(ctx context.Context, command []string, dataDir string, logTo io.Writer) (*server, error) {
	api, err := framework.FreePort()
	if err != nil {
		return nil, err
	}
	console, err := framework.FreePort()
	if err != nil {
		return nil, err
	}
	args := append(slices.Clone(command[1:]), "--data-dir", dataDir,
		"--api-port", strconv.Itoa(api), "--console-port", strconv.Itoa(console))
	cmd := exec.Command(command[0], args...)
	cmd.Stderr = logTo
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	proc, err := framework.StartProcess(strings.Join(command, " "), cmd, "")
	if err != nil {
		return nil, err
	}
	s := &server{proc: proc, cmd: cmd, args: append([]string{command[0]}, args...), dataDir: dataDir,
		kubeconfig: filepath.Join(dataDir, "kubeconfig")}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.HasPrefix(sc.Text(), "virtkube is ready") {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case <-ready:
		return s, nil
	case <-proc.Done():
		return nil, fmt.Errorf("%s exited before it was ready", proc.Name)
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

// stop ends the server and removes the VMs and pod networks it leaves
// (`virtkube reset`), so the next server starts on a clean node.
func (s *server) stop() error {
	// How the server exited is not the bench's to judge; the reset below
	// runs either way.
	_ = s.proc.Stop(time.Minute)
	reset := []string{"reset", "--data-dir", s.dataDir}
	for _, f := range []string{"--bridge", "--pod-cidr"} {
		if v := framework.FlagValue(s.args, f, ""); v != "" {
			reset = append(reset, f, v)
		}
	}
	if out, err := exec.Command(s.args[0], reset...).CombinedOutput(); err != nil {
		return fmt.Errorf("virtkube reset: %w: %s", err, out)
	}
	return nil
}
