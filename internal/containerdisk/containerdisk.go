// Package containerdisk hands a containerDisk's file from the container that
// holds the image to virt-launcher, in a way kubelet runs unchanged.
//
// A containerDisk is an OCI image with one disk file under /disk/. Its
// container in the launcher pod runs the small container-disk program
// (copied into the pod by an init container from the launcher image, since
// the disk image has no binaries of its own). The program listens on a unix
// socket in an emptyDir it shares with the compute container, and answers
// every connection with the disk's path inside its own root. The launcher
// learns the program's pid from the socket (SO_PEERCRED; the pod shares one
// pid namespace) and opens the disk as /proc/<pid>/root/<path>: no copy, no
// privileged helper, and the image stays read-only because QEMU only reads
// it as the backing file of an overlay.
//
// Reaching into another process's root takes the access a debugger needs.
// QEMU runs with the same uid but, under libvirt, without capabilities; the
// kernel refuses access to a process holding capabilities its caller lacks.
// So the program gives up all its capabilities once its socket listens.
//
// See docs/design/0004-containerdisk.md.
package containerdisk

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/virtkube/virtkube/internal/unixpeer"
)

// DefaultDiskDir is where a containerDisk image keeps its disk.
const DefaultDiskDir = "/disk"

// DiskFileEnv, when set, is the disk file itself, overriding --disk-dir and
// --path. virtkube's own node runtime sets it: its containers share the
// host's root, where the image's layers are unpacked apart.
const DiskFileEnv = "VIRTKUBE_CONTAINER_DISK_FILE"

// SocketPath is where the container of volume serves its disk, under the
// directory the pod shares between its containers.
func SocketPath(dir, volume string) string { return filepath.Join(dir, volume+".sock") }

// answer is what the server writes on each connection.
type answer struct {
	// Path is the disk file, absolute, within the server's root.
	Path string `json:"path"`
}

// FindDisk is the disk file of a containerDisk: dir/name when name is
// given (the volume's containerDisk.path), else the one regular file in dir.
func FindDisk(dir, name string) (string, error) {
	if name != "" {
		p := name
		if !path.IsAbs(p) {
			p = path.Join(dir, p)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("containerDisk path %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() {
			return "", fmt.Errorf("containerDisk path %s: not a regular file", name)
		}
		return p, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("the image has no %s directory with the disk: %w", dir, err)
	}
	var found string
	for _, e := range entries {
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if found != "" {
			return "", fmt.Errorf("the image has more than one file in %s (%s, %s): set the volume's containerDisk.path", dir, path.Base(found), e.Name())
		}
		found = path.Join(dir, e.Name())
	}
	if found == "" {
		return "", fmt.Errorf("the image has no disk file in %s", dir)
	}
	return found, nil
}

// Serve answers on socket with disk until ctx is done or a client that
// holds the disk goes, then removes the socket. ready, if not nil, is called
// once the socket listens.
func Serve(ctx context.Context, socket, disk string, ready func() error) error {
	if !path.IsAbs(disk) {
		return fmt.Errorf("disk %q: path must be absolute", disk)
	}
	body, err := json.Marshal(answer{Path: disk})
	if err != nil {
		return err
	}
	body = append(body, '\n')
	if err := os.Remove(socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return err
	}
	l.SetUnlinkOnClose(true)
	ctx, end := context.WithCancel(ctx)
	defer end()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer l.Close()
	if ready != nil {
		if err := ready(); err != nil {
			return err
		}
	}
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go answerConn(c, body, end)
	}
}

// holdRequest is what a client sends first when the server is to live as
// long as the client's connection: the launcher holds its disks so that
// each container-disk ends with it and the pod can complete.
const holdRequest = "hold\n"

// answerConn answers one client; a holding client's end calls done.
func answerConn(c *net.UnixConn, body []byte, done func()) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	req := make([]byte, len(holdRequest))
	n, _ := io.ReadFull(c, req)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(body); err != nil {
		return
	}
	if string(req[:n]) != holdRequest {
		return
	}
	_ = c.SetDeadline(time.Time{})
	_, _ = io.Copy(io.Discard, c) // until the holder goes
	done()
}

// DropCapabilities empties the capability sets of every thread of the
// process, so a process of the same uid without capabilities (QEMU under
// libvirt) may open files under /proc/<pid>/root. It needs a binary built
// without cgo (syscall.AllThreadsSyscall).
func DropCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if errno == syscall.ENOTSUP {
		return errors.New("drop capabilities: this binary was built with cgo; build container-disk with CGO_ENABLED=0")
	}
	if errno != 0 {
		return fmt.Errorf("drop capabilities: %w", errno)
	}
	return nil
}

// Resolve asks the server on socket for its disk and returns a path to it
// that this process (and QEMU, started by it) can open:
// /proc/<server pid>/root/<disk>. It waits for the socket to appear, as the
// containerDisk container may start after the compute container, until ctx
// is done. The server goes on serving; see Holder to end it.
func Resolve(ctx context.Context, socket string) (string, error) {
	p, conn, err := dial(ctx, socket, false)
	if conn != nil {
		conn.Close()
	}
	return p, err
}

// Holder keeps the containerDisks of one launcher: each server it resolved
// runs until Release (or until this process ends, whichever is first).
type Holder struct {
	mu   sync.Mutex
	held map[string]held
}

type held struct {
	path string
	conn net.Conn
}

// Resolve is [Resolve], holding the server.
func (h *Holder) Resolve(ctx context.Context, socket string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d, ok := h.held[socket]; ok {
		return d.path, nil
	}
	p, conn, err := dial(ctx, socket, true)
	if err != nil {
		return "", err
	}
	if h.held == nil {
		h.held = map[string]held{}
	}
	h.held[socket] = held{path: p, conn: conn}
	return p, nil
}

// Release lets every held server end.
func (h *Holder) Release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s, d := range h.held {
		d.conn.Close()
		delete(h.held, s)
	}
}

func dial(ctx context.Context, socket string, hold bool) (string, net.Conn, error) {
	var lastErr error
	for {
		p, conn, err := dialOnce(ctx, socket, hold)
		if err == nil {
			return p, conn, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return "", nil, fmt.Errorf("containerDisk socket %s: %w", socket, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func dialOnce(ctx context.Context, socket string, hold bool) (_ string, _ net.Conn, err error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return "", nil, err
	}
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	pid, err := unixpeer.PID(conn)
	if err != nil {
		return "", nil, fmt.Errorf("peer of %s: %w", socket, err)
	}
	if pid <= 0 {
		return "", nil, fmt.Errorf("peer of %s is in another pid namespace: the pod must share its process namespace", socket)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req := "probe\n"
	if hold {
		req = holdRequest
	}
	if _, err := io.WriteString(conn, req); err != nil {
		return "", nil, err
	}
	var a answer
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&a); err != nil {
		return "", nil, fmt.Errorf("read %s: %w", socket, err)
	}
	_ = conn.SetDeadline(time.Time{})
	if !path.IsAbs(a.Path) {
		return "", nil, fmt.Errorf("%s answered %q: not an absolute path", socket, a.Path)
	}
	p := filepath.Join("/proc", strconv.Itoa(pid), "root", a.Path)
	if _, err := os.Stat(p); err != nil {
		return "", nil, fmt.Errorf("disk of the containerDisk behind %s: %w", socket, err)
	}
	return p, conn, nil
}
