package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/containerdisk"
	"github.com/virtkube/virtkube/internal/domain"
	"github.com/virtkube/virtkube/internal/launcherrpc"
	"github.com/virtkube/virtkube/internal/storage"
	"github.com/virtkube/virtkube/internal/storage/cloudinit"
	"github.com/virtkube/virtkube/internal/version"
)

// Config is one launcher's place in its pod.
type Config struct {
	// Name, Namespace and UID identify the VMI this launcher may run.
	Name, Namespace, UID string
	// GracePeriod is how long a guest gets to power off before it is
	// killed.
	GracePeriod time.Duration
	// SocketsDir is shared with virt-handler: the launcher's gRPC socket,
	// the serial console and VNC sockets.
	SocketsDir string
	// Disks are where volumes come from and go.
	Disks storage.Dirs
	// Libvirt configures the launcher's libvirt daemon.
	Libvirt DaemonOptions
	// EFIFirmware is OVMF's code image, when installed.
	EFIFirmware string
}

// pollInterval is how often the domain's state is read. Reading it is one
// local RPC to libvirtd; events would save little at this rate.
const pollInterval = 200 * time.Millisecond

// Launcher runs one VMI's domain and answers virt-handler.
type Launcher struct {
	cfg    Config
	conn   *libvirt.Libvirt
	driver Driver
	daemon *Daemon

	mu       sync.Mutex
	started  bool
	status   launcherrpc.DomainStatus
	watchers map[chan launcherrpc.DomainStatus]struct{}
	ended    chan struct{} // closed when a started domain has ended
	closing  chan struct{} // closed when Run is about to return
	stopping bool
}

var _ launcherrpc.Server = (*Launcher)(nil)

// Run starts the libvirt daemon, serves virt-handler and supervises the
// domain. It returns when ctx is done (the pod is being deleted), after a
// graceful stop of the guest, or when a started domain ends by itself.
func Run(ctx context.Context, cfg Config) error {
	log := klog.FromContext(ctx).WithValues("vmi", cfg.Namespace+"/"+cfg.Name)
	for _, d := range []string{cfg.SocketsDir, cfg.Disks.Ephemeral, cfg.Libvirt.Dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	// The containerDisks' containers end with the launcher, so the pod
	// completes once the guest is gone.
	if cfg.Disks.Holder == nil {
		cfg.Disks.Holder = &containerdisk.Holder{}
	}
	defer cfg.Disks.Holder.Release()
	daemon, err := StartDaemon(ctx, cfg.Libvirt)
	if err != nil {
		return err
	}
	defer daemon.Stop()
	conn, err := daemon.Connect()
	if err != nil {
		return err
	}
	defer conn.Disconnect()

	l := &Launcher{
		cfg: cfg, conn: conn, daemon: daemon,
		driver: NewDriver(conn, domain.Name(&virtv1.VirtualMachineInstance{
			ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Name}})),
		status:   launcherrpc.DomainStatus{State: string(StateGone)},
		watchers: map[chan launcherrpc.DomainStatus]struct{}{},
		ended:    make(chan struct{}),
		closing:  make(chan struct{}),
	}
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	// Watchers get the final status, then the server stops.
	defer stopServing()
	defer close(l.closing)
	socket := filepath.Join(cfg.SocketsDir, launcherrpc.SocketName)
	served := make(chan error, 1)
	go func() { served <- launcherrpc.Serve(serveCtx, socket, l) }()
	defer os.Remove(socket)
	go l.monitor(serveCtx)
	log.Info("launcher ready", "socket", socket)

	select {
	case <-ctx.Done():
		log.Info("stopping the guest", "grace", cfg.GracePeriod)
		byGuest, err := l.stop(context.WithoutCancel(ctx), cfg.GracePeriod)
		log.Info("domain stopped", "byGuest", byGuest, "err", err)
		return err
	case <-l.ended:
		l.mu.Lock()
		st := l.status
		l.mu.Unlock()
		log.Info("domain ended", "state", st.State, "byGuest", st.StoppedByGuest)
		return nil
	case err := <-served:
		return fmt.Errorf("serve virt-handler: %w", err)
	case <-daemon.Exited():
		return errors.New("libvirtd exited")
	}
}

func (l *Launcher) stop(ctx context.Context, grace time.Duration) (bool, error) {
	l.mu.Lock()
	started := l.started
	l.stopping = true
	l.mu.Unlock()
	if !started {
		return false, nil
	}
	byGuest, err := StopGracefully(ctx, l.driver, grace)
	l.setStatus(func(s *launcherrpc.DomainStatus) {
		s.State, s.StoppedByGuest = string(StateGone), byGuest
		if !byGuest {
			s.Reason, s.Message = "Killed", fmt.Sprintf("the guest did not power off within %s", grace)
		}
	})
	return byGuest, err
}

// monitor reads the domain's state and tells watchers about changes. It
// reads and publishes under l.mu, so a Pause or Unpause cannot land between
// the two and be overwritten by the state from before it.
func (l *Launcher) monitor(ctx context.Context) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if l.observe(ctx) {
			close(l.ended)
			return
		}
	}
}

// observe publishes the domain's current state and reports whether the
// domain ended by itself.
func (l *Launcher) observe(ctx context.Context) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		return false
	}
	st, err := l.driver.State(ctx)
	if err != nil {
		return false
	}
	before := l.status
	l.status.State, l.status.PauseReason = string(st.State), string(st.PauseReason)
	ended := !l.stopping && (st.State == StateGone || st.State == StateShutoff || st.State == StateCrashed)
	if ended {
		l.status.StoppedByGuest = st.State != StateCrashed
	}
	if l.status != before {
		l.broadcastLocked()
	}
	return ended
}

func (l *Launcher) setStatus(change func(*launcherrpc.DomainStatus)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	before := l.status
	change(&l.status)
	if l.status != before {
		l.broadcastLocked()
	}
}

// broadcastLocked sends the status to every watcher; l.mu is held.
func (l *Launcher) broadcastLocked() {
	for w := range l.watchers {
		select {
		case w <- l.status:
		default: // a slow watcher catches up with the next change
		}
	}
}

// Ping answers with the launcher's version.
func (l *Launcher) Ping(context.Context, *launcherrpc.Empty) (*launcherrpc.PingResponse, error) {
	return &launcherrpc.PingResponse{Version: version.Version}, nil
}

// Sync starts the VMI's domain if it is not running yet.
func (l *Launcher) Sync(ctx context.Context, req *launcherrpc.SyncRequest) (*launcherrpc.Empty, error) {
	vmi := req.VMI
	if vmi == nil || string(vmi.UID) != l.cfg.UID || vmi.Name != l.cfg.Name || vmi.Namespace != l.cfg.Namespace {
		return nil, status.Errorf(codes.InvalidArgument, "this launcher runs VMI %s/%s (%s) only", l.cfg.Namespace, l.cfg.Name, l.cfg.UID)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started || l.stopping {
		return &launcherrpc.Empty{}, nil
	}
	fail := func(reason string, err error) (*launcherrpc.Empty, error) {
		l.status.Reason, l.status.Message = reason, err.Error()
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	disks, err := storage.Prepare(ctx, vmi, l.cfg.Disks, cloudinit.MountedSecrets(vmi, l.cfg.Disks.Secrets))
	if err != nil {
		return fail("VolumesNotReady", err)
	}
	ifaces, err := l.plugNetwork(ctx, vmi)
	if err != nil {
		return fail("NetworkNotReady", err)
	}
	d, err := domain.Convert(vmi, domain.Context{
		Emulation:   req.Emulation,
		Disks:       disks,
		Interfaces:  ifaces,
		SocketsDir:  l.cfg.SocketsDir,
		EFIFirmware: l.cfg.EFIFirmware,
	})
	if err != nil {
		return fail("InvalidSpec", err)
	}
	xml, err := domain.XML(d)
	if err != nil {
		return fail("InvalidSpec", err)
	}
	paused := vmi.ShouldStartPaused()
	if err := l.driver.Start(ctx, xml, paused); err != nil {
		return fail("StartFailed", err)
	}
	l.started = true
	l.status = launcherrpc.DomainStatus{State: string(StateRunning)}
	if paused {
		l.status = launcherrpc.DomainStatus{State: string(StatePaused), PauseReason: string(PauseUser)}
	}
	l.broadcastLocked()
	klog.FromContext(ctx).Info("domain started", "domain", d.Name, "paused", paused)
	if l.daemon != nil {
		// QEMU's capabilities are known now: the next launchers on this
		// machine need not probe them.
		go func() {
			if err := l.daemon.ShareCapabilities(); err != nil {
				klog.FromContext(ctx).Error(err, "share QEMU capabilities")
			}
		}()
	}
	return &launcherrpc.Empty{}, nil
}

// Shutdown stops the guest gracefully in the background.
func (l *Launcher) Shutdown(ctx context.Context, req *launcherrpc.ShutdownRequest) (*launcherrpc.Empty, error) {
	grace := time.Duration(req.GracePeriodSeconds) * time.Second
	go func() { _, _ = l.stop(context.WithoutCancel(ctx), grace) }()
	return &launcherrpc.Empty{}, nil
}

// Kill stops the domain at once.
func (l *Launcher) Kill(ctx context.Context, _ *launcherrpc.Empty) (*launcherrpc.Empty, error) {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	if err := l.driver.Kill(ctx); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	l.setStatus(func(s *launcherrpc.DomainStatus) { s.State, s.Reason = string(StateGone), "Killed" })
	return &launcherrpc.Empty{}, nil
}

// Pause suspends the guest's CPUs.
func (l *Launcher) Pause(ctx context.Context, _ *launcherrpc.Empty) (*launcherrpc.Empty, error) {
	return l.changePause(ctx, true)
}

// Unpause resumes a paused guest.
func (l *Launcher) Unpause(ctx context.Context, _ *launcherrpc.Empty) (*launcherrpc.Empty, error) {
	return l.changePause(ctx, false)
}

// changePause suspends (pause) or resumes the domain after checking with
// libvirt that it is in the state to leave, and publishes the new state at
// once: a second request right after the first is refused even before
// virt-handler has written the VMI's Paused condition.
func (l *Launcher) changePause(ctx context.Context, pause bool) (*launcherrpc.Empty, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started || l.stopping {
		return nil, status.Error(codes.FailedPrecondition, launcherrpc.MsgNotRunning)
	}
	st, err := l.driver.State(ctx)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if refusal := pauseRefusal(st.State, pause); refusal != "" {
		return nil, status.Error(codes.FailedPrecondition, refusal)
	}
	change, next := l.driver.Resume, launcherrpc.DomainStatus{State: string(StateRunning)}
	if pause {
		change, next = l.driver.Suspend, launcherrpc.DomainStatus{State: string(StatePaused), PauseReason: string(PauseUser)}
	}
	if err := change(ctx); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	l.status.State, l.status.PauseReason = next.State, next.PauseReason
	l.broadcastLocked()
	klog.FromContext(ctx).Info("domain pause changed", "paused", pause)
	return &launcherrpc.Empty{}, nil
}

// pauseRefusal says why a domain in state st cannot be paused (pause) or
// unpaused; "" when it can.
func pauseRefusal(st State, pause bool) string {
	switch {
	case st != StateRunning && st != StatePaused:
		return launcherrpc.MsgNotRunning
	case pause && st == StatePaused:
		return launcherrpc.MsgAlreadyPaused
	case !pause && st == StateRunning:
		return launcherrpc.MsgNotPaused
	}
	return ""
}

// GetDomain returns the current status.
func (l *Launcher) GetDomain(context.Context, *launcherrpc.Empty) (*launcherrpc.DomainStatus, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.status
	return &st, nil
}

// Watch streams the status now and on every change.
func (l *Launcher) Watch(_ *launcherrpc.Empty, stream grpc.ServerStreamingServer[launcherrpc.DomainStatus]) error {
	ch := make(chan launcherrpc.DomainStatus, 16)
	l.mu.Lock()
	l.watchers[ch] = struct{}{}
	current := l.status
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.watchers, ch)
		l.mu.Unlock()
	}()
	if err := stream.Send(&current); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case st := <-ch:
			if err := stream.Send(&st); err != nil {
				return err
			}
		case <-l.closing:
			for {
				select {
				case st := <-ch:
					if err := stream.Send(&st); err != nil {
						return err
					}
				default:
					l.mu.Lock()
					final := l.status
					l.mu.Unlock()
					return stream.Send(&final)
				}
			}
		}
	}
}
