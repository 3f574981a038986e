package vmi

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// seedVMI is the seed's testvmi-nocloud2.
const seedVMI = `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: testvmi-nocloud2
  namespace: default
  uid: 0a6b2f44-0000-4000-8000-000000000001
  labels: {special: key}
spec:
  terminationGracePeriodSeconds: 30
  domain:
    resources:
      requests:
        memory: 1024M
    devices:
      disks:
      - name: containerdisk
        disk: {bus: virtio}
      - name: emptydisk
        disk: {bus: virtio}
      - name: cloudinitdisk
        disk: {bus: virtio}
      interfaces:
      - bridge: {}
        name: default
  networks:
  - name: default
    pod: {}
  volumes:
  - name: containerdisk
    containerDisk:
      image: kubevirt/fedora-cloud-container-disk-demo:latest
  - name: emptydisk
    emptyDisk:
      capacity: "2Gi"
  - name: cloudinitdisk
    cloudInitNoCloud:
      userData: "#cloud-config"
`

func decodeVMI(t *testing.T, s string) *virtv1.VirtualMachineInstance {
	t.Helper()
	vmi := &virtv1.VirtualMachineInstance{}
	if err := yaml.UnmarshalStrict([]byte(s), vmi); err != nil {
		t.Fatal(err)
	}
	return vmi
}

var testPods = PodConfig{LauncherImage: "launcher:test", LauncherCommand: []string{"/usr/bin/virt-launcher"}}

func TestLauncherPodForSeedVMI(t *testing.T) {
	vmi := decodeVMI(t, seedVMI)
	pod, err := LauncherPod(vmi, testPods)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pod.Name, "virt-launcher-testvmi-nocloud2-") || len(pod.Name) != len("virt-launcher-testvmi-nocloud2-")+5 || pod.Namespace != "default" {
		t.Errorf("name = %s in %s", pod.Name, pod.Namespace)
	}
	again, _ := LauncherPod(vmi, testPods)
	other := vmi.DeepCopy()
	other.UID = "another-uid"
	third, _ := LauncherPod(other, testPods)
	if again.Name != pod.Name || third.Name == pod.Name {
		t.Errorf("pod names %s, %s (same VMI), %s (another VMI): want one name per VMI UID", pod.Name, again.Name, third.Name)
	}
	for k, v := range map[string]string{
		"special":                "key",
		"kubevirt.io":            "virt-launcher",
		"kubevirt.io/created-by": string(vmi.UID),
		"kubevirt.io/domain":     "testvmi-nocloud2",
		"vmi.kubevirt.io/id":     "testvmi-nocloud2",
		"vm.kubevirt.io/name":    "testvmi-nocloud2",
	} {
		if pod.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	if g := pod.Spec.ReadinessGates; len(g) != 1 || g[0].ConditionType != "kubevirt.io/virtual-machine-unpaused" {
		t.Errorf("readiness gates = %+v, want KubeVirt's kubevirt.io/virtual-machine-unpaused", g)
	}
	if ref := metav1.GetControllerOf(pod); ref == nil || ref.Kind != "VirtualMachineInstance" || ref.UID != vmi.UID || !ptr.Deref(ref.BlockOwnerDeletion, false) {
		t.Errorf("controller ref = %+v", ref)
	}
	if len(pod.Spec.Containers) != 2 || pod.Spec.Containers[0].Name != "compute" || pod.Spec.Containers[1].Name != "volumecontainerdisk" {
		t.Fatalf("containers = %v, want compute and volumecontainerdisk", containerNames(pod))
	}
	if img := pod.Spec.Containers[1].Image; img != "kubevirt/fedora-cloud-container-disk-demo:latest" {
		t.Errorf("containerDisk image = %s", img)
	}
	compute := pod.Spec.Containers[0]
	guest := resource.MustParse("1024M")
	want := guest.DeepCopy()
	want.Add(LauncherOverhead(vmi))
	if got := compute.Resources.Requests[corev1.ResourceMemory]; got.Cmp(want) != 0 {
		overhead := LauncherOverhead(vmi)
		t.Errorf("memory request = %s, want guest 1024M + overhead %s = %s", got.String(), overhead.String(), want.String())
	}
	if !strings.Contains(strings.Join(compute.Command, " "), "--name testvmi-nocloud2 --namespace default") {
		t.Errorf("launcher command = %v", compute.Command)
	}
	if *pod.Spec.TerminationGracePeriodSeconds != 45 {
		t.Errorf("pod grace = %d, want VMI's 30 + 15", *pod.Spec.TerminationGracePeriodSeconds)
	}
	if pod.Spec.NodeSelector["kubevirt.io/schedulable"] != "true" {
		t.Errorf("node selector = %v", pod.Spec.NodeSelector)
	}
	found := false
	for _, v := range pod.Spec.Volumes {
		found = found || (v.Name == SocketsVolume && v.EmptyDir != nil)
	}
	if !found {
		t.Error("no sockets emptyDir")
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restart policy = %s", pod.Spec.RestartPolicy)
	}
	checkContainerDiskWiring(t, pod)
}

// checkContainerDiskWiring checks what kubelet needs to run a containerDisk
// whose image holds nothing but the disk: the init container puts the
// container-disk program on a volume, each containerDisk container runs it
// from there and serves on the volume it shares with compute, and the pod
// shares one pid namespace.
func checkContainerDiskWiring(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if !ptr.Deref(pod.Spec.ShareProcessNamespace, false) {
		t.Error("shareProcessNamespace not set")
	}
	if len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("init containers = %d, want 1", len(pod.Spec.InitContainers))
	}
	init := pod.Spec.InitContainers[0]
	if init.Name != ContainerDiskBinaryContainer || init.Image != pod.Spec.Containers[0].Image {
		t.Errorf("init container %s runs %s, want %s from the launcher image", init.Name, init.Image, ContainerDiskBinaryContainer)
	}
	volumes := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v.EmptyDir != nil
	}
	mountOf := func(c corev1.Container, path string) string {
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(path, m.MountPath+"/") {
				return m.Name
			}
		}
		return ""
	}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("container %s mounts %s, which is no emptyDir of the pod", c.Name, m.Name)
			}
		}
	}
	if got := mountOf(init, init.Command[len(init.Command)-1]); got != BinShareVolume {
		t.Errorf("init container copies to %v, not onto %s", init.Command, BinShareVolume)
	}
	for _, c := range pod.Spec.Containers[1:] {
		if len(c.Command) < 3 || mountOf(c, c.Command[0]) != BinShareVolume {
			t.Errorf("containerDisk container %s runs %v, not the program from %s", c.Name, c.Command, BinShareVolume)
			continue
		}
		socket := c.Command[2]
		want := ContainerDisksDir + "/" + strings.TrimPrefix(c.Name, "volume") + ".sock"
		if c.Command[1] != "--socket" || socket != want || mountOf(c, socket) != mountOf(pod.Spec.Containers[0], socket) {
			t.Errorf("containerDisk container %s serves on %v, want --socket %s on the volume compute mounts", c.Name, c.Command[1:], want)
		}
	}
}

func containerNames(pod *corev1.Pod) []string {
	var out []string
	for _, c := range pod.Spec.Containers {
		out = append(out, c.Name)
	}
	return out
}

func TestLauncherOverhead(t *testing.T) {
	mi := func(n int64) int64 { return n << 20 }
	for _, tc := range []struct {
		name string
		spec string
		want int64
	}{
		{"1Gi, 1 vCPU, VNC", "domain: {resources: {requests: {memory: 1Gi}}, devices: {}}", mi(96 + 2 + 2 + 16)},
		{"1Gi, no graphics", "domain: {resources: {requests: {memory: 1Gi}}, devices: {autoattachGraphicsDevice: false}}", mi(96 + 2 + 2)},
		{"4Gi, 2x2x1 vCPUs", "domain: {cpu: {sockets: 2, cores: 2}, memory: {guest: 4Gi}, devices: {autoattachGraphicsDevice: false}}", mi(96 + 8 + 8)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vmi := decodeVMI(t, "metadata: {name: x}\nspec: {"+tc.spec+"}")
			if got := LauncherOverhead(vmi); got.Value() != tc.want {
				t.Errorf("overhead = %d MiB, want %d MiB", got.Value()>>20, tc.want>>20)
			}
		})
	}
}

// CPU requests as KubeVirt's: vCPUs / cpuAllocationRatio unless the VMI
// asks for some.
func TestLauncherPodCPURequest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  string
		ratio int
		want  string
	}{
		{"1 vCPU, default ratio", "domain: {resources: {requests: {memory: 1Gi}}}", 0, "100m"},
		{"4 cores, default ratio", "domain: {cpu: {cores: 4}, resources: {requests: {memory: 1Gi}}}", 0, "400m"},
		{"4 cores, ratio 50", "domain: {cpu: {cores: 4}, resources: {requests: {memory: 1Gi}}}", 50, "80m"},
		{"the VMI's own request", "domain: {cpu: {cores: 4}, resources: {requests: {memory: 1Gi, cpu: 1500m}}}", 50, "1500m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vmi := decodeVMI(t, "metadata: {name: x, namespace: default}\nspec: {"+tc.spec+"}")
			pod, err := LauncherPod(vmi, PodConfig{LauncherImage: testPods.LauncherImage, LauncherCommand: testPods.LauncherCommand, CPUAllocationRatio: tc.ratio})
			if err != nil {
				t.Fatal(err)
			}
			got := pod.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]
			if got.Cmp(resource.MustParse(tc.want)) != 0 {
				t.Errorf("cpu request = %s, want %s", got.String(), tc.want)
			}
		})
	}
}

func TestLauncherPodRejectsMissingMemory(t *testing.T) {
	vmi := decodeVMI(t, "metadata: {name: x}\nspec: {domain: {devices: {}}}")
	_, err := LauncherPod(vmi, testPods)
	if err == nil || !strings.Contains(err.Error(), "spec.domain.resources.requests.memory") {
		t.Errorf("err = %v, want one naming spec.domain.resources.requests.memory", err)
	}
}

// A cloud-init volume's Secrets are mounted read-only where the launcher
// reads them, under KubeVirt's volume names.
func TestLauncherPodMountsCloudInitSecrets(t *testing.T) {
	vmi := decodeVMI(t, `metadata: {name: v, namespace: default, uid: 11111111-0000-4000-8000-000000000001}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices: {disks: [{name: ci, disk: {bus: virtio}}]}
  volumes:
  - {name: ci, cloudInitConfigDrive: {secretRef: {name: my-user-data}, networkDataSecretRef: {name: my-net}}}
`)
	pod, err := LauncherPod(vmi, PodConfig{LauncherImage: "l", LauncherCommand: []string{"/usr/bin/virt-launcher"}})
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil {
			secrets[v.Name] = v.Secret.SecretName
		}
	}
	if len(secrets) != 2 || secrets["ci-udata"] != "my-user-data" || secrets["ci-ndata"] != "my-net" {
		t.Errorf("secret volumes = %v", secrets)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m
	}
	for name, path := range map[string]string{
		"ci-udata": "/var/run/kubevirt-private/secret/ci/userdata",
		"ci-ndata": "/var/run/kubevirt-private/secret/ci/networkdata",
	} {
		if m, ok := mounts[name]; !ok || m.MountPath != path || !m.ReadOnly {
			t.Errorf("mount of %s = %+v, want read-only at %s", name, m, path)
		}
	}
}

// A persistentVolumeClaim volume puts its claim into the pod, mounted where
// the launcher looks for disk.img; an ephemeral volume's claim is mounted
// read-only, the guest writing into an overlay.
func TestLauncherPodMountsClaims(t *testing.T) {
	vmi := decodeVMI(t, `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: c, namespace: ns, uid: 0a6b2f44-0000-4000-8000-000000000003}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices: {disks: [{name: data, disk: {bus: virtio}}, {name: base, disk: {bus: virtio}}]}
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: my-data}}
  - {name: base, ephemeral: {persistentVolumeClaim: {claimName: golden}}}
`)
	pod, err := LauncherPod(vmi, PodConfig{LauncherImage: "l", LauncherCommand: []string{"/usr/bin/virt-launcher"}})
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]corev1.PersistentVolumeClaimVolumeSource{}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claims[v.Name] = *v.PersistentVolumeClaim
		}
	}
	want := map[string]corev1.PersistentVolumeClaimVolumeSource{
		"data": {ClaimName: "my-data"},
		"base": {ClaimName: "golden", ReadOnly: true},
	}
	if len(claims) != len(want) || claims["data"] != want["data"] || claims["base"] != want["base"] {
		t.Errorf("claim volumes = %+v, want %+v", claims, want)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m
	}
	for name, readOnly := range map[string]bool{"data": false, "base": true} {
		m := mounts[name]
		if m.MountPath != "/var/run/kubevirt-private/vmi-disks/"+name || m.ReadOnly != readOnly {
			t.Errorf("mount of %s = %+v, want at /var/run/kubevirt-private/vmi-disks/%s, read-only %v", name, m, name, readOnly)
		}
	}
}

// A claim in volumeMode Block (as status.volumeStatus reports it) is a
// device of the compute container at /dev/<volume>, KubeVirt's path, and no
// mount; a Filesystem claim, or one whose mode is not known yet, stays a
// mount. This holds for persistentVolumeClaim, ephemeral and dataVolume
// volumes alike.
func TestLauncherPodClaimDevices(t *testing.T) {
	vmi := decodeVMI(t, `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: c, namespace: ns, uid: 0a6b2f44-0000-4000-8000-000000000004}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices: {disks: [{name: blk, disk: {}}, {name: fs, disk: {}}, {name: base, disk: {}}, {name: dv, disk: {}}, {name: unknown, disk: {}}]}
  volumes:
  - {name: blk, persistentVolumeClaim: {claimName: raw-disk}}
  - {name: fs, persistentVolumeClaim: {claimName: fs-disk}}
  - {name: base, ephemeral: {persistentVolumeClaim: {claimName: golden}}}
  - {name: dv, dataVolume: {name: imported}}
  - {name: unknown, persistentVolumeClaim: {claimName: not-yet}}
status:
  volumeStatus:
  - {name: blk, persistentVolumeClaimInfo: {claimName: raw-disk, volumeMode: Block}}
  - {name: fs, persistentVolumeClaimInfo: {claimName: fs-disk, volumeMode: Filesystem}}
  - {name: base, persistentVolumeClaimInfo: {claimName: golden, volumeMode: Block}}
  - {name: dv, persistentVolumeClaimInfo: {claimName: imported, volumeMode: Block}}
`)
	pod, err := LauncherPod(vmi, PodConfig{LauncherImage: "l", LauncherCommand: []string{"/usr/bin/virt-launcher"}})
	if err != nil {
		t.Fatal(err)
	}
	compute := pod.Spec.Containers[0]
	wantDevices := []corev1.VolumeDevice{{Name: "blk", DevicePath: "/dev/blk"}, {Name: "base", DevicePath: "/dev/base"}, {Name: "dv", DevicePath: "/dev/dv"}}
	if !equality.Semantic.DeepEqual(compute.VolumeDevices, wantDevices) {
		t.Errorf("volumeDevices = %+v, want %+v", compute.VolumeDevices, wantDevices)
	}
	claimMounts := map[string]corev1.VolumeMount{}
	for _, m := range compute.VolumeMounts {
		if strings.HasPrefix(m.MountPath, ClaimDisksDir) {
			claimMounts[m.Name] = m
		}
	}
	if len(claimMounts) != 2 || claimMounts["fs"].MountPath != ClaimDisksDir+"/fs" || claimMounts["unknown"].MountPath != ClaimDisksDir+"/unknown" {
		t.Errorf("claim mounts = %+v, want fs and unknown only", claimMounts)
	}
	claims := map[string]corev1.PersistentVolumeClaimVolumeSource{}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claims[v.Name] = *v.PersistentVolumeClaim
		}
	}
	if len(claims) != 5 || claims["blk"].ClaimName != "raw-disk" || claims["base"] != (corev1.PersistentVolumeClaimVolumeSource{ClaimName: "golden", ReadOnly: true}) {
		t.Errorf("claim volumes = %+v; want all five, the ephemeral one's read-only", claims)
	}
}
