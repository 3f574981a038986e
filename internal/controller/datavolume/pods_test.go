package datavolume

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// A worker pod has failed as soon as its worker container has, though a
// pulled image's container still runs; the message is the last line of the
// log's tail.
func TestOutcome(t *testing.T) {
	finished := metav1.NewTime(time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "importer-x"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: roleImporter}, {Name: "cdi-image"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
			{Name: "cdi-image", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
			{Name: roleImporter, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 1, FinishedAt: finished,
				Message: "I1126 07:00:00 importing\ncdi-importer: download http://10.244.0.1/x: 404 Not Found\n",
			}}},
		}},
	}
	o := outcome(pod)
	if o.Phase != corev1.PodFailed || o.Message != "cdi-importer: download http://10.244.0.1/x: 404 Not Found" || !o.Finished.Equal(finished.Time) {
		t.Errorf("outcome = %+v; want Failed with the importer's last line, finished %v", o, finished)
	}
	pod.Status.ContainerStatuses[1].State.Terminated.ExitCode = 0
	if o := outcome(pod); o.Phase != corev1.PodRunning {
		t.Errorf("worker done, image container running: phase %s, want Running (Succeeded comes with the pod)", o.Phase)
	}
}

// Importer pods run cdi-importer from the launcher image with the claim
// mounted, never mount an API token, and a registry source pulled by the
// node runs the image beside the importer.
func TestImporterPod(t *testing.T) {
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "disk", Namespace: "ns"}}
	dv := &cdiv1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: "disk", Namespace: "ns", UID: "dv-uid"},
		Spec: cdiv1.DataVolumeSpec{Source: &cdiv1.DataVolumeSource{Registry: &cdiv1.DataVolumeSourceRegistry{
			URL: ptr.To("docker://registry.local/disk:1"), PullMethod: ptr.To(cdiv1.RegistryPullNode)}}}}
	size := resource.MustParse("1Gi")
	pod := importerPod(dv, pvc, sourceRegistry, "launcher:1", size.Value(), false)
	if pod.Name != "importer-disk" || !metav1.IsControlledBy(pod, dv) || !ptr.Deref(pod.Spec.ShareProcessNamespace, false) ||
		ptr.Deref(pod.Spec.AutomountServiceAccountToken, true) || pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("pod %s: owners %v, shareProcessNamespace %v, automount %v, restartPolicy %s", pod.Name, pod.OwnerReferences,
			pod.Spec.ShareProcessNamespace, pod.Spec.AutomountServiceAccountToken, pod.Spec.RestartPolicy)
	}
	if len(pod.Spec.Containers) != 2 || pod.Spec.Containers[1].Image != "registry.local/disk:1" || len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("containers %+v; want the importer and the image, and an init container copying container-disk", pod.Spec.Containers)
	}
	c := pod.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"--mode=import", "--source=registry", "--size=1073741824", "--owner-uid=dv-uid", "--disk-socket=" + diskSockDir + "/disk.sock", "--dest=" + dataDir} {
		if !strings.Contains(args, want) {
			t.Errorf("importer args %q lack %s", args, want)
		}
	}
	if c.Image != "launcher:1" || !slices.Equal(c.Command, []string{importerProgram}) || c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
		t.Errorf("importer container %+v", c)
	}
	if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool {
		return v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == "disk"
	}) {
		t.Errorf("volumes %+v lack the claim", pod.Spec.Volumes)
	}
}
