package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/test/guest"
)

// target is the server a burst runs against.
type target struct {
	client      client.WithWatch
	kubeletRoot string
	serverPID   int
}

// burst is one burst's configuration.
type burst struct {
	guest      string // halt or linux
	image      string
	memory     resource.Quantity
	cpu        *resource.Quantity // nil: the server's default
	podNetwork bool
	grace      int64 // terminationGracePeriodSeconds
	timeout    time.Duration
}

// vmiTimes is what is seen of one VMI, on the bench's clock.
type vmiTimes struct {
	created, scheduled, running, ready, deleted, gone time.Time
	podUID                                            types.UID
	// podCPU is the CPU seconds of the launcher pod's cgroup, last read
	// before the cgroup went with the pod.
	podCPU float64
}

// run creates n VMIs at once in a fresh namespace, follows them to Running
// (and, for the linux guest, its ready line on the serial console),
// measures their pods, deletes them and follows them until they are gone.
func (b burst) run(ctx context.Context, t target, n, runNo int) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"}}
	if err := t.client.Create(ctx, ns); err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	defer func() { _ = t.client.Delete(context.WithoutCancel(ctx), ns) }()
	w, err := t.client.Watch(ctx, &virtv1.VirtualMachineInstanceList{}, client.InNamespace(ns.Name))
	if err != nil {
		return nil, fmt.Errorf("watch VMIs: %w", err)
	}
	defer func() { w.Stop() }()

	cpu0, err := processCPU(t.serverPID)
	if err != nil {
		return nil, err
	}
	vmis := make(map[string]*vmiTimes, n)
	errs := make(chan error, n)
	for i := range n {
		v := b.vmi(ns.Name, fmt.Sprintf("vmi-%d", i))
		times := &vmiTimes{created: time.Now()}
		vmis[v.Name] = times
		go func() { errs <- t.client.Create(ctx, v) }()
	}
	for range n {
		if err := <-errs; err != nil {
			return nil, fmt.Errorf("create VMI: %w", err)
		}
	}

	// Up: watch events and, for the linux guest, the serial logs.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	up := func() bool {
		for _, v := range vmis {
			if v.running.IsZero() || (b.guest == "linux" && v.ready.IsZero()) {
				return false
			}
		}
		return true
	}
	for !up() {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				if w, err = t.client.Watch(ctx, &virtv1.VirtualMachineInstanceList{}, client.InNamespace(ns.Name)); err != nil {
					return nil, fmt.Errorf("watch VMIs: %w", err)
				}
				continue
			}
			if err := observe(vmis, ev, time.Now()); err != nil {
				return nil, err
			}
		case <-tick.C:
			if b.guest == "linux" {
				t.checkSerialLogs(vmis, time.Now())
			}
		case <-ctx.Done():
			var scheduled, running int
			for _, v := range vmis {
				if !v.scheduled.IsZero() {
					scheduled++
				}
				if !v.running.IsZero() {
					running++
				}
			}
			return nil, fmt.Errorf("VMIs not up (%d of %d Scheduled, %d Running; `kubectl describe` one in namespace %s): %w", scheduled, n, running, ns.Name, ctx.Err())
		}
	}

	r := &Result{Guest: b.guest, N: n, Run: runNo, samples: map[string][]float64{}}
	guestMiB := float64(b.memory.Value()) / (1 << 20)
	for _, v := range vmis {
		pss, byProcess, err := podPSS(v.podUID)
		if err != nil {
			return nil, err
		}
		r.samples["pss"] = append(r.samples["pss"], pss)
		r.samples["overhead"] = append(r.samples["overhead"], pss-guestMiB)
		for comm, x := range byProcess {
			r.samples[pssPrefix+comm] = append(r.samples[pssPrefix+comm], x.pss)
			r.samples[cpuPrefix+comm] = append(r.samples[cpuPrefix+comm], x.cpu)
		}
	}

	// Down: delete them all at once.
	readPodCPU := func() {
		for _, v := range vmis {
			if x, err := podCPU(v.podUID); err == nil {
				v.podCPU = x
			}
		}
	}
	readPodCPU()
	for name, v := range vmis {
		v.deleted = time.Now()
		obj := &virtv1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: name}}
		go func() { errs <- client.IgnoreNotFound(t.client.Delete(ctx, obj)) }()
	}
	for range n {
		if err := <-errs; err != nil {
			return nil, fmt.Errorf("delete VMI: %w", err)
		}
	}
	recheck := time.NewTicker(time.Second)
	defer recheck.Stop()
	for !allGone(vmis) {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				if w, err = t.client.Watch(ctx, &virtv1.VirtualMachineInstanceList{}, client.InNamespace(ns.Name)); err != nil {
					return nil, fmt.Errorf("watch VMIs: %w", err)
				}
				continue
			}
			if err := observe(vmis, ev, time.Now()); err != nil {
				return nil, err
			}
		case <-recheck.C:
			readPodCPU()
			// A watch that broke may have missed a deletion.
			for name, v := range vmis {
				err := t.client.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: name}, &virtv1.VirtualMachineInstance{})
				if apierrors.IsNotFound(err) && v.gone.IsZero() {
					v.gone = time.Now()
				}
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("VMIs not gone: %w", ctx.Err())
		}
	}
	cpu1, err := processCPU(t.serverPID)
	if err != nil {
		return nil, err
	}

	first, last := time.Time{}, time.Time{}
	var podCPUSum float64
	for _, v := range vmis {
		podCPUSum += v.podCPU
		r.samples["scheduled"] = append(r.samples["scheduled"], v.scheduled.Sub(v.created).Seconds())
		r.samples["running"] = append(r.samples["running"], v.running.Sub(v.created).Seconds())
		if !v.ready.IsZero() {
			r.samples["ready"] = append(r.samples["ready"], v.ready.Sub(v.created).Seconds())
		}
		r.samples["gone"] = append(r.samples["gone"], v.gone.Sub(v.deleted).Seconds())
		if first.IsZero() || v.created.Before(first) {
			first = v.created
		}
		if v.running.After(last) {
			last = v.running
		}
	}
	r.summarize()
	r.RunningPerSecond = float64(n) / last.Sub(first).Seconds()
	r.ServerCPUPerVMI = (cpu1 - cpu0) / float64(n)
	r.PodCPUPerVMI = podCPUSum / float64(n)
	return r, nil
}

// vmi is the burst's VMI: the guest's containerDisk on virtio, the given
// memory, the pod network unless turned off.
func (b burst) vmi(ns, name string) *virtv1.VirtualMachineInstance {
	requests := corev1.ResourceList{corev1.ResourceMemory: b.memory}
	if b.cpu != nil {
		requests[corev1.ResourceCPU] = *b.cpu
	}
	return &virtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: virtv1.VirtualMachineInstanceSpec{
			TerminationGracePeriodSeconds: ptr.To(b.grace),
			Domain: virtv1.DomainSpec{
				Resources: virtv1.ResourceRequirements{Requests: requests},
				Devices: virtv1.Devices{AutoattachPodInterface: ptr.To(b.podNetwork), Disks: []virtv1.Disk{{Name: "root",
					DiskDevice: virtv1.DiskDevice{Disk: &virtv1.DiskTarget{Bus: virtv1.DiskBusVirtio}}}}},
			},
			Volumes: []virtv1.Volume{{Name: "root", VolumeSource: virtv1.VolumeSource{
				ContainerDisk: &virtv1.ContainerDiskSource{Image: b.image}}}},
		},
	}
}

// observe records what a watch event shows of a VMI. A phase seen late
// also dates the phases before it that were skipped.
func observe(vmis map[string]*vmiTimes, ev watch.Event, now time.Time) error {
	v, ok := ev.Object.(*virtv1.VirtualMachineInstance)
	if !ok {
		return nil
	}
	t := vmis[v.Name]
	if t == nil {
		return nil
	}
	if ev.Type == watch.Deleted {
		if t.gone.IsZero() {
			t.gone = now
		}
		return nil
	}
	for uid := range v.Status.ActivePods {
		t.podUID = uid
	}
	switch v.Status.Phase {
	case virtv1.Failed:
		if t.deleted.IsZero() {
			return fmt.Errorf("VMI %s failed: %s", v.Name, v.Status.Reason)
		}
	case virtv1.Running:
		if t.running.IsZero() {
			t.running = now
		}
		fallthrough
	case virtv1.Scheduled:
		if t.scheduled.IsZero() {
			t.scheduled = now
		}
	}
	return nil
}

func allGone(vmis map[string]*vmiTimes) bool {
	for _, v := range vmis {
		if v.gone.IsZero() {
			return false
		}
	}
	return true
}

// checkSerialLogs marks the VMIs whose guest printed its ready line: the
// serial console's log in the launcher pod's sockets emptyDir.
func (t target) checkSerialLogs(vmis map[string]*vmiTimes, now time.Time) {
	for _, v := range vmis {
		if v.running.IsZero() || !v.ready.IsZero() || v.podUID == "" {
			continue
		}
		log := filepath.Join(t.kubeletRoot, "pods", string(v.podUID), "volumes", "kubernetes.io~empty-dir", "sockets", "serial0.log")
		if body, err := os.ReadFile(log); err == nil && strings.Contains(string(body), guest.ReadyMarker) {
			v.ready = now
		}
	}
}

// podCgroupFile is file in the launcher pod's cgroup (the node runtime puts
// each pod in <hierarchy>/virtkube/<pod uid>), from the first of the
// hierarchies that has it.
func podCgroupFile(uid types.UID, file string, hierarchies ...string) ([]byte, error) {
	var err error
	for _, h := range hierarchies {
		var b []byte
		if b, err = os.ReadFile(filepath.Join("/sys/fs/cgroup", h, "virtkube", string(uid), file)); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("cgroup of pod %s: %w", uid, err)
}

// pssPrefix and cpuPrefix mark the samples of one process name's PSS and
// CPU time.
const (
	pssPrefix = "pss:"
	cpuPrefix = "cpu:"
)

// processUse is what the processes of one name in a pod use.
type processUse struct {
	pss float64 // MiB
	cpu float64 // seconds so far
}

// podPSS is the PSS, in MiB, of every process in the pod's cgroup, in total,
// and the PSS and CPU time so far by process name.
func podPSS(uid types.UID) (float64, map[string]processUse, error) {
	procs, err := podCgroupFile(uid, "cgroup.procs", "memory", "pids", "cpu", "systemd", "unified", "")
	if err != nil {
		return 0, nil, err
	}
	var total float64
	byProcess := map[string]processUse{}
	for _, pid := range strings.Fields(string(procs)) {
		n, _ := strconv.Atoi(pid)
		body, err := os.ReadFile(filepath.Join("/proc", pid, "smaps_rollup"))
		comm, err2 := os.ReadFile(filepath.Join("/proc", pid, "comm"))
		cpu, err3 := processCPU(n)
		if err != nil || err2 != nil || err3 != nil {
			continue // exited meanwhile
		}
		name := strings.TrimSpace(string(comm))
		u := byProcess[name]
		u.cpu += cpu
		for _, line := range strings.Split(string(body), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				kib, _ := strconv.ParseFloat(f[1], 64)
				total += kib / 1024
				u.pss += kib / 1024
			}
		}
		byProcess[name] = u
	}
	return total, byProcess, nil
}

// podCPU is the CPU seconds the pod's processes used so far: cpuacct.usage
// (ns) under cgroup v1, cpu.stat's usage_usec under v2.
func podCPU(uid types.UID) (float64, error) {
	if b, err := podCgroupFile(uid, "cpuacct.usage", "cpuacct", "cpu,cpuacct"); err == nil {
		ns, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		return ns / 1e9, err
	}
	b, err := podCgroupFile(uid, "cpu.stat", "")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "usage_usec" {
			us, err := strconv.ParseFloat(f[1], 64)
			return us / 1e6, err
		}
	}
	return 0, fmt.Errorf("cgroup of pod %s: no usage_usec in cpu.stat", uid)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const clockTicks = 100

// processCPU is the user and system CPU seconds of process pid so far.
func processCPU(pid int) (float64, error) {
	body, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("server process CPU: %w", err)
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(body), ')')
	if i < 0 {
		return 0, errors.New("server process CPU: unreadable /proc stat")
	}
	f := strings.Fields(string(body[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("server process CPU: short /proc stat")
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("server process CPU: %w", err)
	}
	return (utime + stime) / clockTicks, nil
}
