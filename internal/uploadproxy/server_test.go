package uploadproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	osexec "os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/virtkube/virtkube/internal/cdi"
)

// cutReader fails after n bytes, as a connection dropped mid-upload.
type cutReader struct{ n int }

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errors.New("connection reset")
	}
	k := min(len(p), c.n)
	c.n -= k
	return k, nil
}

func TestUpload(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{1}, 32)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "up", Namespace: "ns", Annotations: map[string]string{cdi.AnnUploadRequest: ""}},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv1", Resources: corev1.VolumeResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")}}},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound},
	}
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv1"}, Spec: corev1.PersistentVolumeSpec{
		PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}}}}
	// The claim is a DataVolume's, which is told the upload's progress.
	dv := &cdiv1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: "up", Namespace: "ns", UID: "dv-uid"}, Status: cdiv1.DataVolumeStatus{Phase: cdiv1.UploadReady}}
	pvc.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(dv, cdiv1.SchemeGroupVersion.WithKind("DataVolume"))}
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	cdi.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(pvc, pv, dv).WithStatusSubresource(dv).Build()
	srv := httptest.NewServer((&Server{Client: c, Key: func(context.Context) ([]byte, error) { return key, nil }, ProgressInterval: time.Nanosecond}).Handler())
	defer srv.Close()

	token := func(ns, name string, ttl time.Duration) string {
		tok, err := cdi.SignToken(key, cdi.TokenClaims{Namespace: ns, PVC: name, Expires: time.Now().Add(ttl).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	post := func(tok string, body io.Reader) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1beta1/upload", body)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1 // the client gave up sending
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	populated := func() bool {
		got := &corev1.PersistentVolumeClaim{}
		c.Get(context.Background(), client.ObjectKeyFromObject(pvc), got)
		return got.Annotations[cdi.AnnPodPhase] == string(corev1.PodSucceeded)
	}

	content := bytes.Repeat([]byte("x"), 64<<10)
	if code := post("bogus", bytes.NewReader(content)); code != http.StatusUnauthorized {
		t.Errorf("bad token: %d, want 401", code)
	}
	if code := post(token("ns", "up", -time.Minute), bytes.NewReader(content)); code != http.StatusUnauthorized {
		t.Errorf("expired token: %d, want 401", code)
	}
	if code := post(token("ns", "up", time.Minute), &cutReader{n: 1000}); code == http.StatusOK {
		t.Error("a cut-off upload was accepted")
	}
	if cdi.HasDisk(dir) || populated() {
		t.Fatal("a cut-off upload left a disk.img or marked the claim populated")
	}
	if _, err := exec(); err != nil {
		t.Skip(err)
	}
	// The cut-off request's handler may still be finishing: until then
	// the claim is busy (409).
	code := http.StatusConflict
	for deadline := time.Now().Add(5 * time.Second); code == http.StatusConflict && time.Now().Before(deadline); {
		code = post(token("ns", "up", time.Minute), bytes.NewReader(content))
	}
	if code != http.StatusOK {
		t.Fatalf("upload: %d, want 200", code)
	}
	got, err := os.ReadFile(filepath.Join(dir, cdi.DiskFile))
	if err != nil || len(got) != 1<<20 || !bytes.Equal(got[:len(content)], content) {
		t.Errorf("disk.img: %d bytes, %v; want the upload grown to 1 MiB", len(got), err)
	}
	if !populated() {
		t.Error("claim not marked populated")
	}
	// All bytes received: the last progress written, short of 100%,
	// which is the DataVolume controller's to show with Succeeded.
	gotDV := &cdiv1.DataVolume{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(dv), gotDV); err != nil || gotDV.Status.Progress != "99.99%" {
		t.Errorf("DataVolume progress %q (%v), want 99.99%%", gotDV.Status.Progress, err)
	}
	if code := post(token("ns", "up", time.Minute), bytes.NewReader(content)); code != http.StatusConflict {
		t.Errorf("second upload: %d, want 409", code)
	}
}

func exec() (string, error) { return osexec.LookPath("qemu-img") }
