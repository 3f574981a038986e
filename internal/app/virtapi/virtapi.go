// Package virtapi is the virt-api command: the HTTPS server of KubeVirt's
// admission webhooks (defaults and validation of VMIs, VMs and VMIRSs, see
// internal/webhook), run as a Deployment on a real cluster and inside
// `virtkube server` on loopback.
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
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/bootstrap"
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
	ln := o.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", o.Addr); err != nil {
			return fmt.Errorf("virt-api listen: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           newMux(kv, log),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
	}
	errs := make(chan error, 1)
	go func() { errs <- srv.ServeTLS(ln, "", "") }()
	log.Info("serving admission webhooks", "address", ln.Addr().String())
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

func (o *Options) tlsConfig() (*tls.Config, error) {
	if o.TLSConfig != nil {
		return o.TLSConfig.Clone(), nil
	}
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("virt-api serving certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
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
