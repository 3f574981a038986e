// Package uploadproxy is CDI's upload proxy: an HTTPS endpoint that takes a
// disk image for a claim, authorised by a token from an UploadTokenRequest
// (signed by virt-api), and forwards it to the claim's upload pod (run by
// the upload claim controller, see package datavolume), which writes it
// into the claim as a raw disk.img; the proxy reports the upload's progress
// on the claim's DataVolume. See docs/design/0008-datavolumes-on-a-cluster.md.
package uploadproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/cdi"
	"github.com/virtkube/virtkube/internal/cdi/importer"
)

// The paths CDI's upload proxy serves, forwarded as they are to the upload
// pod. The async variants answer once the data is in; there processing
// (conversion to raw) also happens before the answer, which a client of
// the async protocol cannot tell apart.
var uploadPaths = []string{
	"/v1beta1/upload", "/v1beta1/upload-async",
	"/v1alpha1/upload", "/v1alpha1/upload-async",
}

// Server serves uploads.
type Server struct {
	// Client reads claims and their upload pods, and writes an upload's
	// progress on its DataVolume.
	Client client.Client
	// Key returns the token signing key.
	Key func(context.Context) ([]byte, error)
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// HTTP forwards uploads to upload pods; nil is http.DefaultClient.
	HTTP *http.Client
	// UploadPort is the upload pods' port; 0 is importer.DefaultPort.
	UploadPort int
	// ProgressInterval is the least time between two writes of an
	// upload's progress to its DataVolume; 0 is
	// cdi.DefaultProgressInterval.
	ProgressInterval time.Duration

	mu     sync.Mutex
	active map[string]bool
}

// Handler routes CDI's upload paths and /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, p := range uploadPaths {
		mux.HandleFunc(p, s.upload)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	return mux
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		http.Error(w, "use POST or PUT", http.StatusMethodNotAllowed)
		return
	}
	ctx := r.Context()
	claims, err := s.authorize(ctx, r)
	if err != nil {
		klog.FromContext(ctx).V(1).Info("upload refused", "err", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	log := klog.FromContext(ctx).WithValues("pvc", claims.Namespace+"/"+claims.PVC)
	key := claims.Namespace + "/" + claims.PVC
	if !s.begin(key) {
		http.Error(w, "an upload to this claim is already in progress", http.StatusConflict)
		return
	}
	defer s.end(key)

	pvc := &corev1.PersistentVolumeClaim{}
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: claims.Namespace, Name: claims.PVC}, pvc); err != nil {
		code := http.StatusInternalServerError
		if apierrors.IsNotFound(err) {
			code = http.StatusNotFound
		}
		http.Error(w, fmt.Sprintf("claim %s: %v", key, err), code)
		return
	}
	if _, ok := pvc.Annotations[cdi.AnnUploadRequest]; !ok {
		http.Error(w, fmt.Sprintf("claim %s does not take uploads (no %s annotation; create it with an upload DataVolume)", key, cdi.AnnUploadRequest), http.StatusBadRequest)
		return
	}
	if pvc.Annotations[cdi.AnnPodPhase] == string(corev1.PodSucceeded) {
		http.Error(w, fmt.Sprintf("claim %s already holds its upload", key), http.StatusConflict)
		return
	}
	if pvc.Annotations[cdi.AnnPodReady] != "true" {
		http.Error(w, fmt.Sprintf("claim %s is not ready for upload yet: its upload pod is not running", key), http.StatusServiceUnavailable)
		return
	}
	target, token, err := s.uploadPod(ctx, pvc)
	if err != nil {
		http.Error(w, fmt.Sprintf("claim %s is not ready for upload yet: %v", key, err), http.StatusServiceUnavailable)
		return
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, target+r.URL.Path, s.progress(pvc).Reader(ctx, r.Body, r.ContentLength))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out.ContentLength = r.ContentLength
	out.Header.Set("Authorization", "Bearer "+token)
	if ct := r.Header.Get("Content-Type"); ct != "" {
		out.Header.Set("Content-Type", ct)
	}
	resp, err := s.transport().Do(out)
	if err != nil {
		// The upload pod keeps nothing of a cut-off upload, and takes
		// another.
		log.Info("upload failed", "err", err)
		http.Error(w, "upload failed: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	log.Info("upload forwarded", "status", resp.Status)
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// uploadPod is the base URL of the claim's upload pod and the token it
// wants.
func (s *Server) uploadPod(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (string, string, error) {
	pod := &corev1.Pod{}
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: pvc.Namespace, Name: cdi.UploadPodName(pvc.Name)}, pod); err != nil {
		return "", "", fmt.Errorf("upload pod: %w", err)
	}
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" || !metav1.IsControlledBy(pod, pvc) {
		return "", "", fmt.Errorf("upload pod %s is %s", pod.Name, pod.Status.Phase)
	}
	key, err := s.Key(ctx)
	if err != nil {
		return "", "", err
	}
	port := s.UploadPort
	if port == 0 {
		port = importer.DefaultPort
	}
	host := net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port))
	return "http://" + host, cdi.UploadPodToken(key, pvc.Namespace, pvc.Name, string(pvc.UID)), nil
}

func (s *Server) transport() *http.Client {
	if s.HTTP != nil {
		return s.HTTP
	}
	return http.DefaultClient
}

// progress reports an upload into a DataVolume's claim on the DataVolume,
// by the bytes received of the request's Content-Length; nil (nothing to
// report on) for a claim of its own.
func (s *Server) progress(pvc *corev1.PersistentVolumeClaim) *cdi.ProgressReporter {
	owner := metav1.GetControllerOf(pvc)
	if owner == nil || owner.Kind != "DataVolume" || !strings.HasPrefix(owner.APIVersion, cdiv1.SchemeGroupVersion.Group+"/") {
		return nil
	}
	return &cdi.ProgressReporter{Client: s.Client, Namespace: pvc.Namespace, Name: owner.Name, Interval: s.ProgressInterval}
}

// authorize checks the Bearer token of r.
func (s *Server) authorize(ctx context.Context, r *http.Request) (cdi.TokenClaims, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return cdi.TokenClaims{}, fmt.Errorf("%w: no Bearer token in the Authorization header", cdi.ErrBadToken)
	}
	key, err := s.Key(ctx)
	if err != nil {
		return cdi.TokenClaims{}, err
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	return cdi.VerifyToken(key, token, now())
}

func (s *Server) begin(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		s.active = map[string]bool{}
	}
	if s.active[key] {
		return false
	}
	s.active[key] = true
	return true
}

func (s *Server) end(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.active, key)
}

// Serve serves s over TLS on ln with the given certificate until ctx is
// done.
func Serve(ctx context.Context, ln net.Listener, certFile, keyFile string, s *Server) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(shutdown)
	}()
	if err := hs.ServeTLS(ln, certFile, keyFile); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
