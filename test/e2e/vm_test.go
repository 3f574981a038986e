package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/test/framework"
)

// guestTemplate is a VMI template (YAML, indented for spec.template) that
// boots the test guest from image.
func guestTemplate(labels, image string) string {
	return fmt.Sprintf(`  template:
    metadata:
      labels: {%s}
    spec:
      domain:
        resources: {requests: {memory: 128Mi}}
        devices:
          disks:
          - name: containerdisk
            disk: {bus: virtio}
      volumes:
      - name: containerdisk
        containerDisk: {image: %s}
`, labels, image)
}

// waitVM polls until check accepts the VM.
func waitVM(t *testing.T, c client.Client, ns, name string, timeout time.Duration, what string, check func(*virtv1.VirtualMachine) bool) *virtv1.VirtualMachine {
	t.Helper()
	vm := &virtv1.VirtualMachine{}
	framework.Eventually(t, timeout, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vm); err != nil {
			return false, err.Error()
		}
		return check(vm), fmt.Sprintf("want %s; printableStatus=%s ready=%v created=%v conditions=%+v",
			what, vm.Status.PrintableStatus, vm.Status.Ready, vm.Status.Created, vm.Status.Conditions)
	})
	return vm
}

// A VM with runStrategy Always gets a VMI of its name, owned by it, that
// boots the guest; the VM reports Running and ready. Patching runStrategy to
// Halted deletes the VMI (the guest shuts down) and the VM reports Stopped.
func TestVMRunStrategyAlwaysThenHalted(t *testing.T) {
	s := shared
	image := testGuestImage(t, s, "vm")
	ns := s.Namespace(t)
	c := crClient(t, s)

	kubectl(t, s, `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: testvm
spec:
  runStrategy: Always
`+guestTemplate("kubevirt.io/vm: testvm", image), "apply", "-n", ns, "-f", "-")

	vmi := waitVMIFor(t, c, ns, "testvm", 5*time.Minute, "Running and Ready", runningAndReady)
	if owner := metav1.GetControllerOf(vmi); owner == nil || owner.Kind != "VirtualMachine" || owner.Name != "testvm" {
		t.Errorf("VMI controller %+v, want VirtualMachine testvm", owner)
	}
	if vmi.Labels["kubevirt.io/vm"] != "testvm" {
		t.Errorf("VMI labels %v, want the template's", vmi.Labels)
	}
	vm := waitVM(t, c, ns, "testvm", time.Minute, "Running and ready", func(vm *virtv1.VirtualMachine) bool {
		return vm.Status.PrintableStatus == virtv1.VirtualMachineStatusRunning && vm.Status.Ready && vm.Status.Created
	})
	if vm.Status.RunStrategy != virtv1.RunStrategyAlways || vm.Status.ObservedGeneration != vm.Generation {
		t.Errorf("status.runStrategy %q observedGeneration %d (generation %d)", vm.Status.RunStrategy, vm.Status.ObservedGeneration, vm.Generation)
	}
	if out := kubectl(t, s, "", "get", "vm", "testvm", "-n", ns); !strings.Contains(out, "Running") || !strings.Contains(out, "True") {
		t.Errorf("kubectl get vm:\n%s", out)
	}

	kubectl(t, s, "", "patch", "vm", "testvm", "-n", ns, "--type=merge", "-p", `{"spec":{"runStrategy":"Halted"}}`)
	framework.Eventually(t, 3*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "testvm"}, &virtv1.VirtualMachineInstance{})
		return apierrors.IsNotFound(err), fmt.Sprintf("VMI still there (%v)", err)
	})
	waitVM(t, c, ns, "testvm", time.Minute, "Stopped", func(vm *virtv1.VirtualMachine) bool {
		return vm.Status.PrintableStatus == virtv1.VirtualMachineStatusStopped && !vm.Status.Ready && !vm.Status.Created
	})

	events, err := s.Client.CoreV1().Events(ns).List(ctxT(t, time.Minute), metav1.ListOptions{FieldSelector: "involvedObject.name=testvm,involvedObject.kind=VirtualMachine"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range events.Items {
		seen[e.Reason] = true
	}
	if !seen["SuccessfulCreate"] || !seen["SuccessfulDelete"] {
		t.Errorf("VM events %v, want SuccessfulCreate and SuccessfulDelete", seen)
	}
}

// A VMI replica set with two replicas creates two VMIs named after it;
// `kubectl scale` to one deletes one of them, and the status carries the
// replica count and the label selector the scale subresource reports.
func TestReplicaSetScaleDownWithKubectl(t *testing.T) {
	s := shared
	image := testGuestImage(t, s, "vmirs")
	ns := s.Namespace(t)
	c := crClient(t, s)

	kubectl(t, s, `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstanceReplicaSet
metadata:
  name: testrs
spec:
  replicas: 2
  selector: {matchLabels: {app: testrs}}
`+guestTemplate("app: testrs", image), "apply", "-n", ns, "-f", "-")

	replicas := func(ctx context.Context) ([]virtv1.VirtualMachineInstance, error) {
		list := &virtv1.VirtualMachineInstanceList{}
		err := c.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{"app": "testrs"})
		return list.Items, err
	}
	// Booting two emulated guests at once is slow here; a replica that
	// reached its node is enough.
	framework.Eventually(t, 5*time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, string) {
		vmis, err := replicas(ctx)
		if err != nil {
			return false, err.Error()
		}
		var phases []string
		for _, v := range vmis {
			phases = append(phases, v.Name+"="+string(v.Status.Phase))
		}
		if len(vmis) != 2 {
			return false, fmt.Sprintf("%d replicas: %v", len(vmis), phases)
		}
		for _, v := range vmis {
			if !strings.HasPrefix(v.Name, "testrs") || len(v.Name) != len("testrs")+5 {
				return false, "unexpected name " + v.Name
			}
			if owner := metav1.GetControllerOf(&v); owner == nil || owner.Name != "testrs" {
				return false, fmt.Sprintf("%s is not controlled by testrs: %+v", v.Name, v.OwnerReferences)
			}
			if v.Status.Phase != virtv1.Scheduled && v.Status.Phase != virtv1.Running {
				return false, fmt.Sprintf("replicas not on their node yet: %v", phases)
			}
		}
		return true, ""
	})
	rsStatus := func(ctx context.Context) (*virtv1.VirtualMachineInstanceReplicaSet, error) {
		rs := &virtv1.VirtualMachineInstanceReplicaSet{}
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "testrs"}, rs)
		return rs, err
	}
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		rs, err := rsStatus(ctx)
		if err != nil {
			return false, err.Error()
		}
		return rs.Status.Replicas == 2 && rs.Status.LabelSelector == "app=testrs",
			fmt.Sprintf("status %+v", rs.Status)
	})

	kubectl(t, s, "", "scale", "vmirs", "testrs", "-n", ns, "--replicas=1")
	framework.Eventually(t, 3*time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, string) {
		vmis, err := replicas(ctx)
		if err != nil {
			return false, err.Error()
		}
		rs, err := rsStatus(ctx)
		if err != nil {
			return false, err.Error()
		}
		return len(vmis) == 1 && rs.Status.Replicas == 1, fmt.Sprintf("%d VMIs, status.replicas %d", len(vmis), rs.Status.Replicas)
	})
	// The scale subresource reports what an HPA reads.
	out := kubectl(t, s, "", "get", "--raw", fmt.Sprintf("/apis/kubevirt.io/v1/namespaces/%s/virtualmachineinstancereplicasets/testrs/scale", ns))
	if !strings.Contains(out, `"selector":"app=testrs"`) || !strings.Contains(out, `"replicas":1`) {
		t.Errorf("scale subresource: %s", out)
	}
}
