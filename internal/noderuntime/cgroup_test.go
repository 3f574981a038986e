package noderuntime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestLimitsOf(t *testing.T) {
	container := func(limitMem, reqCPU string) corev1.Container {
		c := corev1.Container{Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{}, Requests: corev1.ResourceList{}}}
		if limitMem != "" {
			c.Resources.Limits[corev1.ResourceMemory] = resource.MustParse(limitMem)
		}
		if reqCPU != "" {
			c.Resources.Requests[corev1.ResourceCPU] = resource.MustParse(reqCPU)
		}
		return c
	}
	for _, tc := range []struct {
		name       string
		containers []corev1.Container
		want       podLimits
	}{
		{"launcher pod: requests only", []corev1.Container{container("", "100m"), container("", "10m")}, podLimits{CPUMillis: 110}},
		{"all limited", []corev1.Container{container("1Gi", "1"), container("8Mi", "")}, podLimits{MemoryBytes: 1<<30 + 8<<20, CPUMillis: 1000}},
		{"one unlimited container lifts the limit", []corev1.Container{container("1Gi", ""), container("", "")}, podLimits{}},
	} {
		pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: tc.containers}}
		if got := limitsOf(pod); got != tc.want {
			t.Errorf("%s: limits = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if cpuShares(100) != 102 || cpuShares(0) != 2 || cpuWeight(2) != 1 || cpuWeight(262144) != 10000 {
		t.Errorf("shares/weight conversions: %d %d %d %d", cpuShares(100), cpuShares(0), cpuWeight(2), cpuWeight(262144))
	}
}

// On a cgroup v1 tree (as on this machine) the pod gets a group per
// controller, with its limits written.
func TestPodCgroupV1(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"memory", "cpu,cpuacct", "pids"} {
		if err := os.MkdirAll(filepath.Join(root, c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// cpu and cpuacct co-mounted, as many distributions do: one group.
	for _, l := range []string{"cpu", "cpuacct"} {
		if err := os.Symlink("cpu,cpuacct", filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	old := cgroupRoot
	cgroupRoot = root
	defer func() { cgroupRoot = old }()

	cg := newPodCgroup("uid-1")
	if len(cg.dirs) != 3 || cg.v2 {
		t.Fatalf("dirs = %v (v2 %v)", cg.dirs, cg.v2)
	}
	// A fake cgroupfs has no control files until the kernel makes them;
	// make the ones create writes.
	for _, d := range cg.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for file, dir := range map[string]string{"memory.limit_in_bytes": "memory", "cpu.shares": "cpu"} {
		if err := os.WriteFile(filepath.Join(root, dir, "virtkube", "uid-1", file), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := cg.create(podLimits{MemoryBytes: 1 << 30, CPUMillis: 500}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "memory", "virtkube", "uid-1", "memory.limit_in_bytes")); string(b) != "1073741824" {
		t.Errorf("memory limit = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "cpu", "virtkube", "uid-1", "cpu.shares")); string(b) != "512" {
		t.Errorf("cpu shares = %q", b)
	}
	if got := strings.Join(cg.procsFiles(), ","); !strings.Contains(got, filepath.Join(root, "pids", "virtkube", "uid-1", "cgroup.procs")) {
		t.Errorf("procs files = %s", got)
	}
}
