package virtkube

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/virtkube/virtkube/internal/app/virtapi"
	"github.com/virtkube/virtkube/internal/controlplane"
)

// startVirtAPI runs virt-api inside `virtkube server`: a serving certificate
// for loopback from the cluster CA, an HTTPS listener on 127.0.0.1:port (0:
// any free port, picked at each start), and the webhook configurations
// rewritten to that URL and CA, so a restart never leaves them pointing at
// an old port. The caller waits for virtapi.WaitAnswering before it calls
// the server ready.
func startVirtAPI(ctx context.Context, cp *controlplane.ControlPlane, port int, run func(string, func() error)) error {
	certFile, keyFile, err := cp.IssueCertificate("virt-api", "virt-api.kubevirt.svc", true,
		[]string{"localhost", "virt-api.kubevirt.svc"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(cp.CAFile())
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("virt-api: --virt-api-port %d: %w", port, err)
	}
	cfg := cp.RESTConfig()
	run("virt-api", func() error {
		return virtapi.Run(ctx, cfg, &virtapi.Options{Listener: ln, CertFile: certFile, KeyFile: keyFile})
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	url := "https://" + ln.Addr().String()
	return virtapi.Register(ctx, client, virtapi.Target{URL: url, CABundle: ca})
}

func newVirtAPICommand() *cobra.Command {
	o := &virtapi.Options{Addr: fmt.Sprintf(":%d", virtapi.DefaultPort)}
	var kubeconfig, caBundleFile, serviceNamespace, serviceName string
	var register bool
	var servicePort int32 = 443
	cmd := &cobra.Command{
		Use:   "virt-api",
		Short: "Run virt-api: KubeVirt's admission webhooks (defaults and validation of VMIs, VMs and VMIRSs)",
		Long: `virt-api serves the mutating and validating admission webhooks of kubevirt.io
VirtualMachineInstances, VirtualMachines and VirtualMachineInstanceReplicaSets
over HTTPS. With --register it also writes the webhook configurations
virt-api-mutator and virt-api-validator, pointing at --service-name in
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
	return cmd
}

func registerService(ctx context.Context, cfg *rest.Config, caBundleFile string, svc admissionregv1.ServiceReference) error {
	ca, err := os.ReadFile(caBundleFile)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return virtapi.Register(ctx, client, virtapi.Target{Service: &svc, CABundle: ca})
}
