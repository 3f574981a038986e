package uploadproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
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

// uploadPodStandIn answers as an upload pod: 401 without the claim's pod
// token, else it reads the whole body and answers 200 (400 for a body
// shorter than its Content-Length).
type uploadPodStandIn struct {
	token string
	mu    sync.Mutex
	got   [][]byte
	paths []string
}

func (u *uploadPodStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+u.token {
		http.Error(w, "bad pod token", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil || int64(len(body)) != r.ContentLength {
		http.Error(w, "short body", http.StatusBadRequest)
		return
	}
	u.mu.Lock()
	u.got, u.paths = append(u.got, body), append(u.paths, r.URL.Path)
	u.mu.Unlock()
}

// The proxy refuses bad and expired tokens (401), a claim
// whose upload pod does not take data yet (503) and a populated one (409),
// and forwards an authorised upload, body and path unchanged, to the
// claim's upload pod with the pod's token, reporting progress on the
// DataVolume.
func TestUpload(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "up", Namespace: "ns", UID: "pvc-uid", Annotations: map[string]string{cdi.AnnUploadRequest: ""}},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv1", Resources: corev1.VolumeResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")}}},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound},
	}
	// The claim is a DataVolume's, which is told the upload's progress.
	dv := &cdiv1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: "up", Namespace: "ns", UID: "dv-uid"}, Status: cdiv1.DataVolumeStatus{Phase: cdiv1.UploadReady}}
	pvc.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(dv, cdiv1.SchemeGroupVersion.WithKind("DataVolume"))}

	stand := &uploadPodStandIn{token: cdi.UploadPodToken(key, "ns", "up", "pvc-uid")}
	podSrv := httptest.NewServer(stand)
	defer podSrv.Close()
	host, port, _ := net.SplitHostPort(podSrv.Listener.Addr().String())
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: cdi.UploadPodName("up"), Namespace: "ns",
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(pvc, corev1.SchemeGroupVersion.WithKind("PersistentVolumeClaim"))}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: host},
	}
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	cdi.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(pvc, dv, pod).WithStatusSubresource(dv).Build()
	uploadPort, _ := strconv.Atoi(port)
	srv := httptest.NewServer((&Server{Client: c, Key: func(context.Context) ([]byte, error) { return key, nil },
		UploadPort: uploadPort, ProgressInterval: time.Nanosecond}).Handler())
	defer srv.Close()

	token := func(ns, name string, ttl time.Duration) string {
		tok, err := cdi.SignToken(key, cdi.TokenClaims{Namespace: ns, PVC: name, Expires: time.Now().Add(ttl).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	post := func(tok string, body io.Reader) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1beta1/upload-async", body)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1 // the client gave up sending
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	setReady := func(ann map[string]string) {
		got := &corev1.PersistentVolumeClaim{}
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(pvc), got); err != nil {
			t.Fatal(err)
		}
		for k, v := range ann {
			got.Annotations[k] = v
		}
		if err := c.Update(context.Background(), got); err != nil {
			t.Fatal(err)
		}
	}

	content := bytes.Repeat([]byte("x"), 64<<10)
	for name, tok := range map[string]string{"malformed": "bogus", "expired": token("ns", "up", -time.Minute)} {
		if code := post(tok, bytes.NewReader(content)); code != http.StatusUnauthorized {
			t.Errorf("%s token: %d, want 401", name, code)
		}
	}
	if code := post(token("ns", "up", time.Minute), bytes.NewReader(content)); code != http.StatusServiceUnavailable {
		t.Errorf("upload pod not ready: %d, want 503", code)
	}
	setReady(map[string]string{cdi.AnnPodReady: "true"})
	if code := post(token("ns", "up", time.Minute), &cutReader{n: 1000}); code == http.StatusOK {
		t.Error("a cut-off upload was accepted")
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
	stand.mu.Lock()
	if len(stand.got) != 1 || !bytes.Equal(stand.got[0], content) || stand.paths[0] != "/v1beta1/upload-async" {
		t.Errorf("upload pod got %d uploads (paths %v); want the one whole upload at /v1beta1/upload-async", len(stand.got), stand.paths)
	}
	stand.mu.Unlock()
	// All bytes received: the last progress written, short of 100%,
	// which is the DataVolume controller's to show with Succeeded.
	gotDV := &cdiv1.DataVolume{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(dv), gotDV); err != nil || gotDV.Status.Progress != "99.99%" {
		t.Errorf("DataVolume progress %q (%v), want 99.99%%", gotDV.Status.Progress, err)
	}
	setReady(map[string]string{cdi.AnnPodPhase: string(corev1.PodSucceeded)})
	if code := post(token("ns", "up", time.Minute), bytes.NewReader(content)); code != http.StatusConflict {
		t.Errorf("upload to a populated claim: %d, want 409", code)
	}
}
