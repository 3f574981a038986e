package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/virtkube/virtkube/test/containerdisk"

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

// podNetworkServer serves handler on the host's address on s's pod
// network, where importer pods reach it (not on loopback, which is each
// pod's own).
func podNetworkServer(t *testing.T, s *framework.Server, handler http.Handler) *httptest.Server {
	t.Helper()
	gw, err := s.PodGateway()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(gw.String(), "0"))
	if err != nil {
		t.Fatalf("listen on the pod network's gateway: %v", err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// Blank, http (a qcow2 served on the pod network) and registry DataVolumes
// (the test guest's containerDisk, pulled by the node from the loopback
// registry — CDI's pullMethod node — and by the importer pod from a
// registry on the pod network) reach Succeeded with a raw disk.img of
// their size holding the source's bytes, each filled by an importer pod
// that is gone afterwards.
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
	srv := podNetworkServer(t, s, http.FileServer(http.Dir(filepath.Dir(qcow))))

	// CDI's default pullMethod pod: the importer pulls the image itself,
	// from a plain-HTTP registry on the pod network that CDIConfig lists
	// in spec.insecureRegistries.
	guestDisk, err := guest.Disk()
	if err != nil {
		t.Fatal(err)
	}
	reg := podNetworkServer(t, s, registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	regHost := reg.Listener.Addr().String()
	podImage, err := containerdisk.Push(ctxT(t, 5*time.Minute), regHost, "virtkube/test-guest", "pod-pull", guestDisk)
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, "", "patch", "cdiconfig", "config", "--type=merge", "-p", `{"spec":{"insecureRegistries":["`+regHost+`"]}}`)
	t.Cleanup(func() {
		kubectl(t, s, "", "patch", "cdiconfig", "config", "--type=merge", "-p", `{"spec":{"insecureRegistries":null}}`)
	})

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
  source: {registry: {url: "docker://%s", pullMethod: node}}
  storage: {resources: {requests: {storage: 64Mi}}}
---
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: pulled}
spec:
  source: {registry: {url: "docker://%s"}}
  storage: {resources: {requests: {storage: 64Mi}}}
`, srv.URL, filepath.Base(qcow), image, podImage), "apply", "-n", ns, "-f", "-")

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

	want, _ := os.ReadFile(guestDisk)
	for _, name := range []string{"registry", "pulled"} {
		got, err := os.ReadFile(waitDataVolume(t, s, c, ns, name))
		if err != nil || len(got) != size || !bytes.Equal(got[:len(want)], want) {
			t.Errorf("%s disk.img: %d bytes (%v); want %d bytes starting with the containerDisk's disk", name, len(got), err, size)
		}
	}

	if out := kubectl(t, s, "", "get", "dv", "-n", ns); strings.Count(out, "Succeeded") != 4 || !strings.Contains(out, "100.0%") {
		t.Errorf("kubectl get dv: want four Succeeded at 100.0%%:\n%s", out)
	}
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		out := kubectl(t, s, "", "get", "pods", "-n", ns, "-o", "name")
		return !strings.Contains(out, "importer-"), "importer pods left after Succeeded:\n" + out
	})
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

// An http import shows its progress while it runs, as CDI's does: a source
// that trickles 4 MiB over about six seconds makes the DataVolume, watched,
// show values strictly between 0% and 100% ("NN.NN%", never 100 before it
// is done), and it ends Succeeded at 100.0% with the source's bytes.
func TestDataVolumeImportProgress(t *testing.T) {
	s := shared
	c := cdiClient(t, s)
	ns := s.Namespace(t)

	content := bytes.Repeat([]byte("progress "), (4<<20)/9)
	const chunk = 64 << 10
	src := podNetworkServer(t, s, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		for off := 0; off < len(content); off += chunk {
			if _, err := w.Write(content[off:min(off+chunk, len(content))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select { // the source is slow; this is its pace, not a wait for the test
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}))

	progress := watchProgress(t, s, c, ns, "slow")
	kubectl(t, s, fmt.Sprintf(`apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: slow}
spec:
  source: {http: {url: "%s/disk.img"}}
  storage: {resources: {requests: {storage: 64Mi}}}
`, src.URL), "apply", "-n", ns, "-f", "-")
	t.Logf("progress seen: %v", progress())
	got, err := os.ReadFile(waitDataVolume(t, s, c, ns, "slow"))
	if err != nil || len(got) != 64<<20 || !bytes.Equal(got[:len(content)], content) {
		t.Errorf("disk.img: %d bytes (%v); want 64 MiB starting with the source", len(got), err)
	}
}

// watchProgress watches DataVolume ns/name from now on. The function it
// returns waits until the DataVolume is Succeeded and returns the values of
// status.progress it showed; it fails the test unless every value before
// Succeeded was N/A or "NN.NN%" below 100, at least one was strictly
// between 0% and 100%, and Succeeded came with 100.0%.
func watchProgress(t *testing.T, s *framework.Server, c client.Client, ns, name string) func() []string {
	t.Helper()
	wc, err := client.NewWithWatch(s.RESTConfig, client.Options{Scheme: c.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 5*time.Minute)
	watch, err := wc.Watch(ctx, &cdiv1.DataVolumeList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	return func() []string {
		t.Helper()
		defer watch.Stop()
		var seen []string
		var intermediate bool
		var last *cdiv1.DataVolume
		for last == nil || last.Status.Phase != cdiv1.Succeeded {
			select {
			case ev, ok := <-watch.ResultChan():
				if !ok {
					t.Fatalf("watch of DataVolume %s closed; progress seen %v", name, seen)
				}
				dv, ok := ev.Object.(*cdiv1.DataVolume)
				if !ok || dv.Name != name {
					continue
				}
				last = dv
				p := string(dv.Status.Progress)
				if len(seen) == 0 || seen[len(seen)-1] != p {
					seen = append(seen, p)
				}
				if dv.Status.Phase == cdiv1.Succeeded {
					continue // the loop ends
				}
				if pct, ok := parsePercent(p); ok && pct > 0 && pct < 100 {
					intermediate = true
				} else if p != "N/A" && p != "" && !(ok && pct == 0) {
					t.Errorf("DataVolume %s: progress %q while %s; want N/A or NN.NN%% below 100", name, p, dv.Status.Phase)
				}
			case <-ctx.Done():
				t.Fatalf("DataVolume %s not Succeeded; progress seen %v", name, seen)
			}
		}
		if !intermediate {
			t.Errorf("DataVolume %s: progress seen %v; no value strictly between 0%% and 100%%", name, seen)
		}
		if last.Status.Progress != "100.0%" {
			t.Errorf("DataVolume %s Succeeded with progress %q, want 100.0%%", name, last.Status.Progress)
		}
		return seen
	}
}

// parsePercent reads CDI's "NN.NN%".
func parsePercent(s string) (float64, bool) {
	v, ok := strings.CutSuffix(s, "%")
	if !ok {
		return 0, false
	}
	if i := strings.IndexByte(v, '.'); i < 0 || len(v)-i-1 != 2 {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	return f, err == nil
}

// An http import whose server dies halfway is retried to success: the
// source cuts the connection after half the body the first time and serves
// it whole the second; the DataVolume counts the restart and ends Succeeded
// with the right bytes.
func TestDataVolumeImportRetry(t *testing.T) {
	s := shared
	c := cdiClient(t, s)
	ns := s.Namespace(t)

	content := bytes.Repeat([]byte("retry-me "), (2<<20)/9)
	var requests atomic.Int32
	src := podNetworkServer(t, s, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		if requests.Add(1) == 1 {
			w.Write(content[:len(content)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection drops mid-body
		}
		w.Write(content)
	}))

	kubectl(t, s, fmt.Sprintf(`apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: flaky}
spec:
  source: {http: {url: "%s/disk.img"}}
  storage: {resources: {requests: {storage: 64Mi}}}
`, src.URL), "apply", "-n", ns, "-f", "-")
	disk := waitDataVolume(t, s, c, ns, "flaky")
	got, err := os.ReadFile(disk)
	if err != nil || len(got) != 64<<20 || !bytes.Equal(got[:len(content)], content) {
		t.Errorf("disk.img: %d bytes (%v); want 64 MiB starting with the whole source", len(got), err)
	}
	dv := &cdiv1.DataVolume{}
	if err := c.Get(ctxT(t, time.Minute), client.ObjectKey{Namespace: ns, Name: "flaky"}, dv); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n < 2 || dv.Status.RestartCount < 1 {
		t.Errorf("%d requests to the source, restartCount %d; want the cut-off download retried and counted", n, dv.Status.RestartCount)
	}
	// The failed importer pod's last words reach the user as an event.
	if out := kubectl(t, s, "", "get", "events", "-n", ns, "--field-selector", "involvedObject.name=flaky,reason=Error"); !strings.Contains(out, "cdi-importer:") || !strings.Contains(out, src.URL) {
		t.Errorf("want a Warning event carrying the importer's error about %s:\n%s", src.URL, out)
	}
}
