package controlplane

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// maxUnixSocketPath is the longest socket path the kernel accepts
// (sizeof(sun_path) - 1).
const maxUnixSocketPath = 107

// etcdServer is the embedded etcd. It listens only on a unix socket inside
// the data dir: no TCP port to collide with, and no way in for anyone who
// cannot read the data dir.
type etcdServer struct {
	dataDir string
	socket  string
	etcd    *embed.Etcd
}

func newEtcd(dataDir, runDir string) (*etcdServer, error) {
	socket := filepath.Join(runDir, "etcd.sock")
	if len(socket) > maxUnixSocketPath {
		return nil, fmt.Errorf("--data-dir %q is too long: the etcd socket path %q exceeds %d bytes", filepath.Dir(runDir), socket, maxUnixSocketPath)
	}
	return &etcdServer{dataDir: dataDir, socket: socket}, nil
}

// Endpoint is the URL the apiserver reaches etcd at.
func (e *etcdServer) Endpoint() string { return "unix://" + e.socket }

// Start starts etcd and returns once it serves clients.
func (e *etcdServer) Start(ctx context.Context) error {
	if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
		return err
	}
	// A socket left by a process that was killed would make listen fail.
	if err := os.Remove(e.socket); err != nil && !os.IsNotExist(err) {
		return err
	}
	cfg := embed.NewConfig()
	cfg.Name = "virtkube"
	cfg.Dir = e.dataDir
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	client := url.URL{Scheme: "unix", Path: e.socket}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	// One member, no peers: nothing listens for peer traffic. The advertised
	// peer URL only names the member in its own cluster record.
	cfg.ListenPeerUrls = nil
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// The apiserver compacts etcd itself; keep the defaults otherwise.

	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-etcd.Server.ReadyNotify():
		e.etcd = etcd
		return nil
	case err := <-etcd.Err():
		etcd.Close()
		return fmt.Errorf("etcd: %w", err)
	case <-time.After(2 * time.Minute):
		etcd.Close()
		return fmt.Errorf("etcd did not become ready within 2m (data in %s)", e.dataDir)
	case <-ctx.Done():
		etcd.Close()
		return ctx.Err()
	}
}

// Err reports a fatal etcd error after Start.
func (e *etcdServer) Err() <-chan error { return e.etcd.Err() }

// Stop closes etcd, flushing what it holds to disk.
func (e *etcdServer) Stop() {
	if e.etcd != nil {
		e.etcd.Close()
	}
}
