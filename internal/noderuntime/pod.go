package noderuntime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/virtkube/virtkube/internal/containerdisk"
	"github.com/virtkube/virtkube/internal/noderuntime/image"
)

const (
	// unknownExitCode is reported for a process whose end nobody saw
	// (it ended while the runtime was down and left no exit record).
	unknownExitCode = 137
	// killTimeout bounds how long SIGKILLed processes may take to go.
	killTimeout = 10 * time.Second
	// pullBackoffBase and pullBackoffMax are kubelet's image pull back-off.
	pullBackoffBase = 10 * time.Second
	pullBackoffMax  = 5 * time.Minute
)

// launcherScratch are the paths where virt-launcher writes outside its
// volumes (overlays, cloud-init ISOs, its libvirt daemon's state). In a
// container they are the image's writable layer; here each launcher
// container gets directories of its own under its pod's directory.
var launcherScratch = []string{"/var/run/kubevirt-ephemeral-disks", "/var/run/kubevirt-private"}

// podWorker runs one pod: it starts it, follows its processes, reports its
// status and, when the pod is deleted or gone, stops it and removes what was
// made for it. All state but the fields under mu belongs to its goroutine.
type podWorker struct {
	r   *Runtime
	uid types.UID
	net podNetwork
	dir string

	mu         sync.Mutex
	pod        *corev1.Pod // latest seen; nil if never seen
	isGone     bool        // the pod object is gone from the API server
	notify     chan struct{}
	workCtx    context.Context // cancelled when the pod is to stop: ends pulls
	cancelWork context.CancelFunc

	ctx          context.Context
	log          klog.Logger
	loaded       bool
	containers   map[string]*container
	addr         *net.IPNet
	networkReady bool
	setupErr     error
	claimDirs    map[string]string // persistentVolumeClaim volume → host directory
	claimDevices map[string]string // persistentVolumeClaim volume → host block device
	rejected     *rejection
	completed    bool
	completedAt  time.Time
	termDeadline time.Time
}

// container is what the worker knows of one container.
type container struct {
	name     string
	spec     *corev1.Container // nil for a gone pod's
	init     bool              // an init container
	launcher bool              // runs from the virtkube binary
	waiting  *corev1.ContainerStateWaiting

	// Image containers: their image pulled, its containerDisk found.
	imageID      string
	pulled       bool
	diskFile     string
	pullFailures int
	nextPull     time.Time

	// The process and how it ended.
	proc       *process
	exit       *exitRecord
	message    string // its termination message, once it ended
	startedAt  time.Time
	finishedAt time.Time
}

func newPodWorker(r *Runtime, uid types.UID) *podWorker {
	ctx, cancel := context.WithCancel(context.Background())
	return &podWorker{
		r: r, uid: uid, net: podNetworkOf(uid),
		dir:        filepath.Join(r.cfg.KubeletRoot, "pods", string(uid)),
		notify:     make(chan struct{}, 1),
		workCtx:    ctx,
		cancelWork: cancel,
		containers: map[string]*container{},
		log:        klog.Background(),
		ctx:        context.Background(),
	}
}

// Paths of the pod's directory.
func (w *podWorker) emptyDir(name string) string {
	return filepath.Join(w.dir, "volumes", "kubernetes.io~empty-dir", name)
}
func (w *podWorker) pidFile(c string) string  { return filepath.Join(w.dir, c+".pid") }
func (w *podWorker) exitFile(c string) string { return filepath.Join(w.dir, c+".exit") }
func (w *podWorker) logFile(c string) string  { return filepath.Join(w.dir, "logs", c+".log") }
func (w *podWorker) metaFile() string         { return filepath.Join(w.dir, "pod.json") }

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	if pod.DeletionTimestamp != nil {
		w.cancelWork()
	}
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) gone(pod *corev1.Pod) {
	w.mu.Lock()
	w.isGone = true
	if pod != nil {
		w.pod = pod
	}
	w.cancelWork()
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) poke() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *podWorker) state() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, w.isGone
}

// run syncs the pod on every change, process end and resync tick until the
// pod is finished with or ctx is done. It kills nothing when ctx ends.
func (w *podWorker) run(ctx context.Context) {
	finished := false
	defer func() { w.r.workerDone(w, finished) }()
	defer w.cancelWork()
	select {
	case <-w.r.synced:
	case <-ctx.Done():
		return
	}
	w.ctx = ctx
	w.log = klog.FromContext(ctx).WithValues("podUID", w.uid)
	if pod, _ := w.state(); pod != nil {
		w.log = w.log.WithValues("pod", klog.KObj(pod))
	}
	stop := context.AfterFunc(ctx, w.cancelWork)
	defer stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.notify:
		case <-timer.C:
		}
		next, done := w.sync(ctx)
		if done {
			finished = true
			return
		}
		timer.Reset(next)
	}
}

// sync moves the pod one step on; it returns when to look again, or done
// when the pod is finished with.
func (w *podWorker) sync(ctx context.Context) (time.Duration, bool) {
	pod, gone := w.state()
	if !w.loaded {
		w.loadProcesses(pod)
		w.loaded = true
	}
	if gone || pod == nil || pod.DeletionTimestamp != nil {
		return w.terminate(ctx, pod, gone || pod == nil)
	}
	if terminal(pod.Status.Phase) {
		// Finished (maybe before a restart): nothing starts again, and
		// nothing of it may still run.
		if !w.completed {
			w.completed = true
			w.killAll()
		}
		return resyncPeriod, false
	}
	return w.syncPod(ctx, pod)
}

func (w *podWorker) syncPod(ctx context.Context, pod *corev1.Pod) (time.Duration, bool) {
	next := resyncPeriod
	if w.rejected == nil {
		w.rejected = checkPod(pod)
	}
	if w.rejected != nil {
		return w.writeStatus(ctx, pod, next), false
	}
	w.setupErr = w.prepare(ctx, pod)
	if w.setupErr != nil {
		w.log.Error(w.setupErr, "prepare pod")
		return w.writeStatus(ctx, pod, 2*time.Second), false
	}

	// Init containers run one after the other, each to its end; one that
	// fails fails the pod (restartPolicy Never).
	for i := range pod.Spec.InitContainers {
		c := w.container(&pod.Spec.InitContainers[i], true)
		if !c.launcher {
			w.rejected = &rejection{Reason: ReasonUnsupportedPodSpec, Message: fmt.Sprintf(
				"init container %s: this node runtime runs init containers of the launcher image (%s…) only; image %s is not one",
				c.name, w.r.cfg.LauncherImagePrefix, c.spec.Image)}
			return w.writeStatus(ctx, pod, next), false
		}
		w.advance(pod, c)
		if c.exit == nil {
			return w.writeStatus(ctx, pod, next), false
		}
		if c.exit.Code != 0 {
			if !w.completed {
				w.completed, w.completedAt = true, c.finishedAt
				w.log.Info("init container failed", "container", c.name, "exitCode", c.exit.Code)
			}
			return w.writeStatus(ctx, pod, next), false
		}
	}

	imagesReady := true
	for i := range pod.Spec.Containers {
		c := w.container(&pod.Spec.Containers[i], false)
		if c.launcher || c.pulled {
			continue
		}
		if d := w.pullImage(c); d < next {
			next = d
		}
		imagesReady = imagesReady && c.pulled
	}
	ended := 0
	for i := range pod.Spec.Containers {
		c := w.container(&pod.Spec.Containers[i], false)
		if imagesReady {
			w.advance(pod, c)
		}
		if c.exit != nil {
			ended++
			if c.finishedAt.After(w.completedAt) {
				w.completedAt = c.finishedAt
			}
		}
	}
	if !w.completed && ended == len(pod.Spec.Containers) {
		// The pod's work is done (restartPolicy Never): whatever its
		// processes left behind goes, as with a container's cgroup.
		w.completed = true
		w.log.Info("pod completed")
		w.killAll()
	}
	return w.writeStatus(ctx, pod, next), false
}

// prepare makes the pod's directories, volumes and network; all are
// idempotent and done once.
func (w *podWorker) prepare(ctx context.Context, pod *corev1.Pod) error {
	if w.networkReady {
		return nil
	}
	for _, d := range []string{w.dir, filepath.Join(w.dir, "logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := writePodMeta(w.metaFile(), pod); err != nil {
		return fmt.Errorf("record pod: %w", err)
	}
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.EmptyDir != nil:
			if err := os.MkdirAll(w.emptyDir(v.Name), 0o700); err != nil {
				return err
			}
		case v.Secret != nil:
			if err := w.writeSecret(ctx, pod, v); err != nil {
				return err
			}
		case v.PersistentVolumeClaim != nil:
			src, err := w.claimSource(ctx, pod, v)
			if err != nil {
				return err
			}
			if src.Block {
				if w.claimDevices == nil {
					w.claimDevices = map[string]string{}
				}
				w.claimDevices[v.Name] = src.Path
				continue
			}
			if w.claimDirs == nil {
				w.claimDirs = map[string]string{}
			}
			w.claimDirs[v.Name] = src.Path
		}
	}
	addr, err := w.r.ipam.Allocate(w.uid)
	if err != nil {
		return fmt.Errorf("pod IP: %w", err)
	}
	if err := setupPodNetwork(w.net, w.r.cfg.Bridge, addr, w.r.ipam.gateway().IP); err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	w.addr, w.networkReady = addr, true
	w.log.V(2).Info("pod network ready", "ip", addr.IP, "netns", w.net.Netns)
	return nil
}

// advance starts c once, or notes that its process ended.
func (w *podWorker) advance(pod *corev1.Pod, c *container) {
	if c.proc == nil && c.exit == nil {
		w.startContainer(pod, c)
	}
	if c.proc != nil && c.exit == nil && c.proc.Exited() {
		w.recordExit(c)
	}
}

// container returns the worker's record of spec's container.
func (w *podWorker) container(spec *corev1.Container, init bool) *container {
	c, ok := w.containers[spec.Name]
	if !ok {
		c = &container{name: spec.Name}
		w.containers[spec.Name] = c
	}
	if c.spec == nil {
		c.spec, c.init = spec, init
		c.launcher = strings.HasPrefix(spec.Image, w.r.cfg.LauncherImagePrefix)
	}
	return c
}

// loadProcesses finds what earlier runs of the runtime left for this pod:
// processes to adopt (never to start twice), exits and placed disks.
func (w *podWorker) loadProcesses(pod *corev1.Pod) {
	var names []string
	if pod != nil {
		for i := range pod.Spec.InitContainers {
			names = append(names, w.container(&pod.Spec.InitContainers[i], true).name)
		}
		for i := range pod.Spec.Containers {
			names = append(names, w.container(&pod.Spec.Containers[i], false).name)
		}
	} else {
		files, _ := filepath.Glob(filepath.Join(w.dir, "*.pid"))
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".pid")
			w.containers[name] = &container{name: name, launcher: true}
			names = append(names, name)
		}
	}
	for _, name := range names {
		c := w.containers[name]
		pid, start, ok, err := readPidFile(w.pidFile(name))
		if err != nil {
			w.log.Error(err, "read pid file", "container", name)
		}
		if !ok {
			continue
		}
		c.startedAt = startedAt(start)
		if p := adoptProcess(w.ctx, pid, start); p != nil {
			c.proc = p
			w.watch(p)
			w.log.Info("adopted running container", "container", name, "pid", pid)
			continue
		}
		w.recordExit(c)
	}
}

// watch pokes the worker when p ends.
func (w *podWorker) watch(p *process) {
	ctx := w.ctx
	go func() {
		select {
		case <-p.Done():
			w.poke()
		case <-ctx.Done():
		}
	}()
}

// recordExit notes how c's process ended: from the exit record its wrapper
// wrote, else from its wait status, else as unknown.
func (w *podWorker) recordExit(c *container) {
	rec := exitRecord{Code: unknownExitCode, Reason: "ContainerStatusUnknown"}
	finished := time.Now()
	if body, err := os.ReadFile(w.exitFile(c.name)); err == nil {
		if r, err := parseExitRecord(string(body)); err == nil {
			rec = r
			if fi, err := os.Stat(w.exitFile(c.name)); err == nil {
				finished = fi.ModTime()
			}
		}
	} else if c.proc != nil {
		if ws := c.proc.waitStatus(); ws != nil {
			switch {
			case ws.Exited():
				rec = exitRecord{Code: int32(ws.ExitStatus())}
			case ws.Signaled():
				rec = exitRecord{Code: 128 + int32(ws.Signal())}
			}
		}
	}
	c.exit, c.finishedAt = &rec, finished
	c.message = w.terminationMessage(c)
	w.log.Info("container ended", "container", c.name, "exitCode", rec.Code, "reason", rec.Reason)
}

// terminationMessage is the message of ended container c as kubelet
// computes it: with terminationMessagePolicy FallbackToLogsOnError, the
// tail of its log when it failed (see logTail). Nothing is persisted: the
// log does not grow once the container's process ended (unless something
// it left running writes on), so a restarted runtime computes the same
// message from the same files. The terminationMessagePath file is not
// supported: messages come from logs only.
func (w *podWorker) terminationMessage(c *container) string {
	if !fallbackToLogs(c.spec, *c.exit) {
		return ""
	}
	end, cut, err := readEnd(w.logFile(c.name), maxTerminationMessageLogLength)
	if err != nil {
		// kubelet's words when it cannot read the log.
		return fmt.Sprintf("Error on reading termination message from logs: %v", err)
	}
	return logTail(end, cut)
}

// readEnd reads the last n bytes of the file at path (all of a shorter
// one); cut reports whether bytes precede them.
func readEnd(path string, n int64) (end []byte, cut bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	off := max(fi.Size()-n, 0)
	end = make([]byte, fi.Size()-off)
	k, err := f.ReadAt(end, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, false, err
	}
	return end[:k], off > 0, nil
}

// pullImage pulls c's image and finds its containerDisk; it returns when
// to try again after a failure.
func (w *podWorker) pullImage(c *container) time.Duration {
	now := time.Now()
	if now.Before(c.nextPull) {
		return c.nextPull.Sub(now)
	}
	policy := c.spec.ImagePullPolicy
	if policy == "" {
		policy = corev1.PullIfNotPresent
	}
	img, err := w.r.cfg.Images.Pull(w.workCtx, c.spec.Image, policy)
	if err != nil {
		if w.workCtx.Err() != nil {
			return resyncPeriod
		}
		reason, msg := image.ReasonErrImagePull, err.Error()
		var pe *image.PullError
		if errors.As(err, &pe) {
			reason, msg = pe.Reason, pe.Message
		}
		c.pullFailures++
		if reason == image.ReasonErrImagePull && c.pullFailures > 1 {
			reason, msg = ReasonImagePullBackOff, fmt.Sprintf("Back-off pulling image %q: %s", c.spec.Image, msg)
		}
		c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
		delay := pullBackoff(c.pullFailures)
		c.nextPull = now.Add(delay)
		w.log.Info("image pull failed", "container", c.name, "image", c.spec.Image, "reason", reason, "retryIn", delay, "err", msg)
		return delay
	}
	c.imageID = img.RepoDigest()
	c.pullFailures, c.nextPull = 0, time.Time{}
	// Only a containerDisk can run here: its container runs on this
	// machine's root, and the image's one useful file is the disk.
	disk, _, err := img.ContainerDisk()
	if err != nil {
		c.waiting = &corev1.ContainerStateWaiting{Reason: ReasonCreateContainerError, Message: err.Error()}
		return resyncPeriod
	}
	c.pulled, c.diskFile, c.waiting = true, disk, nil
	w.log.V(2).Info("image pulled", "container", c.name, "image", c.spec.Image, "disk", disk)
	return resyncPeriod
}

func pullBackoff(failures int) time.Duration {
	d := pullBackoffBase
	for i := 1; i < failures && d < pullBackoffMax; i++ {
		d *= 2
	}
	return min(d, pullBackoffMax)
}

// volumeDir is the host directory of the pod's volume name, and whether it
// is always mounted read-only (a Secret, as kubelet mounts it, or a claim
// the pod asks for read-only). A claim's directory is known once the pod
// was prepared.
func (w *podWorker) volumeDir(pod *corev1.Pod, name string) (dir string, readOnly, ok bool) {
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.Name != name:
		case v.EmptyDir != nil:
			return w.emptyDir(name), false, true
		case v.Secret != nil:
			return w.secretDir(name), true, true
		case v.PersistentVolumeClaim != nil:
			dir, ok := w.claimDirs[name]
			return dir, v.PersistentVolumeClaim.ReadOnly, ok
		}
	}
	return "", false, false
}

func isEmptyDir(pod *corev1.Pod, volume string) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Name == volume {
			return v.EmptyDir != nil
		}
	}
	return false
}

// startContainer starts c's command in the pod's network namespace and
// cgroup and a mount namespace of its own: a launcher container's from the
// virtkube binary, an image container's from one of its volumes.
func (w *podWorker) startContainer(pod *corev1.Pod, c *container) {
	fail := func(reason string, err error) {
		c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}
		w.log.Error(err, "start container", "container", c.name)
	}
	var argv []string
	var err error
	if c.launcher {
		argv, err = launcherArgv(c.spec, w.r.cfg.Binary, filepath.Join(w.r.cfg.KubeletRoot, "qemu-capabilities"))
	} else {
		argv, err = w.imageArgv(pod, c.spec)
	}
	if err != nil {
		fail(ReasonCreateContainerConfig, err)
		return
	}
	mounts, err := w.mounts(pod, c)
	if err != nil {
		fail(ReasonCreateContainerConfig, err)
		return
	}
	dev, err := w.devices(c)
	if err != nil {
		fail(ReasonCreateContainerConfig, err)
		return
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.Source, 0o700); err != nil {
			fail(ReasonCreateContainerError, err)
			return
		}
	}
	if dev != nil {
		if err := os.MkdirAll(dev.Stage, 0o700); err != nil {
			fail(ReasonCreateContainerError, err)
			return
		}
	}
	if err := os.Remove(w.exitFile(c.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		fail(ReasonCreateContainerError, err)
		return
	}
	logf, err := os.OpenFile(w.logFile(c.name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fail(ReasonCreateContainerError, err)
		return
	}
	defer logf.Close()
	cg := newPodCgroup(w.uid)
	if err := cg.create(limitsOf(pod)); err != nil {
		fail(ReasonCreateContainerError, err)
		return
	}
	args := append([]string{"--net=" + w.net.NetnsPath(), "--", "/bin/sh", "-c", containerScript(mounts, dev, cg.procsFiles(), w.exitFile(c.name))}, argv...)
	cmd := exec.Command(w.r.nsenter, args...)
	cmd.Dir = "/"
	cmd.Env = containerEnv(pod, c.spec)
	if c.diskFile != "" {
		cmd.Env = append(cmd.Env, containerdisk.DiskFileEnv+"="+c.diskFile)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group; no parent-death signal: pods outlive the
	// runtime.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Unshareflags: syscall.CLONE_NEWNS}
	p, err := startProcess(cmd)
	if err != nil {
		fail(ReasonCreateContainerError, err)
		return
	}
	if err := writePidFile(w.pidFile(c.name), p); err != nil {
		// Without its pid file a restarted runtime would start it twice.
		p.KillGroup()
		<-p.Done()
		fail(ReasonCreateContainerError, fmt.Errorf("record pid: %w", err))
		return
	}
	c.proc, c.startedAt, c.waiting = p, p.Started, nil
	w.watch(p)
	w.log.Info("container started", "container", c.name, "pid", p.PID)
}

// launcherArgv is the command line of a launcher container run from the
// virtkube binary: the image's /usr/bin is the directory of the virtkube
// binary, where the programs virtkube is not are installed next to it
// (container-disk, and virt-launcher: a small binary of its own, so a pod
// does not map and initialise all of virtkube); the others are virtkube's
// subcommands. virt-launcher gets --private-libvirt (launchers share this
// machine's filesystem) and, when capsCache is set,
// --qemu-capabilities-cache: the node's launchers share libvirt's probe of
// QEMU.
func launcherArgv(spec *corev1.Container, binary, capsCache string) ([]string, error) {
	cmd := append(append([]string{}, spec.Command...), spec.Args...)
	if len(spec.Command) == 0 {
		return nil, fmt.Errorf("container %s: a launcher container needs a command (the image's binary, e.g. /usr/bin/virt-launcher)", spec.Name)
	}
	name := path.Base(cmd[0])
	argv := append([]string{binary, name}, cmd[1:]...)
	if sibling := filepath.Join(filepath.Dir(binary), name); isProgram(sibling) {
		argv = append([]string{sibling}, cmd[1:]...)
	}
	if name == "virt-launcher" && !slices.Contains(argv, "--private-libvirt") {
		argv = append(argv, "--private-libvirt")
	}
	if name == "virt-launcher" && capsCache != "" && !slices.ContainsFunc(argv, func(a string) bool { return strings.HasPrefix(a, "--qemu-capabilities-cache") }) {
		argv = append(argv, "--qemu-capabilities-cache="+capsCache)
	}
	return argv, nil
}

// isProgram reports whether p is an executable file that is not a link (to
// the virtkube binary, as bin/virt-handler is).
func isProgram(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// imageArgv is the command line of an image container: its command must be
// a program on one of its volumes (the launcher image put it there), as the
// image itself (a containerDisk) is not unpacked into a root here.
func (w *podWorker) imageArgv(pod *corev1.Pod, spec *corev1.Container) ([]string, error) {
	cmd := append(append([]string{}, spec.Command...), spec.Args...)
	if len(spec.Command) == 0 {
		return nil, fmt.Errorf("container %s: image %s: this node runtime runs an image container's command from one of its volumes; it has no command", spec.Name, spec.Image)
	}
	for _, m := range spec.VolumeMounts {
		rel, err := filepath.Rel(path.Clean(m.MountPath), path.Clean(cmd[0]))
		if err != nil || !filepath.IsLocal(rel) || !isEmptyDir(pod, m.Name) {
			continue
		}
		return append([]string{filepath.Join(w.emptyDir(m.Name), m.SubPath, rel)}, cmd[1:]...), nil
	}
	return nil, fmt.Errorf("container %s: image %s: command %s is on none of its volumes; this node runtime runs an image container's command from one of its volumes", spec.Name, spec.Image, cmd[0])
}

// mounts are c's volumes as bind mounts, after a launcher's scratch
// directories.
func (w *podWorker) mounts(pod *corev1.Pod, c *container) ([]bindMount, error) {
	spec := c.spec
	var ms []bindMount
	if c.launcher {
		for _, p := range launcherScratch {
			ms = append(ms, bindMount{Source: filepath.Join(w.dir, "containers", spec.Name, "rootfs", p), Target: p})
		}
	}
	for _, m := range spec.VolumeMounts {
		src, readOnly, ok := w.volumeDir(pod, m.Name)
		if !ok {
			return nil, fmt.Errorf("container %s: volume mount %s: no emptyDir, secret or bound persistentVolumeClaim volume %q in the pod", spec.Name, m.MountPath, m.Name)
		}
		if m.SubPathExpr != "" {
			return nil, fmt.Errorf("container %s: volume mount %s: subPathExpr is not supported by this node runtime", spec.Name, m.MountPath)
		}
		if m.SubPath != "" {
			if !filepath.IsLocal(m.SubPath) {
				return nil, fmt.Errorf("container %s: volume mount %s: subPath %q must be a relative path within the volume", spec.Name, m.MountPath, m.SubPath)
			}
			src = filepath.Join(src, m.SubPath)
		}
		if !path.IsAbs(m.MountPath) {
			return nil, fmt.Errorf("container %s: mountPath %q must be absolute", spec.Name, m.MountPath)
		}
		ms = append(ms, bindMount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly || readOnly})
	}
	return ms, nil
}

// containerEnv is a container's environment: a standard PATH, HOME and
// HOSTNAME, and the spec's literal values (valueFrom is not supported).
func containerEnv(pod *corev1.Pod, spec *corev1.Container) []string {
	hostname := pod.Spec.Hostname
	if hostname == "" {
		hostname = pod.Name
	}
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"HOSTNAME=" + hostname,
	}
	for _, e := range spec.Env {
		if e.ValueFrom == nil {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	return env
}

// checkPod says why pod can never run on this node, or nil.
func checkPod(pod *corev1.Pod) *rejection {
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir == nil && v.Secret == nil && v.PersistentVolumeClaim == nil {
			return &rejection{Reason: ReasonUnsupportedVolume, Message: fmt.Sprintf(
				"volume %q is a %s volume: this node runtime supports only emptyDir, secret and persistentVolumeClaim volumes so far (hostPath, configMap and the other kinds come later)",
				v.Name, volumeKind(v.VolumeSource))}
		}
	}
	if pod.Spec.HostNetwork {
		return &rejection{Reason: ReasonUnsupportedPodSpec, Message: "hostNetwork pods are not supported by this node runtime: each pod gets its own network namespace"}
	}
	return nil
}

// volumeKind is the JSON name of the one set field of a VolumeSource or a
// PersistentVolumeSource.
func volumeKind[S corev1.VolumeSource | corev1.PersistentVolumeSource](src S) string {
	v := reflect.ValueOf(src)
	for i := 0; i < v.NumField(); i++ {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
			return name
		}
	}
	return "unknown"
}

// podRun is what the worker knows of the pod, for podStatus.
func (w *podWorker) podRun(pod *corev1.Pod) podRun {
	run := podRun{Rejected: w.rejected, NetworkReady: w.networkReady, HostIP: w.r.hostIP}
	if w.addr != nil {
		run.PodIP = w.addr.IP.String()
	}
	for i := range pod.Spec.InitContainers {
		run.InitContainers = append(run.InitContainers, w.containerRun(w.container(&pod.Spec.InitContainers[i], true)))
	}
	for i := range pod.Spec.Containers {
		run.Containers = append(run.Containers, w.containerRun(w.container(&pod.Spec.Containers[i], false)))
	}
	return run
}

func (w *podWorker) containerRun(c *container) containerRun {
	cr := containerRun{Name: c.name, Image: c.spec.Image, ImageID: c.imageID}
	if c.launcher {
		cr.ImageID = c.spec.Image
	}
	cr.State = w.containerState(c)
	return cr
}

func (w *podWorker) containerState(c *container) corev1.ContainerState {
	switch {
	case c.exit != nil:
		return terminatedState(*c.exit, c.message, metav1.NewTime(c.startedAt), metav1.NewTime(c.finishedAt))
	case c.proc != nil:
		return runningState(metav1.NewTime(c.startedAt))
	case c.waiting != nil:
		return corev1.ContainerState{Waiting: c.waiting.DeepCopy()}
	case w.setupErr != nil:
		return waitingState(ReasonContainerCreating, w.setupErr.Error())
	}
	return waitingState(ReasonContainerCreating, "")
}

// writeStatus writes the pod's status when it changed; it returns next, or
// a short retry when the write failed.
func (w *podWorker) writeStatus(ctx context.Context, pod *corev1.Pod, next time.Duration) time.Duration {
	status := podStatus(pod, w.podRun(pod), metav1.Now())
	if equality.Semantic.DeepEqual(pod.Status, status) {
		return next
	}
	updated := pod.DeepCopy()
	updated.Status = status
	res, err := w.r.cfg.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if err != nil {
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && ctx.Err() == nil {
			w.log.Error(err, "write pod status")
		}
		return min(next, time.Second)
	}
	w.log.V(2).Info("pod status written", "phase", res.Status.Phase)
	w.mu.Lock()
	if w.pod == pod {
		w.pod = res
	}
	w.mu.Unlock()
	return next
}

// started reports whether any container of the pod ran.
func (w *podWorker) started() bool {
	for _, c := range w.containers {
		if c.proc != nil || c.exit != nil {
			return true
		}
	}
	return false
}

// processes are the worker's container processes that still run.
func (w *podWorker) processes() []*process {
	var ps []*process
	for _, c := range w.containers {
		if c.proc != nil && !c.proc.Exited() {
			ps = append(ps, c.proc)
		}
	}
	return ps
}

// killAll kills every process of the pod at once.
func (w *podWorker) killAll() {
	for _, p := range w.processes() {
		p.KillGroup()
	}
	if err := killNetns(w.net.NetnsPath(), killTimeout); err != nil {
		w.log.Error(err, "kill pod processes")
	}
}

// terminate stops the pod: SIGTERM to each container's process, SIGKILL
// to everything of the pod after the grace period; then it removes what
// was made for the pod and confirms the deletion to the API server, as
// kubelet does, with a zero grace period.
func (w *podWorker) terminate(ctx context.Context, pod *corev1.Pod, gone bool) (time.Duration, bool) {
	if running := w.processes(); len(running) > 0 {
		if w.termDeadline.IsZero() {
			grace := gracePeriod(pod, w.metaFile())
			w.termDeadline = time.Now().Add(grace)
			w.log.Info("stopping pod", "gracePeriod", grace, "podGone", gone)
			for _, p := range running {
				p.Signal(syscall.SIGTERM)
			}
		}
		if left := time.Until(w.termDeadline); left > 0 {
			// A process's end pokes the worker earlier.
			return left, false
		}
		w.log.Info("grace period over, killing pod")
	}
	w.killAll()
	for _, c := range w.containers {
		if c.proc != nil && c.exit == nil {
			select {
			case <-c.proc.Done():
			case <-time.After(2 * adoptPoll):
			}
			w.recordExit(c)
		}
	}
	if !gone && pod != nil && !terminal(pod.Status.Phase) && w.started() {
		// The final word on the containers, as kubelet writes it.
		w.completed, w.completedAt = true, time.Now()
		w.writeStatus(ctx, pod, 0)
	}
	if err := w.cleanup(); err != nil {
		w.log.Error(err, "remove pod resources")
		return 2 * time.Second, false
	}
	if !gone && pod != nil {
		err := w.r.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			w.log.Error(err, "confirm pod deletion")
			return time.Second, false
		}
	}
	w.log.Info("pod removed")
	return 0, true
}

// gracePeriod is how long pod's processes get after SIGTERM: the deletion's
// grace period, else the pod's, else the one recorded in its directory.
func gracePeriod(pod *corev1.Pod, metaFile string) time.Duration {
	secs := int64(corev1.DefaultTerminationGracePeriodSeconds)
	switch {
	case pod != nil && pod.DeletionGracePeriodSeconds != nil:
		secs = *pod.DeletionGracePeriodSeconds
	case pod != nil && pod.Spec.TerminationGracePeriodSeconds != nil:
		secs = *pod.Spec.TerminationGracePeriodSeconds
	case pod == nil:
		if m, err := readPodMeta(metaFile); err == nil {
			secs = m.TerminationGracePeriodSeconds
		}
	}
	return time.Duration(max(secs, 0)) * time.Second
}

// cleanup removes the pod's network namespace, veth, address and
// directory. Everything of the pod must be dead.
func (w *podWorker) cleanup() error {
	var errs []error
	if err := teardownPodNetwork(w.net); err != nil {
		errs = append(errs, err)
	}
	if err := w.r.ipam.Release(w.uid); err != nil {
		errs = append(errs, err)
	}
	if err := newPodCgroup(w.uid).remove(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		// The directory goes last: while it exists, a restarted runtime
		// knows there is something of the pod left to remove.
		if err := os.RemoveAll(w.dir); err != nil {
			errs = append(errs, err)
		}
	}
	w.networkReady = false
	return errors.Join(errs...)
}
