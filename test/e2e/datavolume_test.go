package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	virtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/cdi"
	"github.com/virtkube/virtkube/test/framework"
	"github.com/virtkube/virtkube/test/guest"
)

// cdiClient reads CDI's objects as well as KubeVirt's.
func cdiClient(t *testing.T, s *framework.Server) client.Client {
	t.Helper()
	scheme, err := bootstrap.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	if err := cdi.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(s.RESTConfig, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitDataVolume polls until the DataVolume is Succeeded and returns the
// disk.img of its claim in the storage pool.
func waitDataVolume(t *testing.T, s *framework.Server, c client.Client, ns, name string) string {
	t.Helper()
	dv := &cdiv1.DataVolume{}
	framework.Eventually(t, 5*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, dv); err != nil {
			return false, err.Error()
		}
		return dv.Status.Phase == cdiv1.Succeeded, fmt.Sprintf("DataVolume %s: phase %s, progress %s, conditions %+v", name, dv.Status.Phase, dv.Status.Progress, dv.Status.Conditions)
	})
	if dv.Status.Progress != "100.0%" || dv.Status.ClaimName != name {
		t.Errorf("DataVolume %s: progress %q, claim %q; want 100.0%%, %s", name, dv.Status.Progress, dv.Status.ClaimName, name)
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := c.Get(ctxT(t, time.Minute), client.ObjectKey{Namespace: ns, Name: name}, pvc); err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || !metav1.IsControlledBy(pvc, dv) {
		t.Errorf("claim %s: phase %s, owners %v; want Bound, owned by its DataVolume", name, pvc.Status.Phase, pvc.OwnerReferences)
	}
	return filepath.Join(s.DataDir, "hpvolumes", "csi", pvc.Spec.VolumeName, "disk.img")
}

// Blank, http (a qcow2 served on loopback) and registry (the test guest's
// containerDisk) DataVolumes reach Succeeded with a raw disk.img of their
// size holding the source's bytes.
func TestDataVolumeImports(t *testing.T) {
	s := shared
	c := cdiClient(t, s)
	ns := s.Namespace(t)
	image := testGuestImage(t, s, "datavolume")

	content := bytes.Repeat([]byte("virtkube-dv "), 100000) // ~1.1 MiB
	raw := filepath.Join(t.TempDir(), "src.raw")
	if err := os.WriteFile(raw, content, 0o644); err != nil {
		t.Fatal(err)
	}
	qcow := raw + ".qcow2"
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow).CombinedOutput(); err != nil {
		t.Fatalf("make qcow2: %v: %s", err, out)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(qcow))))
	defer srv.Close()

	const size = 64 << 20
	kubectl(t, s, fmt.Sprintf(`apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: blank}
spec:
  source: {blank: {}}
  storage: {resources: {requests: {storage: 64Mi}}}
---
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: web}
spec:
  source: {http: {url: "%s/%s"}}
  pvc:
    accessModes: [ReadWriteOnce]
    storageClassName: hostpath-csi
    resources: {requests: {storage: 64Mi}}
---
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: registry}
spec:
  source: {registry: {url: "docker://%s"}}
  storage: {resources: {requests: {storage: 64Mi}}}
`, srv.URL, filepath.Base(qcow), image), "apply", "-n", ns, "-f", "-")

	disk := waitDataVolume(t, s, c, ns, "blank")
	if fi, err := os.Stat(disk); err != nil || fi.Size() != size {
		t.Errorf("blank disk.img: %v, %v; want %d bytes", fi, err, size)
	}

	disk = waitDataVolume(t, s, c, ns, "web")
	got, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != size || !bytes.Equal(got[:len(content)], content) {
		t.Errorf("http disk.img: %d bytes, starts with the image: %v; want %d bytes, the qcow2's content as raw", len(got), bytes.HasPrefix(got, content), size)
	}

	disk = waitDataVolume(t, s, c, ns, "registry")
	guestDisk, err := guest.Disk()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(guestDisk)
	got, err = os.ReadFile(disk)
	if err != nil || len(got) != size || !bytes.Equal(got[:len(want)], want) {
		t.Errorf("registry disk.img: %d bytes (%v); want %d bytes starting with the containerDisk's disk", len(got), err, size)
	}

	if out := kubectl(t, s, "", "get", "dv", "-n", ns); strings.Count(out, "Succeeded") != 3 || !strings.Contains(out, "100.0%") {
		t.Errorf("kubectl get dv: want three Succeeded at 100.0%%:\n%s", out)
	}
}

// virtctl image-upload as the seed runs it: the test guest's qcow2 goes
// through the upload proxy into a new DataVolume's claim as raw, and a VMI
// boots from that claim. A wrong token gets 401.
func TestDataVolumeImageUpload(t *testing.T) {
	s := shared
	c := cdiClient(t, s)
	ns := s.Namespace(t)
	testGuestImage(t, s, "upload") // for emulation where KVM is missing

	config := &cdiv1.CDIConfig{}
	if err := c.Get(ctxT(t, time.Minute), client.ObjectKey{Name: "config"}, config); err != nil {
		t.Fatal(err)
	}
	if config.Status.UploadProxyURL == nil || !strings.HasPrefix(*config.Status.UploadProxyURL, "https://127.0.0.1:") {
		t.Fatalf("CDIConfig config status.uploadProxyURL = %v, want https://127.0.0.1:<port>", config.Status.UploadProxyURL)
	}
	proxy := *config.Status.UploadProxyURL

	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, _ := http.NewRequest(http.MethodPost, proxy+"/v1beta1/upload", strings.NewReader("data"))
	req.Header.Set("Authorization", "Bearer not-a-token")
	resp, err := insecure.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("upload with a wrong token: %s, want 401", resp.Status)
	}

	guestRaw, err := guest.Disk()
	if err != nil {
		t.Fatal(err)
	}
	qcow := filepath.Join(filepath.Dir(guestRaw), "disk.qcow2")
	if _, err := os.Stat(qcow); err != nil {
		t.Fatalf("test guest qcow2: %v", err)
	}
	stdout, stderr, code := virtctl(t, s, "virtctl", "image-upload", "dv", "up", "-n", ns,
		"--image-path", qcow, "--size", "64Mi", "--insecure", "--uploadproxy-url", proxy, "--wait-secs", "120")
	if code != 0 || !strings.Contains(stdout, "Processing completed successfully") || !strings.Contains(stdout, "100.00%") {
		t.Fatalf("virtctl image-upload: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	disk := waitDataVolume(t, s, c, ns, "up")
	want, _ := os.ReadFile(guestRaw)
	got, err := os.ReadFile(disk)
	if err != nil || len(got) != 64<<20 || !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("uploaded disk.img: %d bytes (%v); want 64 MiB starting with the guest's raw disk", len(got), err)
	}

	// The seed's form: a bare claim by --pvc-name and --pvc-size, the
	// proxy found through CDIConfig.
	content := bytes.Repeat([]byte("raw-upload "), 50000)
	rawFile := filepath.Join(t.TempDir(), "small.img")
	if err := os.WriteFile(rawFile, content, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = virtctl(t, s, "virtctl", "image-upload", "-n", ns, "--pvc-name", "raw-up", "--pvc-size", "64Mi",
		"--storage-class", "hostpath-csi", "--image-path", rawFile, "--insecure", "--wait-secs", "120")
	if code != 0 || !strings.Contains(stdout, "PersistentVolumeClaim "+ns+"/raw-up created") || !strings.Contains(stdout, "Uploading small.img completed successfully") {
		t.Fatalf("virtctl image-upload --pvc-name: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := c.Get(ctxT(t, time.Minute), client.ObjectKey{Namespace: ns, Name: "raw-up"}, pvc); err != nil {
		t.Fatal(err)
	}
	got, err = os.ReadFile(filepath.Join(s.DataDir, "hpvolumes", "csi", pvc.Spec.VolumeName, "disk.img"))
	if err != nil || len(got) != 64<<20 || !bytes.Equal(got[:len(content)], content) {
		t.Errorf("uploaded raw claim's disk.img: %d bytes (%v); want 64 MiB starting with the file", len(got), err)
	}

	// The seed's KubeVirt CR turns the DataVolumes gate on; then the
	// uploaded DataVolume is a VMI's root disk.
	gates, err := os.ReadFile("../testdata/seed/kubevirt-feature-gates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, string(gates), "apply", "-f", "-")
	uploaded := `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: uploaded}
spec:
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
      - {name: root, disk: {bus: virtio}}
  volumes:
  - {name: root, dataVolume: {name: up}}
`
	// virt-api reads the gate through an informer: the first apply may
	// come before it has seen the CR.
	framework.Eventually(t, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		_, errOut, err := s.Kubectl(ctx, strings.NewReader(uploaded), "apply", "-n", ns, "-f", "-")
		return err == nil, errOut
	})
	v := waitVMI(t, c, ns, "uploaded", "Running", func(v *virtv1.VirtualMachineInstance) bool { return v.Status.Phase == virtv1.Running })
	serial := filepath.Join(launcherSockets(t, s, v), "serial0.log")
	framework.Eventually(t, 3*time.Minute, 500*time.Millisecond, func(context.Context) (bool, string) {
		b, _ := os.ReadFile(serial)
		return bytes.Contains(b, []byte(guest.ReadyMarker)), "guest booted from the uploaded disk has not printed " + guest.ReadyMarker + ":\n" + lastLines(string(b), 10)
	})
	kubectl(t, s, "", "delete", "vmi", "uploaded", "-n", ns, "--wait=true", "--timeout=3m")
}
