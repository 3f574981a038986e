package noderuntime

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	k8sversion "k8s.io/component-base/version"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/virtkube/virtkube/internal/version"
)

// Heartbeat periods, as kubelet's defaults: the lease is renewed every 10 s
// (the node lifecycle controller's grace period is 50 s) and the Node's
// conditions are re-posted every minute.
const (
	leaseDuration   = 40 * time.Second
	leaseRenew      = 10 * time.Second
	statusFrequency = time.Minute
	maxPods         = 110
	leaseNamespace  = corev1.NamespaceNodeLease
)

// Node is this machine as a Kubernetes Node.
type Node struct {
	Name    string
	IP      net.IP
	PodCIDR string
	// DataDir is where pods' files live; its filesystem is the node's
	// ephemeral storage.
	DataDir string
	Client  kubernetes.Interface
}

// DefaultName is the node name derived from the host name, as kubelet
// derives it: lower-cased.
func DefaultName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return strings.ToLower(h)
}

// ValidateName says why name cannot be a Node name, or nil.
func ValidateName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("--node-name %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// Register creates the Node, or brings an existing one's status up to date.
// The podCIDR of an existing Node is kept: it is immutable once set.
func (n *Node) Register(ctx context.Context) error {
	nodes := n.Client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, n.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		node = &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name},
			Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR, PodCIDRs: []string{n.PodCIDR}},
		}
		n.applyLabels(node)
		if node, err = nodes.Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create node %s: %w", n.Name, err)
		}
	case err != nil:
		return fmt.Errorf("get node %s: %w", n.Name, err)
	default:
		n.applyLabels(node)
		if node, err = nodes.Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update node %s: %w", n.Name, err)
		}
	}
	return n.postStatus(ctx, node)
}

func (n *Node) applyLabels(node *corev1.Node) {
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	node.Labels[corev1.LabelHostname] = n.Name
	node.Labels[corev1.LabelOSStable] = runtime.GOOS
	node.Labels[corev1.LabelArchStable] = runtime.GOARCH
	node.Labels["node-role.kubernetes.io/control-plane"] = ""
}

// postStatus writes capacity, addresses, node info and Ready conditions.
func (n *Node) postStatus(ctx context.Context, node *corev1.Node) error {
	node = node.DeepCopy()
	now := metav1.Now()
	capacity := n.capacity()
	node.Status.Capacity = capacity
	node.Status.Allocatable = capacity
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: n.IP.String()},
		{Type: corev1.NodeHostName, Address: n.Name},
	}
	node.Status.NodeInfo = nodeInfo()
	node.Status.Phase = ""
	node.Status.Conditions = mergeConditions(node.Status.Conditions, now, []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "NodeHasSufficientMemory", Message: "node has sufficient memory available"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "NodeHasNoDiskPressure", Message: "node has no disk pressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "NodeHasSufficientPID", Message: "node has sufficient PID available"},
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "NodeAgentReady", Message: "virtkube node agent is posting ready status"},
	})
	if _, err := n.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update node %s status: %w", n.Name, err)
	}
	return nil
}

// mergeConditions sets heartbeat times on want, keeping transition times of
// conditions whose status did not change.
func mergeConditions(have []corev1.NodeCondition, now metav1.Time, want []corev1.NodeCondition) []corev1.NodeCondition {
	out := make([]corev1.NodeCondition, 0, len(want))
	for _, w := range want {
		w.LastHeartbeatTime, w.LastTransitionTime = now, now
		for _, h := range have {
			if h.Type == w.Type && h.Status == w.Status {
				w.LastTransitionTime = h.LastTransitionTime
			}
		}
		out = append(out, w)
	}
	return out
}

func (n *Node) capacity() corev1.ResourceList {
	list := corev1.ResourceList{
		corev1.ResourceCPU:  *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourcePods: *resource.NewQuantity(maxPods, resource.DecimalSI),
	}
	if kib, err := memTotalKiB(); err == nil {
		list[corev1.ResourceMemory] = *resource.NewQuantity(kib*1024, resource.BinarySI)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(n.DataDir, &st); err == nil {
		list[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(int64(st.Blocks)*st.Bsize, resource.BinarySI)
	}
	return list
}

func memTotalKiB() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		var kib int64
		if _, err := fmt.Sscanf(s.Text(), "MemTotal: %d kB", &kib); err == nil {
			return kib, nil
		}
	}
	return 0, fmt.Errorf("no MemTotal in /proc/meminfo")
}

func nodeInfo() corev1.NodeSystemInfo {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	machineID, _ := os.ReadFile("/etc/machine-id")
	return corev1.NodeSystemInfo{
		MachineID:               strings.TrimSpace(string(machineID)),
		KernelVersion:           unix.ByteSliceToString(uts.Release[:]),
		OSImage:                 osImage(),
		ContainerRuntimeVersion: "virtkube://" + version.Version,
		KubeletVersion:          k8sversion.Get().GitVersion,
		OperatingSystem:         runtime.GOOS,
		Architecture:            runtime.GOARCH,
	}
}

func osImage() string {
	body, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return runtime.GOOS
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return runtime.GOOS
}

// Heartbeat keeps the node's lease renewed and its status posted until ctx
// is done.
func (n *Node) Heartbeat(ctx context.Context) {
	log := klog.FromContext(ctx).WithValues("node", n.Name)
	lastStatus := time.Now()
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := n.renewLease(ctx); err != nil {
			log.Error(err, "renew node lease")
		}
		if time.Since(lastStatus) >= statusFrequency {
			node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err == nil {
				err = n.postStatus(ctx, node)
			}
			if err != nil {
				log.Error(err, "post node status")
				return
			}
			lastStatus = time.Now()
		}
	}, leaseRenew)
}

func (n *Node) renewLease(ctx context.Context) error {
	leases := n.Client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, n.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: n.Name, Namespace: leaseNamespace,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(n.Name),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
				RenewTime:            &now,
			},
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	lease.Spec.HolderIdentity = ptr.To(n.Name)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(leaseDuration / time.Second))
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

// WaitSchedulable waits until the Node carries no NoSchedule or NoExecute
// taint of the node lifecycle controller, i.e. pods can land on it.
func (n *Node) WaitSchedulable(ctx context.Context, timeout time.Duration) error {
	var taints []corev1.Taint
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		taints = taints[:0]
		for _, t := range node.Spec.Taints {
			if strings.HasPrefix(t.Key, "node.kubernetes.io/") {
				taints = append(taints, t)
			}
		}
		return len(taints) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("node %s still tainted %v after %s: %w", n.Name, taints, timeout, err)
	}
	return nil
}
