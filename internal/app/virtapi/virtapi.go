// Package virtapi is the virt-api command: the HTTPS server of KubeVirt's
// admission webhooks (defaults and validation of VMIs, VMs and VMIRSs, and
// CDI's validation of DataVolumes with its clone authorization, see
// internal/webhook) and of the aggregated APIs subresources.kubevirt.io and
// CDI's upload.cdi.kubevirt.io (see internal/subresource), run as a Deployment on a real cluster and inside
// `virtkube server` (webhooks on loopback, the aggregated API on the node's
// address).
package virtapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/subresource"
	"github.com/virtkube/virtkube/internal/uploadproxy"
)

// DefaultPort is where virt-api listens on a real cluster, as KubeVirt's
// virt-api pod does.
const DefaultPort = 8443

// Options configure virt-api.
type Options struct {
	// Addr is the address the HTTPS server listens on, unless Listener is
	// set.
	Addr string
	// Listener, when set, is used instead of Addr: an embedding caller
	// listens first (on a free port) so it can register the address.
	Listener net.Listener
	// CertFile and KeyFile are the serving certificate, unless TLSConfig
	// is set.
	CertFile, KeyFile string
	// TLSConfig, when set, carries the serving certificate as the caller
	// holds it.
	TLSConfig *tls.Config
	// ExtraListeners serve the same handler as the main one (embedded
	// mode: the node-address listener the aggregator reaches).
	ExtraListeners []net.Listener

	// HandlerTLS is virt-api's client identity towards virt-handler
	// (console, VNC, pause); without it those subresources answer 503.
	HandlerTLS subresource.HandlerTLS
	// HandlerFallback is the virt-handler address used for a Node that
	// publishes none (embedded mode: the server's console address).
	HandlerFallback string
}

// Validate names the first bad option.
func (o *Options) Validate() error {
	if o.Listener == nil && o.Addr == "" {
		return errors.New("--address must be set")
	}
	if o.TLSConfig == nil && (o.CertFile == "" || o.KeyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file must be set")
	}
	return nil
}

// Run serves the webhooks until ctx is done. It reads the KubeVirt CR
// through an informer and starts answering only once that has synced, so no
// request is judged against a configuration it has not seen.
func Run(ctx context.Context, cfg *rest.Config, o *Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	log := klog.FromContext(ctx).WithName("virt-api")
	tlsConfig, err := o.tlsConfig()
	if err != nil {
		return err
	}
	kv, err := newConfigSource(ctx, cfg)
	if err != nil {
		return err
	}
	sub, err := newSubresourceServer(ctx, cfg, o)
	if err != nil {
		return err
	}
	ln := o.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", o.Addr); err != nil {
			return fmt.Errorf("virt-api listen: %w", err)
		}
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	mux := newMux(kv, newAccessReviewer(kc), log)
	mux.Handle("/", sub.Handler())
	srv := &http.Server{
		Handler:           withMetrics(mux),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
	}
	listeners := append([]net.Listener{ln}, o.ExtraListeners...)
	errs := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { errs <- srv.ServeTLS(l, "", "") }()
		log.Info("serving admission webhooks, subresources.kubevirt.io and upload.cdi.kubevirt.io", "address", l.Addr().String())
	}
	select {
	case err := <-errs:
		return fmt.Errorf("virt-api: %w", err)
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
		return nil
	}
}

// tlsConfig is the serving configuration. It asks for a client
// certificate without requiring one: the aggregator presents its
// front-proxy certificate, which the subresource authenticator verifies
// against the requestheader CA; webhook calls come without one.
func (o *Options) tlsConfig() (*tls.Config, error) {
	var cfg *tls.Config
	if o.TLSConfig != nil {
		cfg = o.TLSConfig.Clone()
	} else {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("virt-api serving certificate: %w", err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	cfg.ClientAuth = tls.RequestClientCert
	return cfg, nil
}

// newSubresourceServer wires subresources.kubevirt.io and
// upload.cdi.kubevirt.io: a direct client (its reads must be current, as
// KubeVirt's are), the aggregator's authentication, delegated
// authorization, the upload token key and, when configured, the way to
// virt-handler.
func newSubresourceServer(ctx context.Context, cfg *rest.Config, o *Options) (*subresource.Server, error) {
	scheme, err := bootstrap.Scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	authn, err := subresource.NewAuthenticator(ctx, kc)
	if err != nil {
		return nil, fmt.Errorf("virt-api authentication: %w", err)
	}
	authz, err := subresource.NewAuthorizer(kc)
	if err != nil {
		return nil, fmt.Errorf("virt-api authorization: %w", err)
	}
	// Upload tokens are signed with the key the upload proxy verifies by,
	// read from its Secret at each request (tokens are asked for rarely).
	keys := uploadproxy.KeyReader{Reader: c, Namespace: bootstrap.KubeVirtNamespace}
	s := &subresource.Server{Client: c, Authenticator: authn, Authorizer: authz, UploadTokenKey: keys.Key}
	if o.HandlerTLS.CertFile != "" {
		if s.Handlers, err = subresource.NewHandlers(c, o.HandlerFallback, o.HandlerTLS); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// configSource reads the KubeVirt CR from an informer's cache.
type configSource struct {
	reader client.Reader
}

// newConfigSource starts an informer on the one KubeVirt CR and waits until
// it has synced.
func newConfigSource(ctx context.Context, cfg *rest.Config) (*configSource, error) {
	scheme, err := bootstrap.Scheme()
	if err != nil {
		return nil, err
	}
	c, err := cache.New(cfg, cache.Options{
		Scheme:            scheme,
		DefaultNamespaces: map[string]cache.Config{bootstrap.KubeVirtNamespace: {}},
		ByObject: map[client.Object]cache.ByObject{
			&virtv1.KubeVirt{}: {Field: fields.OneTermEqualSelector("metadata.name", bootstrap.KubeVirtName)},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("virt-api KubeVirt cache: %w", err)
	}
	if _, err := c.GetInformer(ctx, &virtv1.KubeVirt{}); err != nil {
		return nil, err
	}
	go func() {
		if err := c.Start(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "KubeVirt CR cache stopped")
		}
	}()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("virt-api: KubeVirt CR cache did not sync: %w", context.Cause(ctx))
	}
	return &configSource{reader: c}, nil
}
