// Package framework starts real virtkube servers for tests: a `virtkube
// server` process on free ports in a temporary data dir, clients for it,
// polling helpers with deadlines, and its logs when a test fails.
package framework

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/virtkube/virtkube/internal/noderuntime"
)

// readyLine is what `virtkube server` prints once everything is up.
const readyLine = "virtkube is ready"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the virtkube binary under test: $VIRTKUBE_BIN, or one built
// with `make build` in the module root on first use.
func Binary() (string, error) {
	buildOnce.Do(func() {
		if p := os.Getenv("VIRTKUBE_BIN"); p != "" {
			binPath = p
			return
		}
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("make", "-s", "build")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("make build: %w\n%s", err, out)
			return
		}
		binPath = filepath.Join(root, "bin", "virtkube")
	})
	return binPath, buildErr
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Server is one running `virtkube server`.
type Server struct {
	DataDir     string
	APIPort     int
	ConsolePort int
	Kubeconfig  string
	Args        []string

	Client     kubernetes.Interface
	RESTConfig *rest.Config

	// StartupTime is how long the last start took, from exec to the ready line.
	StartupTime time.Duration

	bin     string
	logPath string
	proc    *Process // the last one started; nil before the first Start
	stdout  bytes.Buffer
	mu      sync.Mutex
}

// NewServer prepares a server in dataDir; Start runs it.
func NewServer(dataDir string, extraArgs ...string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	consolePort, err := FreePort()
	if err != nil {
		return nil, err
	}
	return &Server{
		DataDir:     dataDir,
		APIPort:     port,
		ConsolePort: consolePort,
		Kubeconfig:  filepath.Join(dataDir, "kubeconfig"),
		Args:        append(isolatedNetworkArgs(), extraArgs...),
		bin:         bin,
		logPath:     filepath.Join(dataDir, "virtkube.log"),
	}, nil
}

// isolatedNetworkArgs gives every server of this test process its own bridge
// and pod range when $VIRTKUBE_TEST_NETWORK is a number from 1 to 99, so
// two suites can run on one machine at once without sharing virtkube0 (and
// without two kube-proxies owning the same nftables table: kube-proxy is off
// then). Unset, servers use the defaults a user gets.
func isolatedNetworkArgs() []string {
	v := os.Getenv("VIRTKUBE_TEST_NETWORK")
	if v == "" {
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 99 {
		panic(fmt.Sprintf("VIRTKUBE_TEST_NETWORK=%q: want a number from 1 to 99", v))
	}
	return []string{"--bridge", fmt.Sprintf("vktest%d", n), "--pod-cidr", fmt.Sprintf("10.244.%d.0/24", 100+n), "--kube-proxy=false"}
}

// Start runs the server and returns once it prints its ready line.
func (s *Server) Start(ctx context.Context) error {
	args := append([]string{"server", "--data-dir", s.DataDir, "--api-port", strconv.Itoa(s.APIPort),
		"--console-port", strconv.Itoa(s.ConsolePort)}, s.Args...)
	cmd := exec.Command(s.bin, args...)
	// Standard output is read here for the ready line; standard error goes
	// to the log.
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	begin := time.Now()
	proc, err := StartProcess("virtkube server", cmd, s.logPath)
	if err != nil {
		return err
	}
	s.proc = proc
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			s.mu.Lock()
			s.stdout.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			if !signalled && strings.HasPrefix(sc.Text(), readyLine) {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()

	select {
	case <-ready:
		s.StartupTime = time.Since(begin)
	case <-proc.Done():
		return fmt.Errorf("virtkube server exited before it was ready: %v\n%s", proc.Err(), s.LogTail(40))
	case <-ctx.Done():
		proc.Kill()
		return fmt.Errorf("virtkube server not ready: %w\n%s", ctx.Err(), s.LogTail(40))
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	s.RESTConfig = cfg
	s.Client, err = kubernetes.NewForConfig(cfg)
	return err
}

// Stdout is everything the server printed on standard output so far.
func (s *Server) Stdout() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stdout.String()
}

// Stop sends SIGTERM and waits up to timeout for a clean exit; it returns
// the process's exit error (nil for status 0). Whatever the server left in
// its process group is killed then, and the whole group after timeout. The
// pods it leaves running stay: Reset removes them.
func (s *Server) Stop(timeout time.Duration) error {
	if s.proc == nil {
		return nil
	}
	return s.proc.Stop(timeout)
}

// Reset removes every pod process and network the server's node runtime
// made (`virtkube reset`): the server leaves VMs running when it stops, by
// design, and a test must not.
func (s *Server) Reset() error {
	out, err := exec.Command(s.bin, "reset", "--data-dir", s.DataDir,
		"--bridge", s.Bridge(), "--pod-cidr", s.PodCIDR()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("virtkube reset: %w: %s", err, out)
	}
	return nil
}

// Kill ends the server's whole process group at once, as a crash would.
func (s *Server) Kill() {
	if s.proc != nil {
		s.proc.Kill()
	}
}

// Exited reports whether the process has ended; false before the first
// Start.
func (s *Server) Exited() bool {
	return s.proc != nil && s.proc.Exited()
}

// LogTail returns the last n lines of the server's log, which holds every
// start of it on its data dir.
func (s *Server) LogTail(n int) string {
	tail, err := logTail(s.logPath, n)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return "--- virtkube server log (last lines) ---\n" + tail
}

// Start starts a server in a fresh temporary directory for t and stops it
// when t ends, printing its log if t failed. Unless extraArgs say otherwise
// it runs without kube-proxy: Services belong to the suite's shared server,
// and two kube-proxies on one machine would rewrite each other's rules.
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	if !slices.ContainsFunc(extraArgs, func(a string) bool { return strings.HasPrefix(a, "--kube-proxy") }) {
		extraArgs = append([]string{"--kube-proxy=false"}, extraArgs...)
	}
	s, err := NewServer(t.TempDir(), extraArgs...)
	if err != nil {
		t.Fatal(err)
	}
	Cleanup(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// Cleanup stops s when t ends and prints its log if t failed.
func Cleanup(t testing.TB, s *Server) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(s.LogTail(80))
		}
		if err := s.Stop(time.Minute); err != nil {
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Logf("stop server: %v", err)
			}
		}
		if err := s.Reset(); err != nil {
			t.Errorf("reset: %v", err)
		}
	})
}

// Kubectl runs the kubectl built into virtkube against s. It returns stdout,
// stderr and the error of the run.
func (s *Server) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, s.bin, append([]string{"kubectl", "--kubeconfig", s.Kubeconfig}, args...)...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// PodCIDR is this server's pod range: its --pod-cidr, or the default.
func (s *Server) PodCIDR() string { return FlagValue(s.Args, "--pod-cidr", "10.244.0.0/24") }

// PodGateway is the host's address on the pod network (the first of the
// pod range, on the bridge): what a test serves on for pods to reach it.
func (s *Server) PodGateway() (netip.Addr, error) {
	p, err := netip.ParsePrefix(s.PodCIDR())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("pod range %q: %w", s.PodCIDR(), err)
	}
	return p.Masked().Addr().Next(), nil
}

// Bridge is this server's pods' host bridge: its --bridge, or the default.
func (s *Server) Bridge() string { return FlagValue(s.Args, "--bridge", "virtkube0") }

// RemoveIsolatedNetwork removes the bridge and egress table of
// $VIRTKUBE_TEST_NETWORK once the test process's servers are gone; without
// it, it does nothing (the default bridge is the machine's).
func RemoveIsolatedNetwork() error {
	args := isolatedNetworkArgs()
	if args == nil {
		return nil
	}
	return noderuntime.RemoveBridge(FlagValue(args, "--bridge", ""))
}

// KubeProxy reports whether the server runs kube-proxy, which Services
// need to reach guests.
func (s *Server) KubeProxy() bool { return FlagValue(s.Args, "--kube-proxy", "true") != "false" }

// flagOf is the value of the last --name in args (as --name=v or --name v),
// or def.
func FlagValue(args []string, name, def string) string {
	v := def
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, name+"="):
			v = strings.TrimPrefix(a, name+"=")
		case a == name && i+1 < len(args):
			v = args[i+1]
		}
	}
	return v
}
