package image

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Reasons a pull fails with, as kubelet reports them in a container's
// waiting state.
const (
	ReasonErrImagePull      = "ErrImagePull"
	ReasonErrImageNeverPull = "ErrImageNeverPull"
	ReasonInvalidImageName  = "InvalidImageName"
)

// ErrNotPresent means the store has no image for a reference.
var ErrNotPresent = errors.New("image not present in the local store")

// PullError is why a pull failed, in the form a Pod's container status
// needs: Reason is one of the Reason* constants and Message names the image
// and the cause.
type PullError struct {
	Reason  string
	Message string
	Err     error
}

func (e *PullError) Error() string { return e.Message }

func (e *PullError) Unwrap() error { return e.Err }

func invalidNameError(ref string, err error) *PullError {
	return &PullError{
		Reason:  ReasonInvalidImageName,
		Message: fmt.Sprintf("couldn't parse image name %q: %v", ref, err),
		Err:     err,
	}
}

func neverPullError(ref string) *PullError {
	return &PullError{
		Reason:  ReasonErrImageNeverPull,
		Message: fmt.Sprintf("container image %q is not present with pull policy of Never", ref),
		Err:     ErrNotPresent,
	}
}

// pullError describes err, which happened while pulling ref, so that the
// user can tell whether the registry, the network or the image is at fault.
func pullError(ref string, r name.Reference, err error) *PullError {
	registry := r.Context().RegistryStr()
	var (
		terr  *transport.Error
		opErr *net.OpError
		cause string
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		cause = err.Error()
	case errors.As(err, &terr):
		cause = fmt.Sprintf("registry %s: %s", registry, registryCause(r, terr))
	case errors.As(err, &opErr):
		cause = fmt.Sprintf("registry %s: cannot connect: %v", registry, opErr)
	default:
		cause = err.Error()
	}
	return &PullError{
		Reason:  ReasonErrImagePull,
		Message: fmt.Sprintf("failed to pull image %q: %s", ref, cause),
		Err:     err,
	}
}

// registryCause turns a registry's error response into words: the error code
// as a phrase, the registry's own message, and what was missing.
func registryCause(r name.Reference, e *transport.Error) string {
	if len(e.Errors) == 0 {
		switch e.StatusCode {
		case 401, 403:
			return fmt.Sprintf("access to repository %q denied (HTTP %d): check the registry credentials", r.Context().RepositoryStr(), e.StatusCode)
		case 404:
			return fmt.Sprintf("%s not found", r.Identifier())
		}
		return fmt.Sprintf("HTTP %d", e.StatusCode)
	}
	var parts []string
	for _, d := range e.Errors {
		bare := strings.ToLower(strings.ReplaceAll(string(d.Code), "_", " "))
		phrase := bare
		switch d.Code {
		case transport.ManifestUnknownErrorCode:
			phrase += fmt.Sprintf(" (repository %q has no %s)", r.Context().RepositoryStr(), identifier(r))
		case transport.NameUnknownErrorCode:
			phrase += fmt.Sprintf(" (no repository %q)", r.Context().RepositoryStr())
		case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
			phrase += ": check the registry credentials"
		}
		if d.Message != "" && !sameWords(d.Message, bare) {
			phrase += ": " + d.Message
		}
		parts = append(parts, phrase)
	}
	return strings.Join(parts, "; ")
}

func identifier(r name.Reference) string {
	if _, ok := r.(name.Digest); ok {
		return "manifest " + r.Identifier()
	}
	return fmt.Sprintf("tag %q", r.Identifier())
}

// sameWords reports whether a and b hold the same words in any order and
// case, as "Unknown manifest" and "manifest unknown" do.
func sameWords(a, b string) bool {
	wa, wb := strings.Fields(strings.ToLower(a)), strings.Fields(strings.ToLower(b))
	slices.Sort(wa)
	slices.Sort(wb)
	return slices.Equal(wa, wb)
}
