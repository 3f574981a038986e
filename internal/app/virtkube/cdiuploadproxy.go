package virtkube

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/cdi"
	"github.com/virtkube/virtkube/internal/uploadproxy"
)

// cdiUploadProxyOptions are the flags of `virtkube cdi-uploadproxy`.
type cdiUploadProxyOptions struct {
	// Kubeconfig is the kubeconfig to use; empty is the pod's service
	// account.
	Kubeconfig string
	// Listen is the host:port of the HTTPS server.
	Listen string
	// CertFile and KeyFile are the serving certificate and its key.
	CertFile, KeyFile string
	// TokenKeyNamespace holds the Secret cdi.TokenKeySecret the upload
	// tokens are verified with.
	TokenKeyNamespace string
	// UploadProxyURL, when set, is published at start as CDIConfig
	// config's status.uploadProxyURL.
	UploadProxyURL string
}

// newCDIUploadProxyOptions are the defaults.
func newCDIUploadProxyOptions() *cdiUploadProxyOptions {
	return &cdiUploadProxyOptions{Listen: ":8443", TokenKeyNamespace: bootstrap.KubeVirtNamespace}
}

// Validate names the flag to change.
func (o *cdiUploadProxyOptions) Validate() error {
	_, port, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return fmt.Errorf("--listen %q: want host:port or :port", o.Listen)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("--listen %q: port %q: want a number from 1 to 65535", o.Listen, port)
	}
	if o.CertFile == "" {
		return fmt.Errorf("--tls-cert-file: must be set (the serving certificate, e.g. tls.crt of a mounted Secret)")
	}
	if o.KeyFile == "" {
		return fmt.Errorf("--tls-private-key-file: must be set (the serving certificate's key, e.g. tls.key of a mounted Secret)")
	}
	if errs := validation.IsDNS1123Label(o.TokenKeyNamespace); len(errs) > 0 {
		return fmt.Errorf("--token-key-namespace %q: not a namespace name: %s", o.TokenKeyNamespace, strings.Join(errs, "; "))
	}
	if o.UploadProxyURL != "" {
		u, err := url.Parse(o.UploadProxyURL)
		if err != nil {
			return fmt.Errorf("--upload-proxy-url %q: %w", o.UploadProxyURL, err)
		}
		if u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("--upload-proxy-url %q: want https://HOST[:PORT], the address clients reach this proxy at", o.UploadProxyURL)
		}
	}
	return nil
}

// newCDIUploadProxyCommand is `virtkube cdi-uploadproxy`, CDI's upload
// proxy on its own, as deploy/cdi runs it on a real cluster.
func newCDIUploadProxyCommand() *cobra.Command {
	o := newCDIUploadProxyOptions()
	cmd := &cobra.Command{
		Use:   "cdi-uploadproxy",
		Short: "Run CDI's upload proxy: the HTTPS endpoint of virtctl image-upload",
		Long: `Run CDI's upload proxy, as a Deployment runs it on a real cluster (deploy/cdi).
It takes a disk image for a claim over HTTPS on --listen, authorised by an
upload token from an UploadTokenRequest (verified with the key of Secret
cdi-upload-token-key in --token-key-namespace, which virt-api signs with),
forwards it to the claim's upload pod cdi-upload-<claim> and reports the
upload's progress on the claim's DataVolume. With --upload-proxy-url it also
publishes that URL as CDIConfig config's status.uploadProxyURL at start, where
virtctl image-upload looks for the proxy. virtkube server runs its own proxy;
do not run this beside it.`,
		Args: cobra.NoArgs,
		// Validation runs before RunE, so a test checks a manifest's
		// flags without connecting anywhere.
		PreRunE: func(*cobra.Command, []string) error { return o.Validate() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runComponent(cmd, o.Kubeconfig, func(ctx context.Context, cfg *rest.Config) error {
				return runCDIUploadProxy(ctx, cfg, o)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig to use; empty means the pod's service account")
	f.StringVar(&o.Listen, "listen", o.Listen, "address the HTTPS server listens on")
	f.StringVar(&o.CertFile, "tls-cert-file", "", "serving certificate (required)")
	f.StringVar(&o.KeyFile, "tls-private-key-file", "", "serving certificate's key (required)")
	f.StringVar(&o.TokenKeyNamespace, "token-key-namespace", o.TokenKeyNamespace, "namespace of the Secret "+cdi.TokenKeySecret+" upload tokens are verified with")
	f.StringVar(&o.UploadProxyURL, "upload-proxy-url", "", "URL clients reach this proxy at, published as CDIConfig "+cdi.ConfigName+" status.uploadProxyURL at start; empty publishes nothing")
	return cmd
}

// runCDIUploadProxy serves uploads until ctx is done.
func runCDIUploadProxy(ctx context.Context, cfg *rest.Config, o *cdiUploadProxyOptions) error {
	log := klog.FromContext(ctx)
	// Fail at start, naming the flags, rather than at the first
	// handshake.
	if _, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile); err != nil {
		return fmt.Errorf("--tls-cert-file %q, --tls-private-key-file %q: %w", o.CertFile, o.KeyFile, err)
	}
	c, err := bootstrap.CDIClient(cfg)
	if err != nil {
		return err
	}
	if o.UploadProxyURL != "" {
		if err := bootstrap.UploadProxyURL(ctx, c, o.UploadProxyURL); err != nil {
			return fmt.Errorf("--upload-proxy-url: %w", err)
		}
		log.Info("upload proxy URL published", "cdiConfig", cdi.ConfigName, "url", o.UploadProxyURL)
	}
	keys := uploadproxy.KeyReader{Reader: c, Namespace: o.TokenKeyNamespace}
	// The admin may create the key after the proxy: say so, and serve
	// (uploads are refused until it exists).
	if key, err := keys.Key(ctx); err != nil || len(key) == 0 {
		log.Info("WARNING: upload token key not readable; every upload is refused until it is",
			"secret", o.TokenKeyNamespace+"/"+cdi.TokenKeySecret, "field", cdi.TokenKeyField, "err", err)
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", o.Listen, err)
	}
	log.Info("serving CDI upload proxy over HTTPS", "address", ln.Addr().String())
	// Serve closes ln when ctx is done.
	return uploadproxy.Serve(ctx, ln, o.CertFile, o.KeyFile, &uploadproxy.Server{Client: c, Key: keys.Key})
}
