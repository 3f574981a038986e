package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/virtkube/virtkube/test/framework"
)

// A clean stop and a second start on the same data dir keep every object:
// core objects, kubevirt.io objects in both versions, and the user's edits
// to the KubeVirt CR. A kill -9 (a crash) keeps them too.
func TestRestartKeepsObjects(t *testing.T) {
	s := framework.Start(t)
	ns := s.Namespace(t)

	kubectl(t, s, `apiVersion: v1
kind: ConfigMap
metadata: {name: kept}
data: {answer: "42"}
`, "apply", "-n", ns, "-f", "-")
	// As the seed does: the feature gates first, then the VM that needs one.
	gates, err := os.ReadFile("../testdata/seed/kubevirt-feature-gates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, string(gates), "apply", "-f", "-")
	seedVM, err := os.ReadFile("../testdata/seed/win10.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, string(seedVM), "apply", "-n", ns, "-f", "-")
	seedVMI, err := os.ReadFile("../testdata/seed/testvmi-nocloud2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, string(seedVMI), "apply", "-n", ns, "-f", "-")
	before := kubectl(t, s, "", "get", "vm,vmi,configmap", "-n", ns, "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name}/{.metadata.uid} {end}")

	// Clean stop: SIGTERM, exit status 0.
	if err := s.Stop(time.Minute); err != nil {
		t.Fatalf("stop after SIGTERM: %v\n%s", err, s.LogTail(30))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("warm start to ready: %s", s.StartupTime)
	after := kubectl(t, s, "", "get", "vm,vmi,configmap", "-n", ns, "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name}/{.metadata.uid} {end}")
	if before != after || !strings.Contains(after, "VirtualMachine/win10/") || !strings.Contains(after, "VirtualMachineInstance/testvmi-nocloud2/") {
		t.Fatalf("objects changed across a restart:\nbefore: %s\nafter:  %s", before, after)
	}
	if got := kubectl(t, s, "", "get", "kv", "kubevirt", "-n", "kubevirt", "-o", "jsonpath={.spec.configuration.developerConfiguration.featureGates}"); got != `["HardDisk","DataVolumes"]` {
		t.Errorf("KubeVirt feature gates after restart = %s, want the ones applied", got)
	}

	// Crash: SIGKILL the whole process group, then start again.
	s.Kill()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := kubectl(t, s, "", "get", "configmap", "kept", "-n", ns, "-o", "jsonpath={.data.answer}"); got != "42" {
		t.Errorf("configmap after a crash: answer = %q, want 42", got)
	}
	var node *corev1.Node
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		node, err = s.Client.CoreV1().Nodes().Get(ctx, strings.ToLower(hostname(t)), metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, "Ready=" + string(c.Status)
			}
		}
		return false, "no Ready condition"
	})
}

func hostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Flags that cannot work are refused before anything starts, naming the flag.
func TestServerRejectsBadFlags(t *testing.T) {
	bin, err := framework.Binary()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bind-address", "localhost:1"}, "--bind-address"},
		{[]string{"--api-port", "70000"}, "--api-port"},
		{[]string{"--pod-cidr", "192.168.0.0/24"}, "--pod-cidr"},
		{[]string{"--node-name", "Not_A_Name"}, "--node-name"},
	} {
		cmd := exec.Command(bin, append([]string{"server", "--data-dir", t.TempDir()}, tc.args...)...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("%v: want a non-zero exit, got %v", tc.args, err)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: message does not name %s:\n%s", tc.args, tc.want, out)
		}
	}
}
