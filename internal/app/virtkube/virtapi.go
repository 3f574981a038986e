package virtkube

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

	"github.com/virtkube/virtkube/internal/app/virtapi"
	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/controlplane"
	"github.com/virtkube/virtkube/internal/subresource"
)

// virtAPIEmbedding is what `virtkube server` hands virt-api.
type virtAPIEmbedding struct {
	// Port is the loopback port of the webhooks; 0 picks a free one.
	Port int
	// HandlerTLS and HandlerAddress reach this machine's virt-handler.
	HandlerTLS     subresource.HandlerTLS
	HandlerAddress string
}

// startVirtAPI runs virt-api inside `virtkube server`: a serving certificate
// from the cluster CA, an HTTPS listener on 127.0.0.1:port (0: any free
// port, picked at each start) for the admission webhooks, and one on the
// node's address for the aggregated APIs subresources.kubevirt.io and
// upload.cdi.kubevirt.io (the aggregator routes to a Service's endpoints,
// which cannot be loopback).
// The webhook configurations, the APIServices and the Service's
// EndpointSlice are rewritten to those addresses and CA, so a restart never
// leaves them pointing at an old port. The caller waits for
// virtapi.WaitAnswering, and for virtapi.WaitAPIServiceAvailable when
// aggregated is true, before it calls the server ready.
//
// A machine whose only address is loopback (no default route) cannot serve
// the aggregated API, which the aggregator reaches through an EndpointSlice;
// the webhooks still work there, and the warning says what is missing.
func startVirtAPI(ctx context.Context, cp *controlplane.ControlPlane, e virtAPIEmbedding, run func(string, func() error)) (aggregated bool, err error) {
	svc := virtapi.ServiceName + "." + bootstrap.KubeVirtNamespace + ".svc"
	certFile, keyFile, err := cp.IssueCertificate("virt-api", svc, true,
		[]string{"localhost", svc, svc + ".cluster.local"}, []net.IP{net.IPv4(127, 0, 0, 1), cp.NodeIP})
	if err != nil {
		return false, err
	}
	ca, err := os.ReadFile(cp.CAFile())
	if err != nil {
		return false, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(e.Port)))
	if err != nil {
		return false, fmt.Errorf("virt-api: --virt-api-port %d: %w", e.Port, err)
	}
	aggregated = !cp.NodeIP.IsLoopback()
	var extra []net.Listener
	if aggregated {
		apiLn, err := net.Listen("tcp", net.JoinHostPort(cp.NodeIP.String(), "0"))
		if err != nil {
			ln.Close()
			return false, fmt.Errorf("virt-api: listen on the node address %s: %w", cp.NodeIP, err)
		}
		extra = append(extra, apiLn)
	} else {
		klog.FromContext(ctx).Info("WARNING: no non-loopback address on this machine; subresources.kubevirt.io and upload.cdi.kubevirt.io (virtctl start, stop, console, image-upload, ...) are not served")
	}
	cfg := cp.RESTConfig()
	run("virt-api", func() error {
		return virtapi.Run(ctx, cfg, &virtapi.Options{
			Listener: ln, ExtraListeners: extra, CertFile: certFile, KeyFile: keyFile,
			HandlerTLS: e.HandlerTLS, HandlerFallback: e.HandlerAddress,
		})
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return false, err
	}
	url := "https://" + ln.Addr().String()
	if err := virtapi.Register(ctx, client, virtapi.Target{URL: url, CABundle: ca}); err != nil {
		return false, err
	}
	if !aggregated {
		return false, nil
	}
	agg, err := aggregator.NewForConfig(cfg)
	if err != nil {
		return false, err
	}
	if err := virtapi.RegisterAPIService(ctx, client, agg, virtapi.APITarget{
		Namespace: bootstrap.KubeVirtNamespace, Endpoint: extra[0].Addr().(*net.TCPAddr), CABundle: ca,
	}); err != nil {
		return true, err
	}
	return true, removeUploadTokenCRD(ctx, cfg)
}

// uploadTokenCRD is the CRD older virtkube served UploadTokenRequests by.
const uploadTokenCRD = "uploadtokenrequests.upload.cdi.kubevirt.io"

// removeUploadTokenCRD deletes the UploadTokenRequest CRD a data dir of an
// older virtkube still holds: virt-api answers that group now, and the
// APIService registered above has already been taken from the aggregator's
// CRD handling, so nothing but stale token requests goes with it.
func removeUploadTokenCRD(ctx context.Context, cfg *rest.Config) error {
	c, err := apiextclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	err = c.ApiextensionsV1().CustomResourceDefinitions().Delete(ctx, uploadTokenCRD, metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("delete CRD %s: %w", uploadTokenCRD, err)
	}
	klog.FromContext(ctx).Info("CRD deleted; virt-api serves the group", "crd", uploadTokenCRD)
	return nil
}

func newVirtAPICommand() *cobra.Command {
	o := &virtapi.Options{Addr: fmt.Sprintf(":%d", virtapi.DefaultPort)}
	var kubeconfig, caBundleFile, serviceNamespace, serviceName string
	var register bool
	var servicePort int32 = 443
	cmd := &cobra.Command{
		Use:   "virt-api",
		Short: "Run virt-api: KubeVirt's admission webhooks and the subresources.kubevirt.io API",
		Long: `virt-api serves the mutating and validating admission webhooks of kubevirt.io
VirtualMachineInstances, VirtualMachines and VirtualMachineInstanceReplicaSets
and the validating webhook of CDI's DataVolumes (with clone authorization)
over HTTPS, and the aggregated API subresources.kubevirt.io (start, stop,
restart, console, vnc, pause, unpause, version), and CDI's upload.cdi.kubevirt.io
(UploadTokenRequests, signed with the key of Secret kubevirt/cdi-upload-token-key).
With --register it also writes the webhook configurations virt-api-mutator and
virt-api-validator and the APIServices v1 and v1alpha3.subresources.kubevirt.io
and v1beta1.upload.cdi.kubevirt.io, pointing at --service-name in
--service-namespace and trusting --ca-bundle-file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			if register && (caBundleFile == "" || serviceName == "") {
				return fmt.Errorf("--register needs --ca-bundle-file and --service-name")
			}
			return runComponent(cmd, kubeconfig, func(ctx context.Context, cfg *rest.Config) error {
				if register {
					if err := registerService(ctx, cfg, caBundleFile, admissionregv1.ServiceReference{
						Namespace: serviceNamespace, Name: serviceName, Port: &servicePort}); err != nil {
						return err
					}
				}
				return virtapi.Run(ctx, cfg, o)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig to use; empty means the pod's service account")
	f.StringVar(&o.Addr, "address", o.Addr, "address the HTTPS server listens on")
	f.StringVar(&o.CertFile, "tls-cert-file", "", "serving certificate")
	f.StringVar(&o.KeyFile, "tls-key-file", "", "serving certificate's key")
	f.BoolVar(&register, "register", false, "create or update the webhook configurations at start")
	f.StringVar(&caBundleFile, "ca-bundle-file", "", "CA the API server trusts virt-api's certificate by (with --register)")
	f.StringVar(&serviceNamespace, "service-namespace", "kubevirt", "namespace of the Service in front of virt-api (with --register)")
	f.StringVar(&serviceName, "service-name", "virt-api", "Service in front of virt-api (with --register)")
	f.Int32Var(&servicePort, "service-port", servicePort, "port of that Service (with --register)")
	f.StringVar(&o.HandlerTLS.CertFile, "handler-client-cert-file", "", "client certificate (common name virt-api) for virt-handler's console server")
	f.StringVar(&o.HandlerTLS.KeyFile, "handler-client-key-file", "", "key of --handler-client-cert-file")
	f.StringVar(&o.HandlerTLS.CAFile, "handler-ca-file", "", "CA that signed virt-handler's serving certificates")
	return cmd
}

// registerService points the webhook configurations and virt-api's
// APIServices at the Service in front of the virt-api pods.
func registerService(ctx context.Context, cfg *rest.Config, caBundleFile string, svc admissionregv1.ServiceReference) error {
	ca, err := os.ReadFile(caBundleFile)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := virtapi.Register(ctx, client, virtapi.Target{Service: &svc, CABundle: ca}); err != nil {
		return err
	}
	agg, err := aggregator.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return virtapi.RegisterAPIService(ctx, client, agg, virtapi.APITarget{Namespace: svc.Namespace, Name: svc.Name, Port: *svc.Port, CABundle: ca})
}
