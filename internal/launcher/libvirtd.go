// Package launcher is virt-launcher: it owns one VM. It runs a libvirt
// daemon of its own (one per pod, as KubeVirt does), turns the VMI into a
// domain, starts it, reports its state, and stops it gracefully when asked or
// when the pod ends.
package launcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// libvirt's fixed paths for a privileged daemon. With PrivateDirs, each is
// replaced by a directory of this launcher's in a mount namespace of the
// daemon's own, so launchers on one machine never share state.
var libvirtPaths = map[string]string{
	"etc":   "/etc/libvirt",
	"run":   "/run/libvirt",
	"lib":   "/var/lib/libvirt",
	"log":   "/var/log/libvirt",
	"cache": "/var/cache/libvirt",
}

// DaemonOptions configure the launcher's libvirt daemon.
type DaemonOptions struct {
	// Dir holds the daemon's configuration, state and socket.
	Dir string
	// PrivateDirs runs the daemon in its own mount namespace with
	// libvirt's fixed directories replaced by ones under Dir. Needed when
	// launchers share a filesystem (virtkube's local node runtime); a
	// container already has its own.
	PrivateDirs bool
	// Binary is the daemon to run; empty means libvirtd from PATH.
	Binary string
	// CapabilitiesCache, when set, is a directory the launchers of one
	// machine share for libvirt's QEMU capabilities cache (see
	// capabilities.go).
	CapabilitiesCache string
	// Stderr receives the daemon's log.
	Stderr *os.File
}

// Daemon is a running libvirt daemon.
type Daemon struct {
	opts   DaemonOptions
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// Socket is the daemon's read-write socket.
func (d *Daemon) Socket() string { return filepath.Join(d.opts.Dir, "sock", "libvirt-sock") }

// qemuConf keeps the QEMU driver simple in a pod: no security driver (no
// AppArmor/SELinux here), stdio to files (no virtlogd), no cgroups of its
// own (the pod's cgroup is the limit), no per-domain /dev namespace, and
// ownership of files left as the launcher made them.
const qemuConf = `security_driver = "none"
stdio_handler = "file"
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
cgroup_controllers = [ ]
namespaces = [ ]
`

// driverDirs are where distributions install libvirt's driver modules.
var driverDirs = []string{
	"/usr/lib/x86_64-linux-gnu/libvirt/connection-driver",
	"/usr/lib/aarch64-linux-gnu/libvirt/connection-driver",
	"/usr/lib64/libvirt/connection-driver",
	"/usr/lib/libvirt/connection-driver",
}

// qemuDriverOnly makes a driver directory under dir that holds only
// libvirt's QEMU driver, for LIBVIRT_DRIVER_DIR. libvirtd loads every driver
// it finds; a launcher needs none of the others (its taps are made by
// virt-handler, its disks are files and devices), and they cost each pod's
// daemon start CPU and memory and log errors (dnsmasq, D-Bus, udev): 0.12 →
// 0.07 CPU-seconds, 18 → 13 MiB PSS (SPECIFICATION 9).
func qemuDriverOnly(dir string) (string, error) {
	const module = "libvirt_driver_qemu.so"
	for _, d := range driverDirs {
		src := filepath.Join(d, module)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		out := filepath.Join(dir, "drivers")
		if err := os.MkdirAll(out, 0o755); err != nil {
			return "", err
		}
		link := filepath.Join(out, module)
		_ = os.Remove(link)
		return out, os.Symlink(src, link)
	}
	return "", fmt.Errorf("%s not found in %v", module, driverDirs)
}

// StartDaemon starts libvirtd and returns once its socket answers.
func StartDaemon(ctx context.Context, opts DaemonOptions) (*Daemon, error) {
	if opts.Binary == "" {
		opts.Binary = "libvirtd"
	}
	bin, err := exec.LookPath(opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("libvirt daemon: %w (install libvirt-daemon-driver-qemu)", err)
	}
	for name := range libvirtPaths {
		if err := os.MkdirAll(filepath.Join(opts.Dir, name), 0o700); err != nil {
			return nil, err
		}
	}
	sockDir := filepath.Join(opts.Dir, "sock")
	if err := os.MkdirAll(sockDir, 0o700); err != nil {
		return nil, err
	}
	etc := filepath.Join(opts.Dir, "etc")
	daemonConf := fmt.Sprintf("unix_sock_dir = %q\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\nlog_outputs = \"3:stderr\"\n", sockDir)
	if err := os.WriteFile(filepath.Join(etc, "libvirtd.conf"), []byte(daemonConf), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(etc, "qemu.conf"), []byte(qemuConf), 0o600); err != nil {
		return nil, err
	}
	_ = os.Remove(filepath.Join(sockDir, "libvirt-sock"))
	if opts.CapabilitiesCache != "" {
		if err := seedCapabilities(opts.CapabilitiesCache, opts.Dir); err != nil {
			return nil, fmt.Errorf("QEMU capabilities cache: %w", err)
		}
	}

	args := []string{"-f", filepath.Join(etc, "libvirtd.conf"), "-p", filepath.Join(opts.Dir, "run", "libvirtd.pid")}
	var cmd *exec.Cmd
	if opts.PrivateDirs {
		// A shell in a new mount namespace binds our directories over
		// libvirt's and then becomes libvirtd. Nothing leaks to the host:
		// the namespace's mounts are private.
		var script strings.Builder
		script.WriteString("set -e; mount --make-rprivate /\n")
		for name, target := range libvirtPaths {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, err
			}
			fmt.Fprintf(&script, "mount --bind %q %q\n", filepath.Join(opts.Dir, name), target)
		}
		script.WriteString(`exec "$0" "$@"` + "\n")
		cmd = exec.Command("/bin/sh", append([]string{"-c", script.String(), bin}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	} else {
		cmd = exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if dir, err := qemuDriverOnly(opts.Dir); err == nil {
		cmd.Env = append(os.Environ(), "LIBVIRT_DRIVER_DIR="+dir)
	}
	// The daemon dies with the launcher.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.Stderr = opts.Stderr
	cmd.Stdout = opts.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start libvirtd: %w", err)
	}
	d := &Daemon{opts: opts, cmd: cmd, exited: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		if c, err := net.Dial("unix", d.Socket()); err == nil {
			c.Close()
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("libvirtd exited before it served its socket: %v", d.err)
		case <-deadline:
			d.Stop()
			return nil, errors.New("libvirtd did not serve its socket within 30s")
		case <-ctx.Done():
			d.Stop()
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// Connect opens a client connection to the daemon's QEMU driver.
func (d *Daemon) Connect() (*libvirt.Libvirt, error) {
	l := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(d.Socket()), dialers.WithLocalTimeout(5*time.Second)))
	if err := l.ConnectToURI(libvirt.QEMUSystem); err != nil {
		return nil, fmt.Errorf("connect to libvirtd: %w", err)
	}
	return l, nil
}

// Exited is closed when the daemon has ended.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// ShareCapabilities hands what the daemon learnt of QEMU to the launchers
// that start after this one; a no-op without a shared cache.
func (d *Daemon) ShareCapabilities() error {
	if d.opts.CapabilitiesCache == "" {
		return nil
	}
	return shareCapabilities(d.opts.CapabilitiesCache, d.opts.Dir)
}

// Stop ends the daemon: SIGTERM, then SIGKILL after five seconds.
func (d *Daemon) Stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}
