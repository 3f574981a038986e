package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/test/framework"
)

// These tests cover virt-controller's part of a VMI's life — launcher pod,
// Pending → Scheduling → Scheduled, failures explained on the VMI — against
// the real apiserver, scheduler and controller-manager. The test plays the
// kubelet of a worker node it registers itself, so it decides what the pod
// does; the virtkube node runs no launcher pods in this test.

// worker registers a Node that only this test's "kubelet" serves.
func worker(t *testing.T, s *framework.Server, name string) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("8"),
		corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"kubernetes.io/hostname": name, virtv1.NodeSchedulable: "true"}},
	}
	if _, err := s.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	// The node lifecycle controller taints a new Node concurrently.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := s.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		node.Status = corev1.NodeStatus{
			Capacity: capacity, Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "TestKubelet", LastHeartbeatTime: now, LastTransitionTime: now}},
		}
		_, err = s.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	renew := metav1.NewMicroTime(time.Now())
	if _, err := s.Client.CoordinationV1().Leases("kube-node-lease").Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To(int32(600)), RenewTime: &renew},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func crClient(t *testing.T, s *framework.Server) client.Client {
	scheme, err := bootstrap.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(s.RESTConfig, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newVMI(ns, name, node, image string) *virtv1.VirtualMachineInstance {
	return &virtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: virtv1.VirtualMachineInstanceSpec{
			NodeSelector: map[string]string{"kubernetes.io/hostname": node},
			Domain: virtv1.DomainSpec{
				Resources: virtv1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}},
				// No pod network: these tests are about compute, and the
				// test kubelet of the handler tests runs launchers in the
				// host's network namespace, which virt-handler never rewires.
				Devices: virtv1.Devices{AutoattachPodInterface: ptr.To(false), Disks: []virtv1.Disk{{Name: "root",
					DiskDevice: virtv1.DiskDevice{Disk: &virtv1.DiskTarget{Bus: virtv1.DiskBusVirtio}}}}},
			},
			Volumes: []virtv1.Volume{{Name: "root", VolumeSource: virtv1.VolumeSource{
				ContainerDisk: &virtv1.ContainerDiskSource{Image: image}}}},
		},
	}
}

// waitVMI polls until check accepts the VMI.
func waitVMI(t *testing.T, c client.Client, ns, name, what string, check func(*virtv1.VirtualMachineInstance) bool) *virtv1.VirtualMachineInstance {
	t.Helper()
	vmi := &virtv1.VirtualMachineInstance{}
	// Generous: guests boot under software emulation on a 2-core machine
	// that the rest of the suite keeps busy.
	framework.Eventually(t, 3*time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, string) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vmi); err != nil {
			return false, err.Error()
		}
		return check(vmi), fmt.Sprintf("want %s; phase=%s reason=%q conditions=%+v", what, vmi.Status.Phase, vmi.Status.Reason, vmi.Status.Conditions)
	})
	return vmi
}

// runningAndReady is the state a user waits for after creating a VMI.
func runningAndReady(v *virtv1.VirtualMachineInstance) bool {
	r := readyCondition(v)
	return v.Status.Phase == virtv1.Running && r != nil && r.Status == corev1.ConditionTrue
}

func readyCondition(vmi *virtv1.VirtualMachineInstance) *virtv1.VirtualMachineInstanceCondition {
	for i, c := range vmi.Status.Conditions {
		if c.Type == virtv1.VirtualMachineInstanceReady {
			return &vmi.Status.Conditions[i]
		}
	}
	return nil
}

func launcherPodOf(t *testing.T, s *framework.Server, vmi *virtv1.VirtualMachineInstance) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	framework.Eventually(t, 3*time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, string) {
		pods, err := s.Client.CoreV1().Pods(vmi.Namespace).List(ctx, metav1.ListOptions{LabelSelector: virtv1.CreatedByLabel + "=" + string(vmi.UID)})
		if err != nil || len(pods.Items) != 1 {
			return false, fmt.Sprintf("want one launcher pod, have %d (%v)", len(pods.Items), err)
		}
		pod = &pods.Items[0]
		return pod.Spec.NodeName != "", "launcher pod not scheduled yet"
	})
	return pod
}

// kubeletStatus writes pod status as the node's kubelet would.
func kubeletStatus(t *testing.T, s *framework.Server, pod *corev1.Pod, mutate func(*corev1.PodStatus)) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	fresh, err := s.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mutate(&fresh.Status)
	if _, err := s.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, fresh, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestVMILauncherPodAndPhases(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	worker(t, s, "worker-phases")
	c := crClient(t, s)
	ctx := ctxT(t, 2*time.Minute)

	vmi := newVMI(ns, "phases", "worker-phases", "registry.invalid/disk:1")
	if err := c.Create(ctx, vmi); err != nil {
		t.Fatal(err)
	}
	vmi = waitVMI(t, c, ns, "phases", "Scheduling", func(v *virtv1.VirtualMachineInstance) bool { return v.Status.Phase == virtv1.Scheduling })
	pod := launcherPodOf(t, s, vmi)
	if !strings.HasPrefix(pod.Name, "virt-launcher-phases-") {
		t.Errorf("launcher pod name = %s, want virt-launcher-phases-<suffix>", pod.Name)
	}
	if pod.Labels["app"] != "phases" || pod.Labels["kubevirt.io/domain"] != "phases" || pod.Labels["vmi.kubevirt.io/id"] != "phases" {
		t.Errorf("launcher pod labels = %v", pod.Labels)
	}
	if got := pod.Spec.Containers[0].Resources.Requests.Memory(); got.Cmp(resource.MustParse("128Mi")) <= 0 {
		t.Errorf("memory request %s does not exceed the guest's 128Mi", got)
	}

	// The image cannot be pulled: the VMI says so.
	kubeletStatus(t, s, pod, func(st *corev1.PodStatus) {
		st.ContainerStatuses = []corev1.ContainerStatus{{Name: "volumeroot", Image: "registry.invalid/disk:1",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "dial tcp: lookup registry.invalid: no such host"}}}}
	})
	vmi = waitVMI(t, c, ns, "phases", "Ready=False/ErrImagePull", func(v *virtv1.VirtualMachineInstance) bool {
		r := readyCondition(v)
		return r != nil && r.Reason == "ErrImagePull" && strings.Contains(r.Message, "no such host")
	})
	if vmi.Status.Phase != virtv1.Scheduling {
		t.Errorf("phase with an image pull error = %s, want Scheduling", vmi.Status.Phase)
	}

	// The pod runs: Scheduled on the worker, handed to virt-handler.
	kubeletStatus(t, s, pod, func(st *corev1.PodStatus) {
		st.Phase = corev1.PodRunning
		st.ContainerStatuses = []corev1.ContainerStatus{
			{Name: "compute", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
			{Name: "volumeroot", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
		}
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
	})
	vmi = waitVMI(t, c, ns, "phases", "Scheduled", func(v *virtv1.VirtualMachineInstance) bool { return v.Status.Phase == virtv1.Scheduled })
	if vmi.Status.NodeName != "worker-phases" {
		t.Errorf("nodeName = %q, want worker-phases", vmi.Status.NodeName)
	}
	var phases []string
	for _, p := range vmi.Status.PhaseTransitionTimestamps {
		phases = append(phases, string(p.Phase))
	}
	if strings.Join(phases, ",") != "Pending,Scheduling,Scheduled" {
		t.Errorf("phase transitions = %v, want Pending,Scheduling,Scheduled", phases)
	}
	out := kubectl(t, s, "", "get", "vmi", "phases", "-n", ns)
	if !strings.Contains(out, "Scheduled") || !strings.Contains(out, "worker-phases") {
		t.Errorf("kubectl get vmi:\n%s", out)
	}

	// Deleting the VMI deletes its pod; once the pod is gone, so is the VMI.
	if err := c.Delete(ctx, vmi); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, string) {
		p, err := s.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err == nil && p.DeletionTimestamp != nil {
			// The kubelet confirms the pod stopped.
			_ = s.Client.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
		}
		return false, "pod still there"
	})
	framework.Eventually(t, time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, string) {
		gone := &virtv1.VirtualMachineInstance{}
		err := c.Get(ctx, client.ObjectKeyFromObject(vmi), gone)
		return apierrors.IsNotFound(err), fmt.Sprintf("VMI still there: phase=%s finalizers=%v err=%v", gone.Status.Phase, gone.Finalizers, err)
	})
}

func TestVMIFailsWhenLauncherPodFails(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	worker(t, s, "worker-fails")
	c := crClient(t, s)
	if err := c.Create(ctxT(t, time.Minute), newVMI(ns, "fails", "worker-fails", "registry.invalid/disk:1")); err != nil {
		t.Fatal(err)
	}
	vmi := waitVMI(t, c, ns, "fails", "Scheduling", func(v *virtv1.VirtualMachineInstance) bool { return v.Status.Phase == virtv1.Scheduling })
	pod := launcherPodOf(t, s, vmi)
	kubeletStatus(t, s, pod, func(st *corev1.PodStatus) {
		st.Phase = corev1.PodFailed
		st.ContainerStatuses = []corev1.ContainerStatus{{Name: "compute", State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "libvirtd did not start"}}}}
	})
	vmi = waitVMI(t, c, ns, "fails", "Failed", func(v *virtv1.VirtualMachineInstance) bool { return v.Status.Phase == virtv1.Failed })
	if r := readyCondition(vmi); r == nil || !strings.Contains(r.Message, "libvirtd did not start") {
		t.Errorf("Ready condition of a failed VMI = %+v, want the container's message", r)
	}
	// A finished VMI keeps no pod.
	framework.Eventually(t, time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, string) {
		p, err := s.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && p.DeletionTimestamp != nil), "launcher pod of a failed VMI not deleted"
	})
}

// Without a node that runs virt-handler, the VMI says why it waits.
func TestVMIUnschedulableIsExplained(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	c := crClient(t, s)
	if err := c.Create(ctxT(t, time.Minute), newVMI(ns, "nowhere", "no-such-node", "registry.invalid/disk:1")); err != nil {
		t.Fatal(err)
	}
	waitVMI(t, c, ns, "nowhere", "PodScheduled=False/Unschedulable", func(v *virtv1.VirtualMachineInstance) bool {
		for _, c := range v.Status.Conditions {
			if string(c.Type) == "PodScheduled" && c.Status == corev1.ConditionFalse && c.Reason == "Unschedulable" && strings.Contains(c.Message, "node") {
				return v.Status.Phase == virtv1.Scheduling
			}
		}
		return false
	})
}
