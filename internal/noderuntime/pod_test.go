package noderuntime

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/google/go-containerregistry/pkg/v1/empty"

	"github.com/virtkube/virtkube/internal/noderuntime/image"
	"github.com/virtkube/virtkube/test/containerdisk"
)

func TestLauncherArgvSubcommands(t *testing.T) {
	tests := []struct {
		name string
		c    corev1.Container
		want []string
		bad  bool
	}{
		{"virt-launcher gets --private-libvirt",
			corev1.Container{Command: []string{"/usr/bin/virt-launcher", "--name", "v"}},
			[]string{"/bin/virtkube", "virt-launcher", "--name", "v", "--private-libvirt"}, false},
		{"not twice",
			corev1.Container{Command: []string{"/usr/bin/virt-launcher", "--private-libvirt"}},
			[]string{"/bin/virtkube", "virt-launcher", "--private-libvirt"}, false},
		{"args follow the command; other subcommands as they are",
			corev1.Container{Command: []string{"/usr/bin/virt-handler"}, Args: []string{"--x"}},
			[]string{"/bin/virtkube", "virt-handler", "--x"}, false},
		{"no command", corev1.Container{Name: "c", Args: []string{"x"}}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := launcherArgv(&tt.c, "/bin/virtkube", "")
			if (err != nil) != tt.bad || !slices.Equal(got, tt.want) {
				t.Errorf("launcherArgv = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestCheckPod(t *testing.T) {
	emptyDir := corev1.Volume{Name: "sockets", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	tests := []struct {
		name       string
		spec       corev1.PodSpec
		wantReason string
		wantInMsg  string
	}{
		{"emptyDirs only", corev1.PodSpec{Volumes: []corev1.Volume{emptyDir}}, "", ""},
		{"hostPath", corev1.PodSpec{Volumes: []corev1.Volume{emptyDir, {Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/x"}}}}},
			ReasonUnsupportedVolume, `volume "h" is a hostPath volume: this node runtime supports only emptyDir, secret and persistentVolumeClaim volumes so far`},
		{"PVC", corev1.PodSpec{Volumes: []corev1.Volume{{Name: "p", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}}}}, "", ""},
		{"block PVC", corev1.PodSpec{
			Volumes:    []corev1.Volume{{Name: "p", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}}},
			Containers: []corev1.Container{{Name: "compute", VolumeDevices: []corev1.VolumeDevice{{Name: "p", DevicePath: "/dev/p"}}}},
		}, "", ""},
		{"secret", corev1.PodSpec{Volumes: []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}}}}, "", ""},
		{"configMap", corev1.PodSpec{Volumes: []corev1.Volume{{Name: "c", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}}}},
			ReasonUnsupportedVolume, "come later"},
		{"init containers", corev1.PodSpec{InitContainers: []corev1.Container{{Name: "i"}}}, "", ""},
		{"hostNetwork", corev1.PodSpec{HostNetwork: true}, ReasonUnsupportedPodSpec, "hostNetwork"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := checkPod(&corev1.Pod{Spec: tt.spec})
			switch {
			case tt.wantReason == "" && r != nil:
				t.Errorf("rejected: %+v", r)
			case tt.wantReason != "" && (r == nil || r.Reason != tt.wantReason || !strings.Contains(r.Message, tt.wantInMsg)):
				t.Errorf("checkPod = %+v; want %s with %q", r, tt.wantReason, tt.wantInMsg)
			}
		})
	}
}

func testWorker(t *testing.T) *podWorker {
	r := &Runtime{cfg: RuntimeConfig{KubeletRoot: "/kr", LauncherImagePrefix: "virtkube.local/virt-launcher:"}}
	return newPodWorker(r, "0123abcd-0000-0000-0000-000000000000")
}

func launcherPod() *corev1.Pod {
	disks := corev1.VolumeMount{Name: "container-disks", MountPath: "/var/run/kubevirt/container-disks"}
	bin := corev1.VolumeMount{Name: "virt-bin-share-dir", MountPath: "/var/run/virtkube/bin", ReadOnly: true}
	serve := func(vol string) []string {
		return []string{"/var/run/virtkube/bin/container-disk", "--socket", "/var/run/kubevirt/container-disks/" + vol + ".sock"}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-x", UID: "0123abcd-0000-0000-0000-000000000000"},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{
				{Name: "sockets", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "container-disks", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "virt-bin-share-dir", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "other", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}},
			},
			InitContainers: []corev1.Container{
				{Name: "container-disk-binary", Image: "virtkube.local/virt-launcher:v1",
					Command:      []string{"/usr/bin/container-disk", "--copy-to", "/var/run/virtkube/bin/container-disk"},
					VolumeMounts: []corev1.VolumeMount{{Name: "virt-bin-share-dir", MountPath: "/var/run/virtkube/bin"}}},
			},
			Containers: []corev1.Container{
				{Name: "compute", Image: "virtkube.local/virt-launcher:v1", Command: []string{"/usr/bin/virt-launcher"},
					VolumeMounts: []corev1.VolumeMount{{Name: "sockets", MountPath: "/var/run/kubevirt/sockets"}, disks}},
				{Name: "volumeroot", Image: "127.0.0.1:5000/disk:v1", Command: serve("root"), VolumeMounts: []corev1.VolumeMount{disks, bin}},
				{Name: "volumedata", Image: "127.0.0.1:5000/disk:v2", Command: serve("data"), VolumeMounts: []corev1.VolumeMount{disks, bin}},
				{Name: "sidecar", Image: "busybox"},
				{Name: "elsewhere", Image: "x", Command: []string{"/bin/sleep"}, VolumeMounts: []corev1.VolumeMount{disks}},
				{Name: "onhost", Image: "x", Command: []string{"/o/prog"}, VolumeMounts: []corev1.VolumeMount{{Name: "other", MountPath: "/o"}}},
			},
		},
	}
}

// An image container's command runs from the volume it is on; a command
// elsewhere cannot run here, and the error says why.
func TestImageArgv(t *testing.T) {
	w := testWorker(t)
	pod := launcherPod()
	emptyDirs := "/kr/pods/0123abcd-0000-0000-0000-000000000000/volumes/kubernetes.io~empty-dir/"
	tests := []struct {
		container string
		want      []string
		err       string
	}{
		{container: "volumeroot", want: []string{emptyDirs + "virt-bin-share-dir/container-disk", "--socket", "/var/run/kubevirt/container-disks/root.sock"}},
		{container: "sidecar", err: "it has no command"},
		{container: "elsewhere", err: "command /bin/sleep is on none of its volumes"},
		{container: "onhost", err: "command /o/prog is on none of its volumes"},
	}
	for _, tt := range tests {
		t.Run(tt.container, func(t *testing.T) {
			var spec *corev1.Container
			for i := range pod.Spec.Containers {
				if pod.Spec.Containers[i].Name == tt.container {
					spec = &pod.Spec.Containers[i]
				}
			}
			got, err := w.imageArgv(pod, spec)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("imageArgv = %v, %v; want error with %q", got, err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("imageArgv = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// The launcher image's programs are virtkube's subcommands, or programs
// installed next to it.
func TestLauncherArgv(t *testing.T) {
	bin := t.TempDir()
	virtkube := filepath.Join(bin, "virtkube")
	for _, f := range []string{virtkube, filepath.Join(bin, "container-disk")} {
		if err := os.WriteFile(f, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("virtkube", filepath.Join(bin, "virt-launcher")); err != nil {
		t.Fatal(err)
	}
	pod := launcherPod()
	got, err := launcherArgv(&pod.Spec.InitContainers[0], virtkube, "/kr/qemu-capabilities")
	if want := []string{filepath.Join(bin, "container-disk"), "--copy-to", "/var/run/virtkube/bin/container-disk"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("init container argv = %v, %v; want %v", got, err, want)
	}
	got, err = launcherArgv(&pod.Spec.Containers[0], virtkube, "/kr/qemu-capabilities")
	if want := []string{virtkube, "virt-launcher", "--private-libvirt", "--qemu-capabilities-cache=/kr/qemu-capabilities"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("compute argv = %v, %v; want %v", got, err, want)
	}

	// `make build` installs virt-launcher as a program of its own.
	launcher := filepath.Join(bin, "virt-launcher")
	if err := os.Remove(launcher); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(launcher, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err = launcherArgv(&pod.Spec.Containers[0], virtkube, "/kr/qemu-capabilities")
	if want := []string{launcher, "--private-libvirt", "--qemu-capabilities-cache=/kr/qemu-capabilities"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("compute argv with a virt-launcher program = %v, %v; want %v", got, err, want)
	}
}

func TestMounts(t *testing.T) {
	w := testWorker(t)
	pod := launcherPod()
	got, err := w.mounts(pod, w.container(&pod.Spec.Containers[0], false))
	if err != nil {
		t.Fatal(err)
	}
	podDir := "/kr/pods/0123abcd-0000-0000-0000-000000000000"
	want := []bindMount{
		{Source: podDir + "/containers/compute/rootfs/var/run/kubevirt-ephemeral-disks", Target: "/var/run/kubevirt-ephemeral-disks"},
		{Source: podDir + "/containers/compute/rootfs/var/run/kubevirt-private", Target: "/var/run/kubevirt-private"},
		{Source: podDir + "/volumes/kubernetes.io~empty-dir/sockets", Target: "/var/run/kubevirt/sockets"},
		{Source: podDir + "/volumes/kubernetes.io~empty-dir/container-disks", Target: "/var/run/kubevirt/container-disks"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("mounts =\n%+v\nwant\n%+v", got, want)
	}
	// An image container gets its volumes only: the launcher's scratch
	// paths are the launcher's.
	got, err = w.mounts(pod, w.container(&pod.Spec.Containers[1], false))
	want = []bindMount{
		{Source: podDir + "/volumes/kubernetes.io~empty-dir/container-disks", Target: "/var/run/kubevirt/container-disks"},
		{Source: podDir + "/volumes/kubernetes.io~empty-dir/virt-bin-share-dir", Target: "/var/run/virtkube/bin", ReadOnly: true},
	}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("containerDisk mounts = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []corev1.VolumeMount{
		{Name: "other", MountPath: "/o"},
		{Name: "sockets", MountPath: "/s", SubPath: "../x"},
		{Name: "sockets", MountPath: "/s", SubPathExpr: "$(X)"},
		{Name: "sockets", MountPath: "rel"},
	} {
		c := corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{bad}}
		if _, err := w.mounts(pod, &container{name: "c", spec: &c}); err == nil {
			t.Errorf("mount %+v accepted", bad)
		}
	}
}

func TestPullBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 6: 5 * time.Minute, 50: 5 * time.Minute} {
		if got := pullBackoff(n); got != want {
			t.Errorf("pullBackoff(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestGracePeriod(t *testing.T) {
	meta := filepath.Join(t.TempDir(), "pod.json")
	if err := writePodMeta(meta, &corev1.Pod{Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](45)}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		meta string
		want time.Duration
	}{
		{"deletion's", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionGracePeriodSeconds: ptr.To[int64](5)}, Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](45)}}, meta, 5 * time.Second},
		{"force", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionGracePeriodSeconds: ptr.To[int64](0)}}, meta, 0},
		{"spec's", &corev1.Pod{Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](7)}}, meta, 7 * time.Second},
		{"recorded, pod unknown", nil, meta, 45 * time.Second},
		{"default", nil, "/nonexistent", 30 * time.Second},
	}
	for _, tt := range tests {
		if got := gracePeriod(tt.pod, tt.meta); got != tt.want {
			t.Errorf("%s: gracePeriod = %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	line := "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
	start, state, err := parseStat(line)
	if err != nil || start != 987654 || state != 'S' {
		t.Errorf("parseStat = %d, %c, %v", start, state, err)
	}
	if _, _, err := parseStat("1 (x) S 1"); err == nil {
		t.Error("short stat accepted")
	}
	// This process: alive with its own start time, not with another.
	self := os.Getpid()
	st, _, err := procStat(self)
	if err != nil || !alive(self, st) || alive(self, st+1) {
		t.Errorf("alive(self) wrong: %d, %v", st, err)
	}
	if d := time.Since(startedAt(st)); d < 0 || d > time.Hour {
		t.Errorf("this process started %s ago?", d)
	}
}

func TestPodNetworkNames(t *testing.T) {
	n := podNetworkOf("3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b")
	if n.Netns != "vk-3f2a1b4c" || n.HostVeth != "vk3f2a1b4c" || n.NetnsPath() != "/run/netns/vk-3f2a1b4c" {
		t.Errorf("names = %+v", n)
	}
}

// A containerDisk is pulled and its disk found for its container; a
// missing image is ErrImagePull first, ImagePullBackOff after a failed
// retry, with kubelet's back-off between attempts.
func TestPullImage(t *testing.T) {
	registry := containerdisk.StartRegistry(t)
	diskFile := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(diskFile, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	ref, err := containerdisk.Push(context.Background(), registry, "disk", "v1", diskFile)
	if err != nil {
		t.Fatal(err)
	}
	store, err := image.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &Runtime{cfg: RuntimeConfig{KubeletRoot: t.TempDir(), Images: store, LauncherImagePrefix: "virtkube.local/virt-launcher:"}}
	w := newPodWorker(r, "0123abcd-0000-0000-0000-000000000000")
	pod := launcherPod()
	pod.Spec.Containers[1].Image = ref
	pod.Spec.Containers[2].Image = registry + "/disk:missing"

	good := w.container(&pod.Spec.Containers[1], false)
	w.pullImage(good)
	if !good.pulled || good.waiting != nil || !strings.HasPrefix(good.imageID, registry+"/disk@sha256:") {
		t.Fatalf("after a good pull: %+v (waiting %+v)", good, good.waiting)
	}
	if body, err := os.ReadFile(good.diskFile); err != nil || len(body) != 4096 {
		t.Errorf("disk %s: %d bytes, %v", good.diskFile, len(body), err)
	}

	bad := w.container(&pod.Spec.Containers[2], false)
	for i, want := range []string{image.ReasonErrImagePull, ReasonImagePullBackOff, ReasonImagePullBackOff} {
		delay := w.pullImage(bad)
		if bad.pulled || bad.waiting == nil || bad.waiting.Reason != want || !strings.Contains(bad.waiting.Message, "disk:missing") {
			t.Fatalf("attempt %d: %+v", i+1, bad.waiting)
		}
		if wantDelay := pullBackoff(i + 1); delay != wantDelay {
			t.Errorf("attempt %d: retry in %s, want %s", i+1, delay, wantDelay)
		}
		// Within the back-off nothing is pulled.
		if d := w.pullImage(bad); d <= 0 || d > delay || bad.pullFailures != i+1 {
			t.Errorf("attempt %d: pulled again within the back-off (%s, %d failures)", i+1, d, bad.pullFailures)
		}
		bad.nextPull = time.Time{}
	}
	if st := w.containerState(bad); st.Waiting == nil || st.Waiting.Reason != ReasonImagePullBackOff {
		t.Errorf("state of an unpullable container: %+v", st)
	}

	// An image that is no containerDisk cannot run here.
	notDisk, err := containerdisk.PushImage(context.Background(), registry, "app", "v1", empty.Image)
	if err != nil {
		t.Fatal(err)
	}
	pod.Spec.Containers[3].Image = notDisk
	other := w.container(&pod.Spec.Containers[3], false)
	w.pullImage(other)
	if other.pulled || other.waiting == nil || other.waiting.Reason != ReasonCreateContainerError {
		t.Errorf("an image that is no containerDisk: %+v", other.waiting)
	}
}

// A failed container with terminationMessagePolicy FallbackToLogsOnError —
// a CDI-style importer, or an init container — has the tail of its log as
// its termination message, from the moment its end is seen; a restarted
// runtime, which finds the ended containers in the pod's files, reports
// the same status.
func TestTerminationMessageFromLog(t *testing.T) {
	root := t.TempDir()
	r := &Runtime{cfg: RuntimeConfig{KubeletRoot: root, LauncherImagePrefix: "virtkube.local/virt-launcher:"}}
	fallback := corev1.TerminationMessageFallbackToLogsOnError
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "importer-x", UID: "0123abcd-0000-0000-0000-000000000000"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			InitContainers: []corev1.Container{
				{Name: "init", Image: "virtkube.local/virt-launcher:v1", TerminationMessagePolicy: fallback},
			},
			Containers: []corev1.Container{
				{Name: "importer", Image: "virtkube.local/virt-launcher:v1", TerminationMessagePolicy: fallback},
				{Name: "fileonly", Image: "virtkube.local/virt-launcher:v1", TerminationMessagePolicy: corev1.TerminationMessageReadFile},
				{Name: "fine", Image: "virtkube.local/virt-launcher:v1", TerminationMessagePolicy: fallback},
			},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	w := newPodWorker(r, pod.UID)
	if err := os.MkdirAll(filepath.Join(w.dir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}

	// Each container runs as the runtime runs it: output to its log, and
	// its exit recorded as its wrapper records it.
	scripts := map[string]string{
		"init":     `echo "copied 3 files"; echo "copy: no space left on device" >&2; exit 1`,
		"importer": `seq 1 100; echo "cdi-importer: unable to read source: 404 Not Found" >&2; exit 1`,
		"fileonly": `echo "cdi-importer: boom" >&2; exit 1`,
		"fine":     `echo "all done"; exit 0`,
	}
	for _, name := range []string{"init", "importer", "fileonly", "fine"} {
		logf, err := os.OpenFile(w.logFile(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/bin/sh", "-c", `( `+scripts[name]+` ); rc=$?; echo "$rc" >"$1"; exit "$rc"`, "sh", w.exitFile(name))
		cmd.Stdout, cmd.Stderr = logf, logf
		p, err := startProcess(cmd)
		logf.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := writePidFile(w.pidFile(name), p); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("container %s did not end", name)
		}
		c := w.container(containerSpec(pod, name))
		c.proc, c.startedAt = p, p.Started
		w.advance(pod, c)
	}

	// The importer's last 80 lines: the first 21 of its 101 go.
	var importerTail strings.Builder
	for i := 22; i <= 100; i++ {
		fmt.Fprintf(&importerTail, "%d\n", i)
	}
	importerTail.WriteString("cdi-importer: unable to read source: 404 Not Found\n")
	wantMessages := map[string]string{
		"importer": importerTail.String(),
		"fileonly": "",
		"fine":     "",
	}
	check := func(when string, st corev1.PodStatus) {
		t.Helper()
		if len(st.InitContainerStatuses) != 1 || len(st.ContainerStatuses) != 3 {
			t.Fatalf("%s: statuses %+v %+v", when, st.InitContainerStatuses, st.ContainerStatuses)
		}
		if term := st.InitContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 1 || term.Message != "copied 3 files\ncopy: no space left on device\n" {
			t.Errorf("%s: init container %+v", when, st.InitContainerStatuses[0].State)
		}
		for _, cs := range st.ContainerStatuses {
			if term := cs.State.Terminated; term == nil || term.Message != wantMessages[cs.Name] {
				t.Errorf("%s: container %s: %+v, want message %q", when, cs.Name, cs.State.Terminated, wantMessages[cs.Name])
			}
		}
	}
	first := podStatus(pod, w.podRun(pod), metav1.Now())
	check("first run", first)

	// The runtime restarts: the containers are found ended in their files.
	again := newPodWorker(r, pod.UID)
	again.loadProcesses(pod)
	pod.Status = first
	restarted := podStatus(pod, again.podRun(pod), metav1.Now())
	check("after a restart", restarted)
	if !equality.Semantic.DeepEqual(first, restarted) {
		t.Errorf("a restarted runtime reports another status:\n%+v\n%+v", first, restarted)
	}
}

// containerSpec finds pod's container or init container name.
func containerSpec(pod *corev1.Pod, name string) (*corev1.Container, bool) {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i], true
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i], false
		}
	}
	panic("no container " + name)
}
