package vmi

import (
	"hash/fnv"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/storage/cloudinit"
	"github.com/virtkube/virtkube/internal/vmispec"
)

// Labels the launcher pod carries besides the VMI's own, as KubeVirt's.
const (
	// LabelVMIID names the VMI a launcher pod runs.
	LabelVMIID = "vmi.kubevirt.io/id"
	// AppLauncher is the value of the kubevirt.io label on launcher pods.
	AppLauncher = "virt-launcher"
	// ComputeContainer runs virt-launcher.
	ComputeContainer = "compute"
	// SocketsVolume is shared between virt-launcher and virt-handler: the
	// launcher's gRPC socket, the serial console and VNC sockets live there.
	SocketsVolume = "sockets"
	// SocketsDir is where SocketsVolume is mounted in the compute container.
	SocketsDir = "/var/run/kubevirt/sockets"
	// ContainerDisksDir is shared by the compute container and the
	// containerDisk containers: each containerDisk's container-disk server
	// listens there on <volume>.sock (see package containerdisk).
	ContainerDisksDir = "/var/run/kubevirt/container-disks"
	// containerDisksVolume is the emptyDir at ContainerDisksDir.
	containerDisksVolume = "container-disks"
	// BinShareVolume carries the container-disk program from the launcher
	// image to the containerDisk containers, whose images hold nothing
	// but a disk.
	BinShareVolume = "virt-bin-share-dir"
	// ContainerDiskBinaryContainer is the init container that fills
	// BinShareVolume.
	ContainerDiskBinaryContainer = "container-disk-binary"
	// containerDiskProgram is the program's path in the launcher image.
	containerDiskProgram = "/usr/bin/container-disk"
	// ClaimDisksDir is where the compute container finds each
	// persistentVolumeClaim, dataVolume and ephemeral volume's claim in
	// volumeMode Filesystem, at <dir>/<volume>/ (KubeVirt's path), its disk
	// in disk.img there.
	ClaimDisksDir = "/var/run/kubevirt-private/vmi-disks"
	// ClaimDevicesDir is where the compute container finds the block device
	// of each such claim in volumeMode Block, at <dir>/<volume> (KubeVirt's
	// path).
	ClaimDevicesDir = "/dev"
	// binShareDir is where BinShareVolume is mounted: in the init
	// container and in the containerDisk containers.
	binShareDir = "/var/run/virtkube/bin"
	// defaultGracePeriod is KubeVirt's default terminationGracePeriodSeconds.
	defaultGracePeriod = 30
	// killMargin is added to the VMI's grace period for the pod, so the
	// launcher can finish an ACPI shutdown and a forced stop before kubelet
	// (or the local runtime) kills it.
	killMargin = 15
)

// PodConfig is how launcher pods are built on this installation.
type PodConfig struct {
	// LauncherImage runs virt-launcher in the compute container.
	LauncherImage string
	// LauncherCommand starts virt-launcher inside LauncherImage.
	LauncherCommand []string
	// CPUAllocationRatio is the KubeVirt CR's
	// developerConfiguration.cpuAllocationRatio: a VMI that requests no
	// CPU gets 1/ratio of a CPU per vCPU. 0 means KubeVirt's default.
	CPUAllocationRatio int
}

// DefaultCPUAllocationRatio is KubeVirt's: 100m per vCPU.
const DefaultCPUAllocationRatio = 10

// cpuRequest is what the launcher pod requests of CPU for vmi when the VMI
// says nothing: vCPUs / ratio cores, as KubeVirt computes it.
func cpuRequest(vmi *virtv1.VirtualMachineInstance, ratio int) resource.Quantity {
	if ratio <= 0 {
		ratio = DefaultCPUAllocationRatio
	}
	return *resource.NewMilliQuantity(int64(vmispec.VCPUs(vmi))*1000/int64(ratio), resource.DecimalSI)
}

// Launcher memory overhead, the memory a launcher pod needs beyond the
// guest's RAM. It is the sum of fixed costs of the processes in the pod and a
// share that grows with the guest:
//
//	virt-launcher (Go, gRPC, DHCP)      24 MiB
//	libvirt daemon (one per pod)        32 MiB
//	QEMU fixed (device models, TCG/KVM) 40 MiB
//	guest page tables                   guest RAM / 512
//	per vCPU (thread stacks, vCPU state) 2 MiB
//	VNC framebuffer, when graphics on   16 MiB
//
// The fixed parts are the figures measured on a launcher pod (issue 6 keeps
// them current in SPECIFICATION.md); the ratios follow KubeVirt's formula.
// This function is the one place the formula lives.
func LauncherOverhead(vmi *virtv1.VirtualMachineInstance) resource.Quantity {
	const mi = 1 << 20
	bytes := int64(24+32+40) * mi
	if guest, err := vmispec.GuestMemory(vmi); err == nil {
		bytes += guest.Value() / 512
	}
	bytes += int64(vmispec.VCPUs(vmi)) * 2 * mi
	if vmispec.GraphicsEnabled(vmi) {
		bytes += 16 * mi
	}
	// Round up to whole MiB.
	bytes = (bytes + mi - 1) / mi * mi
	return *resource.NewQuantity(bytes, resource.BinarySI)
}

// LauncherPod is the pod that runs vmi, a pure function of the VMI and the
// installation's PodConfig. Its spec is one kubelet runs unchanged.
func LauncherPod(vmi *virtv1.VirtualMachineInstance, cfg PodConfig) (*corev1.Pod, error) {
	guest, err := vmispec.GuestMemory(vmi)
	if err != nil {
		return nil, err
	}
	memory := guest.DeepCopy()
	memory.Add(LauncherOverhead(vmi))

	requests := corev1.ResourceList{corev1.ResourceMemory: memory}
	if cpu, ok := vmi.Spec.Domain.Resources.Requests[corev1.ResourceCPU]; ok {
		requests[corev1.ResourceCPU] = cpu
	} else {
		requests[corev1.ResourceCPU] = cpuRequest(vmi, cfg.CPUAllocationRatio)
	}
	var limits corev1.ResourceList
	if cpu, ok := vmi.Spec.Domain.Resources.Limits[corev1.ResourceCPU]; ok {
		limits = corev1.ResourceList{corev1.ResourceCPU: cpu}
	}
	if _, ok := vmi.Spec.Domain.Resources.Limits[corev1.ResourceMemory]; ok {
		if limits == nil {
			limits = corev1.ResourceList{}
		}
		limits[corev1.ResourceMemory] = memory
	}

	grace := int64(defaultGracePeriod)
	if vmi.Spec.TerminationGracePeriodSeconds != nil {
		grace = *vmi.Spec.TerminationGracePeriodSeconds
	}

	labels := map[string]string{}
	for k, v := range vmi.Labels {
		labels[k] = v
	}
	labels[virtv1.AppLabel] = AppLauncher
	labels[virtv1.CreatedByLabel] = string(vmi.UID)
	labels[virtv1.DeprecatedVirtualMachineNameLabel] = vmi.Name
	labels[LabelVMIID] = vmispec.IDLabelValue(vmi.Name)
	if _, ok := labels[virtv1.DomainAnnotation]; !ok {
		labels[virtv1.DomainAnnotation] = vmi.Name
	}

	socketsMount := corev1.VolumeMount{Name: SocketsVolume, MountPath: SocketsDir}
	compute := corev1.Container{
		Name:            ComputeContainer,
		Image:           cfg.LauncherImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command: append(append([]string{}, cfg.LauncherCommand...),
			"--name", vmi.Name,
			"--namespace", vmi.Namespace,
			"--uid", string(vmi.UID),
			"--grace-period-seconds", strconv.FormatInt(grace, 10),
			"--sockets-dir", SocketsDir,
			"--container-disks-dir", ContainerDisksDir,
		),
		Resources:    corev1.ResourceRequirements{Requests: requests, Limits: limits},
		VolumeMounts: []corev1.VolumeMount{socketsMount, {Name: containerDisksVolume, MountPath: ContainerDisksDir}},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      LauncherPodName(vmi),
			Namespace: vmi.Namespace,
			Labels:    labels,
			Annotations: map[string]string{
				virtv1.DomainAnnotation:                   vmi.Name,
				"kubectl.kubernetes.io/default-container": ComputeContainer,
			},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vmi, virtv1.VirtualMachineInstanceGroupVersionKind)},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To(grace + killMargin),
			AutomountServiceAccountToken:  ptr.To(false),
			NodeSelector:                  map[string]string{virtv1.NodeSchedulable: "true"},
			Hostname:                      hostname(vmi),
			Subdomain:                     vmi.Spec.Subdomain,
			Affinity:                      vmi.Spec.Affinity,
			Tolerations:                   vmi.Spec.Tolerations,
			SchedulerName:                 vmi.Spec.SchedulerName,
			PriorityClassName:             vmi.Spec.PriorityClassName,
			DNSPolicy:                     dnsPolicy(vmi),
			DNSConfig:                     vmi.Spec.DNSConfig,
			Containers:                    []corev1.Container{compute},
			// As KubeVirt's template: the pod is Ready only while
			// virt-controller holds this condition True, that is while the
			// VMI is not paused (see syncUnpausedCondition).
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: virtv1.VirtualMachineUnpaused}},
			Volumes: []corev1.Volume{
				{Name: SocketsVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: containerDisksVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
	for k, v := range vmi.Spec.NodeSelector {
		pod.Spec.NodeSelector[k] = v
	}
	for _, v := range vmi.Spec.Volumes {
		volumes, mounts := cloudInitSecrets(v)
		pod.Spec.Volumes = append(pod.Spec.Volumes, volumes...)
		pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts, mounts...)
		if volume, ok := claimVolume(v); ok {
			pod.Spec.Volumes = append(pod.Spec.Volumes, volume)
			c := &pod.Spec.Containers[0]
			if claimIsBlock(vmi, v.Name) {
				c.VolumeDevices = append(c.VolumeDevices, corev1.VolumeDevice{Name: v.Name, DevicePath: ClaimDevicesDir + "/" + v.Name})
			} else {
				c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{
					Name: v.Name, MountPath: ClaimDisksDir + "/" + v.Name, ReadOnly: volume.PersistentVolumeClaim.ReadOnly})
			}
		}
	}
	for i, v := range vmi.Spec.Volumes {
		if v.ContainerDisk == nil {
			continue
		}
		if v.ContainerDisk.Image == "" {
			return nil, field.Required(field.NewPath("spec", "volumes").Index(i).Child("containerDisk", "image"), "a containerDisk needs an image")
		}
		pod.Spec.Containers = append(pod.Spec.Containers, containerDiskContainer(v))
	}
	if len(pod.Spec.Containers) > 1 {
		// The launcher reaches each disk through its server's
		// /proc/<pid>/root: the pod shares one pid namespace.
		pod.Spec.ShareProcessNamespace = ptr.To(true)
		pod.Spec.InitContainers = []corev1.Container{containerDiskBinaryContainer(cfg)}
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
			Name: BinShareVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	return pod, nil
}

// LauncherPodName is virt-launcher-<vmi>-<suffix> (the seed's shape), with a
// suffix derived from the VMI's UID instead of a random one: a controller
// acting on a stale cache then gets AlreadyExists instead of creating a
// second pod for the same VMI.
func LauncherPodName(vmi *virtv1.VirtualMachineInstance) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789" // apimachinery's rand alphabet
	base := "virt-launcher-" + vmi.Name + "-"
	if len(base) > 58 { // as GenerateName truncates
		base = base[:58]
	}
	h := fnv.New64a()
	h.Write([]byte(vmi.UID))
	n := h.Sum64()
	suffix := make([]byte, 5)
	for i := range suffix {
		suffix[i] = alphabet[n%uint64(len(alphabet))]
		n /= uint64(len(alphabet))
	}
	return base + string(suffix)
}

// ContainerDiskContainerName is the container that serves volume name's
// image, named as KubeVirt names it.
func ContainerDiskContainerName(volume string) string { return "volume" + volume }

// cloudInitSecrets are the Secret volumes of a cloud-init volume's
// secretRef and networkDataSecretRef, mounted read-only in the compute
// container where the launcher reads them (KubeVirt's volume names and
// paths).
func cloudInitSecrets(v virtv1.Volume) ([]corev1.Volume, []corev1.VolumeMount) {
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	refs := cloudinit.SecretRefs(&v)
	for _, which := range []string{cloudinit.UserDataSecret, cloudinit.NetworkDataSecret} {
		secret, ok := refs[which]
		if !ok {
			continue
		}
		name := v.Name + "-udata"
		if which == cloudinit.NetworkDataSecret {
			name = v.Name + "-ndata"
		}
		volumes = append(volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: secret}}})
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: cloudinit.SecretMountPath(v.Name, which), ReadOnly: true})
	}
	return volumes, mounts
}

// claimVolume is the pod volume of a persistentVolumeClaim, dataVolume or
// ephemeral VMI volume: the claim under the VMI volume's name. The compute
// container mounts it at ClaimDisksDir/<name>, or, for a claim in
// volumeMode Block, has it as a device at ClaimDevicesDir/<name>, as
// KubeVirt's. An ephemeral volume's claim is only read (the guest writes
// into an overlay in the pod), so it is read-only.
func claimVolume(v virtv1.Volume) (corev1.Volume, bool) {
	var src corev1.PersistentVolumeClaimVolumeSource
	switch {
	case v.PersistentVolumeClaim != nil:
		src = v.PersistentVolumeClaim.PersistentVolumeClaimVolumeSource
	case v.Ephemeral != nil && v.Ephemeral.PersistentVolumeClaim != nil:
		src = *v.Ephemeral.PersistentVolumeClaim
		src.ReadOnly = true
	case v.DataVolume != nil:
		// A DataVolume's claim has its name, as CDI makes it.
		src = corev1.PersistentVolumeClaimVolumeSource{ClaimName: v.DataVolume.Name}
	default:
		return corev1.Volume{}, false
	}
	return corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &src}}, true
}

// claimIsBlock reports whether the claim of vmi's volume name is in
// volumeMode Block, as the VMI's status.volumeStatus says (the reconciler
// reads the claims into it before it makes the pod). A claim not there yet
// is taken as Filesystem.
func claimIsBlock(vmi *virtv1.VirtualMachineInstance, name string) bool {
	for _, vs := range vmi.Status.VolumeStatus {
		if vs.Name == name && vs.PersistentVolumeClaimInfo != nil {
			return ptr.Deref(vs.PersistentVolumeClaimInfo.VolumeMode, corev1.PersistentVolumeFilesystem) == corev1.PersistentVolumeBlock
		}
	}
	return false
}

// containerDiskResources are tiny, as KubeVirt's: the container only runs
// the container-disk server.
var containerDiskResources = corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("10m"),
	corev1.ResourceMemory: resource.MustParse("8Mi"),
}

// containerDiskBinaryContainer copies the container-disk program from the
// launcher image into the pod's shared bin directory.
func containerDiskBinaryContainer(cfg PodConfig) corev1.Container {
	return corev1.Container{
		Name:            ContainerDiskBinaryContainer,
		Image:           cfg.LauncherImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         []string{containerDiskProgram, "--copy-to", binShareDir + "/container-disk"},
		Resources:       corev1.ResourceRequirements{Requests: containerDiskResources},
		VolumeMounts:    []corev1.VolumeMount{{Name: BinShareVolume, MountPath: binShareDir}},
	}
}

// containerDiskContainer keeps a containerDisk image in the pod and serves
// its disk (under /disk/, or the volume's path) to the launcher.
func containerDiskContainer(v virtv1.Volume) corev1.Container {
	policy := v.ContainerDisk.ImagePullPolicy
	if policy == "" {
		policy = corev1.PullIfNotPresent
	}
	cmd := []string{binShareDir + "/container-disk", "--socket", ContainerDisksDir + "/" + v.Name + ".sock"}
	if v.ContainerDisk.Path != "" {
		cmd = append(cmd, "--path", v.ContainerDisk.Path)
	}
	return corev1.Container{
		Name:            ContainerDiskContainerName(v.Name),
		Image:           v.ContainerDisk.Image,
		ImagePullPolicy: policy,
		Command:         cmd,
		Resources:       corev1.ResourceRequirements{Requests: containerDiskResources},
		VolumeMounts: []corev1.VolumeMount{
			{Name: containerDisksVolume, MountPath: ContainerDisksDir},
			{Name: BinShareVolume, MountPath: binShareDir, ReadOnly: true},
		},
	}
}

func hostname(vmi *virtv1.VirtualMachineInstance) string {
	if vmi.Spec.Hostname != "" {
		return vmi.Spec.Hostname
	}
	// A pod hostname is a DNS label; VMI names may be longer subdomains.
	name := vmi.Name
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

func dnsPolicy(vmi *virtv1.VirtualMachineInstance) corev1.DNSPolicy {
	if vmi.Spec.DNSPolicy != "" {
		return vmi.Spec.DNSPolicy
	}
	return corev1.DNSClusterFirst
}
