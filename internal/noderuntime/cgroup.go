package noderuntime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// cgroupRoot is where the cgroup filesystems are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// v1Controllers are the cgroup v1 hierarchies a pod gets a group in;
// cpuacct counts the pod's CPU time, as kubelet's pod groups do.
var v1Controllers = []string{"memory", "cpu", "cpuacct", "pids"}

// podCgroup is a pod's cgroup: under cgroup v2 one directory
// <root>/virtkube/<uid>; under cgroup v1 one such directory per controller.
// The container script moves itself into it before it starts anything, so
// every process of the pod (virt-launcher, libvirtd, QEMU) is accounted and
// limited there.
type podCgroup struct {
	v2   bool
	dirs []string
}

func newPodCgroup(uid types.UID) podCgroup {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return podCgroup{v2: true, dirs: []string{filepath.Join(cgroupRoot, "virtkube", string(uid))}}
	}
	var c podCgroup
	seen := map[string]bool{}
	for _, ctrl := range v1Controllers {
		// Co-mounted controllers (cpu,cpuacct) are one hierarchy behind
		// two links: one group there.
		h, err := filepath.EvalSymlinks(filepath.Join(cgroupRoot, ctrl))
		if err != nil || seen[h] {
			continue
		}
		seen[h] = true
		c.dirs = append(c.dirs, filepath.Join(cgroupRoot, ctrl, "virtkube", string(uid)))
	}
	return c
}

// procsFiles are the files a process writes its pid to, to join the group.
func (c podCgroup) procsFiles() []string {
	out := make([]string, 0, len(c.dirs))
	for _, d := range c.dirs {
		out = append(out, filepath.Join(d, "cgroup.procs"))
	}
	return out
}

// podLimits are what the pod's containers ask for in total.
type podLimits struct {
	// MemoryBytes is the memory limit; 0 means none (not every container
	// has a limit, as for launcher pods, which only request memory).
	MemoryBytes int64
	// CPUMillis is the sum of CPU requests, for the group's CPU share.
	CPUMillis int64
}

func limitsOf(pod *corev1.Pod) podLimits {
	var l podLimits
	allLimited := true
	for _, c := range pod.Spec.Containers {
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			l.MemoryBytes += q.Value()
		} else {
			allLimited = false
		}
		if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
			l.CPUMillis += q.MilliValue()
		}
	}
	if !allLimited {
		l.MemoryBytes = 0
	}
	return l
}

// cpuShares converts CPU requests to cgroup v1 shares as kubelet does.
func cpuShares(millis int64) int64 {
	shares := millis * 1024 / 1000
	return max(shares, 2)
}

// cpuWeight converts shares to a cgroup v2 weight as kubelet does.
func cpuWeight(shares int64) int64 {
	return 1 + ((shares-2)*9999)/262142
}

// create makes the group and writes its limits.
func (c podCgroup) create(l podLimits) error {
	if c.v2 {
		// Controllers must be enabled down to the pod's parent.
		parent := filepath.Dir(c.dirs[0])
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return err
		}
		for _, d := range []string{cgroupRoot, parent} {
			_ = os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("+memory +cpu +pids"), 0)
		}
	}
	for _, d := range c.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("pod cgroup: %w", err)
		}
	}
	write := func(file, value string) error {
		for _, d := range c.dirs {
			p := filepath.Join(d, file)
			if _, err := os.Stat(p); err != nil {
				continue // this hierarchy does not have that file
			}
			if err := os.WriteFile(p, []byte(value), 0); err != nil {
				return fmt.Errorf("pod cgroup %s: %w", p, err)
			}
		}
		return nil
	}
	shares := cpuShares(l.CPUMillis)
	if c.v2 {
		if l.MemoryBytes > 0 {
			if err := write("memory.max", strconv.FormatInt(l.MemoryBytes, 10)); err != nil {
				return err
			}
		}
		return write("cpu.weight", strconv.FormatInt(cpuWeight(shares), 10))
	}
	if l.MemoryBytes > 0 {
		if err := write("memory.limit_in_bytes", strconv.FormatInt(l.MemoryBytes, 10)); err != nil {
			return err
		}
	}
	return write("cpu.shares", strconv.FormatInt(shares, 10))
}

// remove deletes the group once its processes are gone.
func (c podCgroup) remove() error {
	var errs []error
	for _, d := range c.dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove pod cgroup: %w", err))
		}
	}
	return errors.Join(errs...)
}
