package datavolume

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	"github.com/virtkube/virtkube/internal/cdi"
	"github.com/virtkube/virtkube/internal/cdi/importer"
)

// The pods that fill claims, as CDI names and labels them. Each runs
// `cdi-importer` from the launcher image (docs/design/0008): an importer
// pod per importing DataVolume, an upload pod per claim that takes an
// upload or a clone, and a clone source pod, in the source claim's
// namespace, that streams the source's disk to the target's upload pod.
const (
	importerPodPrefix = "importer-"
	cloneSourceSuffix = "-source-pod"

	// labelCDI is CDI's label of its pods, with the pod's role as value.
	labelCDI         = "cdi.kubevirt.io"
	roleImporter     = "importer"
	roleUploadServer = "cdi-upload-server"
	roleCloneSource  = "cdi-clone-source"
	// annCloneTarget names the DataVolume ("<namespace>/<name>") a clone
	// source pod and its token Secret serve: they live in another
	// namespace, where no owner reference can reach.
	annCloneTarget = "cdi.kubevirt.io/clone-target"

	// importerProgram is the entry point in the launcher image.
	importerProgram = "/usr/bin/cdi-importer"
	// containerDiskProgram serves a pulled image's disk (pullMethod node).
	containerDiskProgram = "/usr/bin/container-disk"

	// The pods' paths are under /var/run/cdi: the node runtime of
	// `virtkube server` runs containers on the host's root, where it
	// leaves empty mount points (on /run, a tmpfs).
	dataVolumeName = "cdi-data-vol"
	dataDir        = "/var/run/cdi/data"
	sourceVolume   = "cdi-source-vol"
	sourceDir      = "/var/run/cdi/source"
	// The devices of block claims, where CDI puts them.
	dataDevice     = "/dev/cdi-block-volume"
	sourceDevice   = "/dev/cdi-source-block-volume"
	scratchVolume  = "cdi-scratch-vol"
	scratchDir     = "/var/run/cdi/scratch"
	tokenVolume    = "cdi-upload-token"
	tokenDir       = "/var/run/cdi/token"
	binVolume      = "cdi-bin"
	binDir         = "/var/run/cdi/bin"
	diskSockVolume = "cdi-disk-sock"
	diskSockDir    = "/var/run/cdi/disk"
)

// podResources are CDI's default requests for its worker pods.
var podResources = corev1.ResourceRequirements{Requests: corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("100m"),
	corev1.ResourceMemory: resource.MustParse("60M"),
}}

// importerPodName is the importer pod of claim.
func importerPodName(claim string) string { return importerPodPrefix + claim }

// cloneSourceName names the clone source pod, and its token Secret, of the
// target claim with uid.
func cloneSourceName(target types.UID) string { return string(target) + cloneSourceSuffix }

// cloneTarget is the annCloneTarget value of a DataVolume.
func cloneTarget(namespace, name string) string { return namespace + "/" + name }

// basePod is a pod of role that runs to completion with args; its first
// container is the worker, which has no volumes yet.
func basePod(name, namespace, role, image string, args []string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: namespace,
			Labels: map[string]string{
				"app": "containerized-data-importer", labelCDI: role,
				"app.kubernetes.io/managed-by": "virtkube",
			},
		},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			// The workers never call the API: the controller reads
			// their progress and outcome.
			AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{
				Name:                     role,
				Image:                    image,
				ImagePullPolicy:          corev1.PullIfNotPresent,
				Command:                  []string{importerProgram},
				Args:                     args,
				Ports:                    []corev1.ContainerPort{{Name: "metrics", ContainerPort: importer.DefaultPort, Protocol: corev1.ProtocolTCP}},
				Resources:                podResources,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
		},
	}
}

// isBlock reports whether pvc is in volumeMode Block.
func isBlock(pvc *corev1.PersistentVolumeClaim) bool {
	return ptr.Deref(pvc.Spec.VolumeMode, corev1.PersistentVolumeFilesystem) == corev1.PersistentVolumeBlock
}

// mountClaim gives the worker the claim as volume name: a directory at dir,
// or, for a block claim, a device at device (as CDI puts them).
func mountClaim(pod *corev1.Pod, name string, pvc *corev1.PersistentVolumeClaim, readOnly bool, dir, device string) {
	c := &pod.Spec.Containers[0]
	if isBlock(pvc) {
		c.VolumeDevices = append(c.VolumeDevices, corev1.VolumeDevice{Name: name, DevicePath: device})
	} else {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: dir, ReadOnly: readOnly})
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name:         name,
		VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvc.Name, ReadOnly: readOnly}},
	})
}

// mountEmptyDir gives the worker an emptyDir volume at dir.
func mountEmptyDir(pod *corev1.Pod, name, dir string) {
	c := &pod.Spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: dir})
	pod.Spec.Volumes = append(pod.Spec.Volumes, emptyDirVolume(name))
}

// mountToken gives the worker the token Secret secret at tokenDir.
func mountToken(pod *corev1.Pod, secret string) {
	c := &pod.Spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: tokenVolume, MountPath: tokenDir, ReadOnly: true})
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name: tokenVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}},
	})
}

// setDest makes o fill the claim pvc as mountClaim put it: its disk.img,
// or its device through a scratch file.
func setDest(pod *corev1.Pod, o *importer.Options, pvc *corev1.PersistentVolumeClaim) {
	mountClaim(pod, dataVolumeName, pvc, false, dataDir, dataDevice)
	if !isBlock(pvc) {
		o.Dest = dataDir
		return
	}
	o.DestDevice, o.Scratch = dataDevice, scratchDir
	mountEmptyDir(pod, scratchVolume, scratchDir)
}

// importerPod fills dv's claim pvc from a blank, http or registry source;
// insecureRegistry pulls the registry source over plain HTTP.
// A registry source pulled by the node (pullMethod node) runs the image
// itself as a second container serving its disk to the importer, as a
// containerDisk serves a launcher.
func importerPod(dv *cdiv1.DataVolume, pvc *corev1.PersistentVolumeClaim, kind, image string, size int64, insecureRegistry bool) *corev1.Pod {
	o := importer.NewOptions()
	o.Mode, o.Source, o.Size, o.OwnerUID = importer.ModeImport, kind, size, string(dv.UID)
	pod := basePod(importerPodName(pvc.Name), dv.Namespace, roleImporter, image, nil)
	setDest(pod, &o, pvc)
	src := dv.Spec.Source
	switch kind {
	case sourceHTTP:
		o.Endpoint = src.HTTP.URL
	case sourceRegistry:
		o.Endpoint = *src.Registry.URL
		if ptr.Deref(src.Registry.PullMethod, cdiv1.RegistryPullPod) == cdiv1.RegistryPullNode {
			addNodePull(pod, strings.TrimPrefix(*src.Registry.URL, "docker://"), image)
			o.DiskSocket = diskSockDir + "/disk.sock"
			break
		}
		o.InsecureRegistry = insecureRegistry
		if o.Scratch == "" {
			o.Scratch = scratchDir
			mountEmptyDir(pod, scratchVolume, scratchDir)
		}
	}
	pod.Spec.Containers[0].Args = o.Args()
	setController(pod, dv, cdiv1.SchemeGroupVersion.String(), "DataVolume")
	return pod
}

// addNodePull makes pod run ref as a container that serves its disk on a
// socket the importer reads (CDI's pullMethod node: the node's image cache
// pulls, with the node's credentials and registries).
func addNodePull(pod *corev1.Pod, ref, launcherImage string) {
	pod.Spec.ShareProcessNamespace = ptr.To(true) // the importer opens the disk through /proc/<pid>/root
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{
		Name: "cdi-bin", Image: launcherImage, ImagePullPolicy: corev1.PullIfNotPresent,
		Command:      []string{containerDiskProgram, "--copy-to", binDir + "/container-disk"},
		Resources:    podResources,
		VolumeMounts: []corev1.VolumeMount{{Name: binVolume, MountPath: binDir}},
	})
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
		Name: "cdi-image", Image: ref, ImagePullPolicy: corev1.PullIfNotPresent,
		Command:   []string{binDir + "/container-disk", "--socket", diskSockDir + "/disk.sock"},
		Resources: podResources,
		VolumeMounts: []corev1.VolumeMount{
			{Name: binVolume, MountPath: binDir, ReadOnly: true},
			{Name: diskSockVolume, MountPath: diskSockDir},
		},
	})
	mountEmptyDir(pod, diskSockVolume, diskSockDir)
	pod.Spec.Volumes = append(pod.Spec.Volumes, emptyDirVolume(binVolume))
}

// uploadPod serves uploads into pvc (from the upload proxy, or a clone
// source pod) until one succeeds; it accepts only the token in its Secret.
func uploadPod(pvc *corev1.PersistentVolumeClaim, image string, size int64) *corev1.Pod {
	o := importer.NewOptions()
	o.Mode, o.Size, o.OwnerUID = importer.ModeUpload, size, string(pvc.UID)
	o.TokenFile = tokenDir + "/" + cdi.UploadTokenKey
	pod := basePod(cdi.UploadPodName(pvc.Name), pvc.Namespace, roleUploadServer, image, nil)
	setDest(pod, &o, pvc)
	mountToken(pod, cdi.UploadTokenSecretName(pvc.Name))
	pod.Spec.Containers[0].Args = o.Args()
	setController(pod, pvc, "v1", "PersistentVolumeClaim")
	return pod
}

// cloneSourcePod streams the source claim's disk, mounted read-only, to
// the target's upload pod at uploadURL with the token in its Secret (a
// copy, in the source's namespace, of the upload pod's).
func cloneSourcePod(dv *cdiv1.DataVolume, target, source *corev1.PersistentVolumeClaim, image, uploadURL string) *corev1.Pod {
	name := cloneSourceName(target.UID)
	o := importer.NewOptions()
	o.Mode, o.UploadURL, o.OwnerUID = importer.ModeCloneSource, uploadURL, string(dv.UID)
	o.TokenFile = tokenDir + "/" + cdi.UploadTokenKey
	if isBlock(source) {
		o.SourceDevice = sourceDevice
	} else {
		o.SourceDir = sourceDir
	}
	pod := basePod(name, source.Namespace, roleCloneSource, image, o.Args())
	pod.Annotations = map[string]string{annCloneTarget: cloneTarget(dv.Namespace, dv.Name)}
	mountClaim(pod, sourceVolume, source, true, sourceDir, sourceDevice)
	mountToken(pod, name)
	return pod
}

// tokenSecret holds token for the pod (or pods) that name it.
func tokenSecret(name, namespace, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: namespace,
			Labels: map[string]string{"app": "containerized-data-importer", "app.kubernetes.io/managed-by": "virtkube"},
		},
		Type:       corev1.SecretTypeOpaque,
		StringData: map[string]string{cdi.UploadTokenKey: token},
	}
}

func emptyDirVolume(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

// setController makes owner the controller of pod, so the owner's
// controller is woken by the pod and the garbage collector removes it
// with the owner.
func setController(pod *corev1.Pod, owner metav1.Object, apiVersion, kind string) {
	pod.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: apiVersion, Kind: kind, Name: owner.GetName(), UID: owner.GetUID(),
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}}
}

// podOutcome is what a worker pod tells: its phase — Failed as soon as its
// worker (first) container failed, though a second container (a pulled
// image serving its disk) may still run — and for a failed one the
// termination message and when it ended.
type podOutcome struct {
	Phase    corev1.PodPhase
	Message  string
	Finished time.Time
}

// outcome reads pod's state.
func outcome(pod *corev1.Pod) podOutcome {
	o := podOutcome{Phase: pod.Status.Phase, Finished: pod.CreationTimestamp.Time}
	for _, cs := range pod.Status.ContainerStatuses {
		t := cs.State.Terminated
		if t == nil || len(pod.Spec.Containers) == 0 || cs.Name != pod.Spec.Containers[0].Name {
			continue
		}
		o.Finished = t.FinishedAt.Time
		if t.ExitCode == 0 {
			continue
		}
		o.Phase = corev1.PodFailed
		// The log's tail (FallbackToLogsOnError): cdi-importer's last
		// line says why it failed.
		if o.Message = lastLine(t.Message); o.Message == "" {
			o.Message = fmt.Sprintf("container %s exited with code %d (%s)", cs.Name, t.ExitCode, t.Reason)
		}
	}
	if o.Phase == corev1.PodFailed && o.Message == "" {
		if o.Message = pod.Status.Message; o.Message == "" {
			o.Message = "pod " + pod.Name + " failed: " + pod.Status.Reason
		}
	}
	return o
}

// lastLine is the last non-blank line of s.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[i+1:])
	}
	return s
}

// metricsURL is where pod serves its progress.
func metricsURL(pod *corev1.Pod) string {
	return fmt.Sprintf("http://%s/metrics", hostPort(pod.Status.PodIP))
}

// uploadURL is where an upload pod takes data.
func uploadURL(pod *corev1.Pod) string {
	return fmt.Sprintf("http://%s/v1beta1/upload", hostPort(pod.Status.PodIP))
}

func hostPort(ip string) string {
	return net.JoinHostPort(ip, strconv.Itoa(importer.DefaultPort))
}

// defaultWorkerHTTP reads worker pods' progress and health: each answer is
// small and local, so a pod that does not answer soon is taken as not
// answering.
var defaultWorkerHTTP = &http.Client{Timeout: 2 * time.Second}

// workerHTTP is c, or defaultWorkerHTTP.
func workerHTTP(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return defaultWorkerHTTP
}
