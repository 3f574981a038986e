package importer

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/go-logr/logr"
)

// UploadPaths are the paths of CDI's upload server, to which the upload
// proxy forwards an upload unchanged, each taking POST and PUT. The async
// variants answer once the data is in; here the conversion to raw also
// happens before the answer, which a client of the async protocol cannot
// tell apart.
var UploadPaths = []string{
	"/v1beta1/upload", "/v1beta1/upload-async",
	"/v1alpha1/upload", "/v1alpha1/upload-async",
}

// uploadServer takes one upload into dest (ModeUpload): one at a time, each
// failed one answered 400 and forgotten, so the user can try again; the
// first that succeeds ends the program.
type uploadServer struct {
	dest     dest
	token    string
	progress *progress
	log      logr.Logger

	mu       sync.Mutex
	busy     bool
	finished bool
	done     chan struct{} // closed once an upload has succeeded
}

// register routes the upload paths to s.
func (s *uploadServer) register(mux *http.ServeMux) {
	for _, p := range UploadPaths {
		mux.HandleFunc("POST "+p, s.upload)
		mux.HandleFunc("PUT "+p, s.upload)
	}
}

// wait returns once an upload has succeeded (nil), ctx is done or the
// server failed.
func (s *uploadServer) wait(ctx context.Context, failed <-chan error) error {
	s.log.Info("waiting for the upload", "dest", s.dest)
	select {
	case <-s.done:
		return nil
	case err := <-failed:
		return err
	case <-ctx.Done():
		return fmt.Errorf("stopped before an upload completed: %w", context.Cause(ctx))
	}
}

// upload writes one request's body into the claim.
func (s *uploadServer) upload(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		http.Error(w, "missing or wrong bearer token in the Authorization header", http.StatusUnauthorized)
		return
	}
	if err := s.begin(); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	ok := false
	defer func() { s.end(ok) }()
	if r.ContentLength == 0 {
		http.Error(w, "upload failed: the request has no body: send the disk image", http.StatusBadRequest)
		return
	}
	s.log.Info("upload started", "bytes", r.ContentLength)
	s.progress.set(0)
	n, err := s.dest.importStream(r.Context(), r.Body, r.ContentLength, s.progress.set)
	if err != nil {
		// Nothing of a failed upload is kept: disk.img appears only
		// whole, a device is written only once the image is, and the
		// next upload starts afresh.
		s.progress.set(0)
		s.log.Info("upload failed", "bytes", n, "err", err.Error())
		http.Error(w, "upload failed: "+err.Error(), http.StatusBadRequest)
		return
	}
	ok = true
	s.progress.set(100)
	s.log.Info("upload complete", "bytes", n)
	w.WriteHeader(http.StatusOK)
}

// authorized checks the request's bearer token, in constant time.
func (s *uploadServer) authorized(r *http.Request) bool {
	token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return found && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), []byte(s.token)) == 1
}

// errBusy and errFinished refuse an upload that cannot start.
var (
	errBusy     = errors.New("an upload to this claim is already in progress")
	errFinished = errors.New("the claim holds its upload already")
)

// begin claims the one upload slot.
func (s *uploadServer) begin() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.finished:
		return errFinished
	case s.busy:
		return errBusy
	}
	s.busy = true
	return nil
}

// end frees the slot, or, after a successful upload, closes it for good
// and lets the program end.
func (s *uploadServer) end(succeeded bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = false
	if succeeded && !s.finished {
		s.finished = true
		close(s.done)
	}
}
