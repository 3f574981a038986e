// Package uploadproxy is CDI's upload proxy: an HTTPS endpoint that takes a
// disk image for a claim, authorised by a token from an UploadTokenRequest
// (signed by virt-api), and writes it into the claim as a raw disk.img,
// reporting the upload's progress on the claim's DataVolume. CDI's proxy forwards to a
// per-claim upload pod; here the proxy runs on the node of the hostpath
// volumes and writes the claim's directory itself (see
// docs/design/0006-datavolumes.md).
package uploadproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
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
)

// The paths CDI's upload proxy serves. The async variants answer once the
// data is in; here processing (conversion to raw) also happens before the
// answer, which a client of the async protocol cannot tell apart.
var uploadPaths = []string{
	"/v1beta1/upload", "/v1beta1/upload-async",
	"/v1alpha1/upload", "/v1alpha1/upload-async",
}

// Server serves uploads.
type Server struct {
	// Client reads claims and volumes and marks a claim populated.
	Client client.Client
	// Key returns the token signing key.
	Key func(context.Context) ([]byte, error)
	// Now is the clock; nil is time.Now.
	Now func() time.Time
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
	dir, err := cdi.VolumeDir(ctx, s.Client, pvc)
	if errors.Is(err, cdi.ErrNotBound) {
		http.Error(w, fmt.Sprintf("claim %s is not ready for upload yet", key), http.StatusServiceUnavailable)
		return
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	size := pvc.Spec.Resources.Requests.Storage().Value()
	n, err := cdi.Import(ctx, dir, s.progress(pvc).Reader(ctx, r.Body, r.ContentLength), size)
	if err != nil {
		// Nothing of a failed upload is kept: disk.img appears only
		// whole, and the claim stays ready for another try.
		log.Info("upload failed", "bytes", n, "err", err)
		http.Error(w, "upload failed: "+err.Error(), http.StatusBadRequest)
		return
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	pvc.Annotations[cdi.AnnPodPhase] = string(corev1.PodSucceeded)
	if err := s.Client.Patch(ctx, pvc, patch); err != nil {
		http.Error(w, fmt.Sprintf("mark claim %s uploaded: %v", key, err), http.StatusInternalServerError)
		return
	}
	log.Info("upload complete", "bytes", n)
	w.WriteHeader(http.StatusOK)
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
