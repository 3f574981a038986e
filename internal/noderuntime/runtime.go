package noderuntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/virtkube/virtkube/internal/atomicfile"
	"github.com/virtkube/virtkube/internal/noderuntime/image"
)

// RuntimeConfig is how the local pod runtime runs pods on this machine.
type RuntimeConfig struct {
	// NodeName is the Node whose pods this runtime runs.
	NodeName string
	// PodCIDR is the node's IPv4 pod range, e.g. 10.244.0.0/24; its first
	// address is the gateway, on Bridge.
	PodCIDR string
	// Bridge is the host bridge pods are attached to; DefaultBridge when
	// empty.
	Bridge string
	// NodeIP is reported as the pods' hostIP; when nil, the Node's
	// InternalIP, else the gateway address.
	NodeIP net.IP
	// KubeletRoot holds pods' directories, as kubelet's root does:
	// <root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>.
	KubeletRoot string
	// Images pulls the images of containers that are not launchers.
	Images *image.Store
	// Binary is the virtkube binary that runs launcher containers; the
	// container-disk program must be next to it.
	Binary string
	// LauncherImagePrefix marks launcher images (e.g.
	// "virtkube.local/virt-launcher:"): they are not pulled; their
	// command runs from Binary.
	LauncherImagePrefix string
	// Client talks to the API server.
	Client kubernetes.Interface
}

// resyncPeriod is how often each pod is looked at without an event.
const resyncPeriod = 10 * time.Second

// Runtime runs the pods bound to one Node as processes of this machine.
type Runtime struct {
	cfg     RuntimeConfig
	ipam    *ipam
	nsenter string
	hostIP  string

	runOnce sync.Once
	synced  chan struct{} // closed once leftovers of gone pods are known
	runCtx  context.Context
	wg      sync.WaitGroup

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	// finished are pods whose workers removed everything of them, with
	// when: late events about them start no new worker.
	finished map[types.UID]time.Time
}

// finishedMemory is how long a finished pod is remembered.
const finishedMemory = 10 * time.Minute

// NewRuntime checks cfg and returns a runtime; Run starts it.
func NewRuntime(cfg RuntimeConfig) (*Runtime, error) {
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	switch {
	case cfg.NodeName == "":
		return nil, errors.New("node runtime: NodeName must be set")
	case cfg.Client == nil:
		return nil, errors.New("node runtime: Client must be set")
	case cfg.Images == nil:
		return nil, errors.New("node runtime: Images must be set")
	case cfg.LauncherImagePrefix == "":
		return nil, errors.New("node runtime: LauncherImagePrefix must be set")
	case !filepath.IsAbs(cfg.KubeletRoot):
		return nil, fmt.Errorf("node runtime: KubeletRoot %q must be an absolute path", cfg.KubeletRoot)
	case len(cfg.Bridge) > 15:
		return nil, fmt.Errorf("node runtime: bridge name %q is longer than 15 characters", cfg.Bridge)
	}
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("node runtime: Binary: %w", err)
	}
	// The launcher image's other program; without it no containerDisk
	// can start.
	if p := filepath.Join(filepath.Dir(cfg.Binary), "container-disk"); !isProgram(p) {
		return nil, fmt.Errorf("node runtime: %s is missing: containerDisks need the container-disk program next to %s (`make build` puts both in bin/)", p, filepath.Base(cfg.Binary))
	}
	a, err := newIPAM(filepath.Join(cfg.KubeletRoot, "ipam"), cfg.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("node runtime: %w", err)
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("node runtime: %w (install util-linux)", err)
	}
	return &Runtime{
		cfg: cfg, ipam: a, nsenter: nsenter,
		synced:   make(chan struct{}),
		workers:  map[types.UID]*podWorker{},
		finished: map[types.UID]time.Time{},
	}, nil
}

// Ready is closed once Run has taken over the node: it knows every pod
// bound to the node and what is left of pods that are gone.
func (r *Runtime) Ready() <-chan struct{} { return r.synced }

// Run runs the node's pods until ctx is done. Pods keep running when it
// returns: a restarted runtime finds their processes again (virtual
// machines survive a restart of `virtkube server`). Run may be called once.
func (r *Runtime) Run(ctx context.Context) error {
	err := errors.New("node runtime: Run called twice")
	r.runOnce.Do(func() { err = r.run(ctx) })
	return err
}

func (r *Runtime) run(ctx context.Context) error {
	log := klog.FromContext(ctx).WithName("node-runtime").WithValues("node", r.cfg.NodeName)
	ctx = klog.NewContext(ctx, log)
	for _, d := range []string{filepath.Join(r.cfg.KubeletRoot, "pods"), r.ipam.dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("node runtime: %w", err)
		}
	}
	if err := ensureNetnsDir(); err != nil {
		return fmt.Errorf("node runtime: %w", err)
	}
	if err := ensureBridge(r.cfg.Bridge, r.ipam.gateway()); err != nil {
		return fmt.Errorf("node runtime: %w", err)
	}
	if err := ensureEgressNAT(r.cfg.Bridge, r.ipam.network); err != nil {
		return fmt.Errorf("node runtime: %w", err)
	}
	r.hostIP = r.nodeIP(ctx)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.runCtx = ctx
	factory := informers.NewSharedInformerFactoryWithOptions(r.cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", r.cfg.NodeName).String()
		}))
	pods := factory.Core().V1().Pods().Informer()
	reg, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.podChanged(obj) },
		UpdateFunc: func(_, obj any) { r.podChanged(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok && !r.isFinished(pod.UID) {
				r.worker(pod.UID).gone(pod)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("node runtime: watch pods: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	// The handler (not only the cache) must have seen every pod: a pod
	// without a worker would be taken for a leftover.
	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		r.wg.Wait()
		return nil
	}
	// Every pod of the node has a worker now; whatever else is on disk
	// belongs to pods that are gone.
	if err := r.collectLeftovers(); err != nil {
		log.Error(err, "find leftovers of gone pods")
	}
	close(r.synced)
	log.Info("node runtime running", "podCIDR", r.cfg.PodCIDR, "bridge", r.cfg.Bridge, "kubeletRoot", r.cfg.KubeletRoot)
	<-ctx.Done()
	r.wg.Wait()
	return nil
}

func (r *Runtime) podChanged(obj any) {
	if pod, ok := obj.(*corev1.Pod); ok && !r.isFinished(pod.UID) {
		r.worker(pod.UID).update(pod)
	}
}

func (r *Runtime) isFinished(uid types.UID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.finished[uid]
	return ok
}

// worker returns the worker of pod uid, starting one if there is none.
func (r *Runtime) worker(uid types.UID) *podWorker {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.workers[uid]
	if !ok {
		w = newPodWorker(r, uid)
		r.workers[uid] = w
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			w.run(r.runCtx)
		}()
	}
	return w
}

// workerDone forgets w; finished says it removed everything of its pod.
func (r *Runtime) workerDone(w *podWorker, finished bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.workers[w.uid] == w {
		delete(r.workers, w.uid)
	}
	if finished {
		now := time.Now()
		for uid, at := range r.finished {
			if now.Sub(at) > finishedMemory {
				delete(r.finished, uid)
			}
		}
		r.finished[w.uid] = now
	}
}

// podsOnDisk is every pod something of is left on this node: a pod
// directory or an IP reservation.
func (r *Runtime) podsOnDisk() (map[types.UID]bool, error) {
	entries, err := os.ReadDir(filepath.Join(r.cfg.KubeletRoot, "pods"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	uids := map[types.UID]bool{}
	for _, e := range entries {
		if e.IsDir() {
			uids[types.UID(e.Name())] = true
		}
	}
	owners, err := r.ipam.Owners()
	if err != nil {
		return nil, err
	}
	for _, uid := range owners {
		uids[uid] = true
	}
	return uids, nil
}

// collectLeftovers gives every pod directory and IP reservation without a
// pod a worker that kills what still runs and removes the rest.
func (r *Runtime) collectLeftovers() error {
	uids, err := r.podsOnDisk()
	if err != nil {
		return err
	}
	r.mu.Lock()
	var gone []types.UID
	for uid := range uids {
		if _, ok := r.workers[uid]; !ok && uid != "" {
			gone = append(gone, uid)
		}
	}
	r.mu.Unlock()
	for _, uid := range gone {
		r.worker(uid).gone(nil)
	}
	return nil
}

// nodeIP is the address reported as pods' hostIP.
func (r *Runtime) nodeIP(ctx context.Context) string {
	if r.cfg.NodeIP != nil {
		return r.cfg.NodeIP.String()
	}
	if node, err := r.cfg.Client.CoreV1().Nodes().Get(ctx, r.cfg.NodeName, metav1.GetOptions{}); err == nil {
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				return a.Address
			}
		}
	}
	return r.ipam.gateway().IP.String()
}

// RemoveAllPods kills every pod this runtime's KubeletRoot knows of at once
// (SIGKILL, no grace) and removes their network namespaces, veths, addresses
// and directories. It does not touch the API server or the bridge. It is for
// tests and uninstalling; call it only when Run is not running.
func (r *Runtime) RemoveAllPods() error {
	uids, err := r.podsOnDisk()
	if err != nil {
		return err
	}
	var errs []error
	for uid := range uids {
		w := newPodWorker(r, uid)
		w.loadProcesses(nil)
		for _, c := range w.containers {
			if c.proc != nil {
				c.proc.KillGroup()
			}
		}
		if err := killNetns(podNetworkOf(uid).NetnsPath(), 10*time.Second); err != nil {
			errs = append(errs, err)
		}
		errs = append(errs, w.cleanup())
	}
	return errors.Join(errs...)
}

// podMeta is what a pod's directory records of it, for when the pod is
// gone from the API server: pod.json.
type podMeta struct {
	Namespace                     string    `json:"namespace"`
	Name                          string    `json:"name"`
	UID                           types.UID `json:"uid"`
	TerminationGracePeriodSeconds int64     `json:"terminationGracePeriodSeconds"`
}

func writePodMeta(path string, pod *corev1.Pod) error {
	m := podMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, TerminationGracePeriodSeconds: corev1.DefaultTerminationGracePeriodSeconds}
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		m.TerminationGracePeriodSeconds = *g
	}
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, body, 0o600)
}

func readPodMeta(path string) (podMeta, error) {
	var m podMeta
	body, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(body, &m)
}

// Reset removes every pod this runtime made under kubeletRoot: it kills
// their processes (by process group and by network namespace, which also
// reaches QEMU) and removes their network namespaces, veths, addresses and
// directories. It is `virtkube reset`, for uninstalling and for tests; it
// must not run while a Runtime serves kubeletRoot.
func Reset(kubeletRoot, podCIDR, bridge string) error {
	if bridge == "" {
		bridge = DefaultBridge
	}
	a, err := newIPAM(filepath.Join(kubeletRoot, "ipam"), podCIDR)
	if err != nil {
		return err
	}
	r := &Runtime{
		cfg:      RuntimeConfig{KubeletRoot: kubeletRoot, PodCIDR: podCIDR, Bridge: bridge},
		ipam:     a,
		synced:   make(chan struct{}),
		workers:  map[types.UID]*podWorker{},
		finished: map[types.UID]time.Time{},
	}
	return r.RemoveAllPods()
}
