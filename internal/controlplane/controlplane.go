// Package controlplane runs a real Kubernetes control plane inside one
// process: embedded etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler, all upstream code from k8s.io/kubernetes. It owns their
// certificates and kubeconfigs under a data dir and starts them in order of
// readiness: etcd, then the apiserver, then the rest.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// Config says where the control plane keeps its state and where it listens.
type Config struct {
	// DataDir holds etcd's data, the PKI and the kubeconfigs.
	DataDir string
	// BindAddress and APIPort are where kube-apiserver listens.
	BindAddress net.IP
	APIPort     int
	// ServiceCIDR is the range ClusterIPs come from.
	ServiceCIDR string
	// ClusterCIDR is the range pod CIDRs are carved from.
	ClusterCIDR string
	// KubeProxy runs kube-proxy for NodeName.
	KubeProxy bool
	NodeName  string
}

// Validate reports the first thing wrong with c, naming the flag to change.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir must be set")
	}
	if c.BindAddress == nil {
		return errors.New("--bind-address must be an IP address")
	}
	if c.APIPort < 1 || c.APIPort > 65535 {
		return fmt.Errorf("--api-port %d: must be between 1 and 65535", c.APIPort)
	}
	if _, _, err := net.ParseCIDR(c.ServiceCIDR); err != nil {
		return fmt.Errorf("--service-cidr %q: %w", c.ServiceCIDR, err)
	}
	if _, _, err := net.ParseCIDR(c.ClusterCIDR); err != nil {
		return fmt.Errorf("--cluster-cidr %q: %w", c.ClusterCIDR, err)
	}
	if c.KubeProxy && c.NodeName == "" {
		return errors.New("--node-name must be set to run kube-proxy")
	}
	return nil
}

// ControlPlane is a prepared control plane; Start runs it.
type ControlPlane struct {
	cfg Config

	// AdminKubeconfig is the path of the kubeconfig for people and tools.
	AdminKubeconfig string
	// NodeIP is the address this machine is known by in the cluster.
	NodeIP net.IP

	etcd      *etcdServer
	apiserver *apiServer
	kcm       *controllerManager
	scheduler *scheduler
	proxy     *kubeProxy // nil when kube-proxy is off

	restConfig *rest.Config
	ca         *authority

	stopAPI, stopRest context.CancelFunc
	apiDone, restDone chan struct{}
	errs              chan error
}

// dirs under the data dir.
func (c Config) pkiDir() string  { return filepath.Join(c.DataDir, "pki") }
func (c Config) etcdDir() string { return filepath.Join(c.DataDir, "etcd") }
func (c Config) runDir() string  { return filepath.Join(c.DataDir, "run") }

// New prepares the control plane: it creates (or loads) the PKI, writes the
// kubeconfigs and parses every component's arguments. Nothing runs yet.
func New(cfg Config) (*ControlPlane, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = abs
	for _, d := range []string{cfg.DataDir, cfg.pkiDir(), cfg.runDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	cp := &ControlPlane{cfg: cfg, AdminKubeconfig: filepath.Join(cfg.DataDir, "kubeconfig")}
	cp.NodeIP = hostIP()

	cp.etcd, err = newEtcd(cfg.etcdDir(), cfg.runDir())
	if err != nil {
		return nil, err
	}
	files, err := cp.writePKI()
	if err != nil {
		return nil, err
	}
	if cp.apiserver, err = prepareAPIServer(cp.apiServerArgs(files)); err != nil {
		return nil, err
	}
	if cp.kcm, err = prepareControllerManager(cp.controllerManagerArgs(files)); err != nil {
		return nil, err
	}
	if cp.scheduler, err = prepareScheduler(cp.schedulerArgs(files)); err != nil {
		return nil, err
	}
	if cfg.KubeProxy {
		if cp.proxy, err = prepareKubeProxy(cp.kubeProxyArgs()); err != nil {
			return nil, err
		}
	}
	cp.restConfig, err = clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig)
	if err != nil {
		return nil, err
	}
	// In-process components talk to an apiserver in the same process:
	// client-go's default of 5 requests/s (burst 10) made a burst of ten
	// VMIs wait seconds for their status writes.
	cp.restConfig.QPS, cp.restConfig.Burst = inProcessQPS, inProcessBurst
	return cp, nil
}

// hostIP is the address of the interface holding the default route, or
// loopback on a machine without one.
func hostIP() net.IP {
	if ip, err := utilnet.ChooseHostInterface(); err == nil {
		return ip
	}
	return net.IPv4(127, 0, 0, 1)
}

// pkiFiles are the paths the components are configured with.
type pkiFiles struct {
	CA, CAKey                       string
	FrontProxyCA                    string
	ServingCert, ServingKey         string
	ProxyClientCert, ProxyClientKey string
	ServiceAccountKey               string
	ControllerManagerKubeconfig     string
	SchedulerKubeconfig             string
}

// writePKI creates the CAs and service-account key once, and issues fresh
// leaf certificates and kubeconfigs on every start (so a changed address or
// port is always covered).
func (cp *ControlPlane) writePKI() (pkiFiles, error) {
	dir := cp.cfg.pkiDir()
	var f pkiFiles
	ca, err := loadOrCreateCA(dir, "ca", "virtkube-ca")
	if err != nil {
		return f, err
	}
	cp.ca = ca
	f.CA, f.CAKey = ca.CertFile, filepath.Join(dir, "ca.key")
	frontProxy, err := loadOrCreateCA(dir, "front-proxy-ca", "virtkube-front-proxy-ca")
	if err != nil {
		return f, err
	}
	f.FrontProxyCA = frontProxy.CertFile
	if f.ServiceAccountKey, err = loadOrCreateServiceAccountKey(dir); err != nil {
		return f, err
	}

	_, serviceNet, _ := net.ParseCIDR(cp.cfg.ServiceCIDR)
	kubernetesServiceIP, err := firstIP(serviceNet)
	if err != nil {
		return f, err
	}
	hostname, _ := os.Hostname()
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, kubernetesServiceIP, cp.NodeIP}
	if !cp.cfg.BindAddress.IsUnspecified() {
		ips = append(ips, cp.cfg.BindAddress)
	}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if hostname != "" {
		dns = append(dns, hostname)
	}
	if f.ServingCert, f.ServingKey, err = ca.issue(dir, leaf{
		Name: "apiserver", CommonName: "kube-apiserver", Server: true, DNSNames: dns, IPs: ips,
	}); err != nil {
		return f, err
	}
	if f.ProxyClientCert, f.ProxyClientKey, err = frontProxy.issue(dir, leaf{
		Name: "front-proxy-client", CommonName: "front-proxy-client", Client: true,
	}); err != nil {
		return f, err
	}

	server := "https://" + net.JoinHostPort(cp.apiHost(), strconv.Itoa(cp.cfg.APIPort))
	clients := []struct {
		leaf       leaf
		kubeconfig string
	}{
		{leaf{Name: "admin", CommonName: "virtkube-admin", Organization: []string{"system:masters"}, Client: true}, cp.AdminKubeconfig},
		{leaf{Name: "controller-manager", CommonName: "system:kube-controller-manager", Client: true}, filepath.Join(dir, "controller-manager.kubeconfig")},
		{leaf{Name: "scheduler", CommonName: "system:kube-scheduler", Client: true}, filepath.Join(dir, "scheduler.kubeconfig")},
	}
	for _, c := range clients {
		cert, key, err := ca.issue(dir, c.leaf)
		if err != nil {
			return f, err
		}
		if err := writeKubeconfig(c.kubeconfig, server, f.CA, cert, key, c.leaf.CommonName); err != nil {
			return f, err
		}
	}
	f.ControllerManagerKubeconfig = clients[1].kubeconfig
	f.SchedulerKubeconfig = clients[2].kubeconfig
	return f, nil
}

// apiHost is the host clients on this machine use to reach the apiserver.
func (cp *ControlPlane) apiHost() string {
	if cp.cfg.BindAddress.IsUnspecified() {
		if cp.cfg.BindAddress.To4() == nil {
			return "::1"
		}
		return "127.0.0.1"
	}
	return cp.cfg.BindAddress.String()
}

func firstIP(n *net.IPNet) (net.IP, error) {
	ip := make(net.IP, len(n.IP))
	copy(ip, n.IP)
	ip[len(ip)-1]++
	if !n.Contains(ip) {
		return nil, fmt.Errorf("--service-cidr %s has no usable address", n)
	}
	return ip, nil
}

const serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

func (cp *ControlPlane) apiServerArgs(f pkiFiles) map[string]string {
	advertise := cp.cfg.BindAddress
	// Pods can reach the apiserver through the kubernetes Service only when
	// it listens on an address they can route to; on loopback it cannot, so
	// the Service is left without endpoints rather than pointed at nothing.
	reconciler := "lease"
	if advertise.IsLoopback() {
		reconciler = "none"
	}
	if advertise.IsUnspecified() || advertise.IsLoopback() {
		advertise = cp.NodeIP
	}
	return map[string]string{
		"advertise-address":         advertise.String(),
		"allow-privileged":          "true",
		"anonymous-auth":            "true", // only /livez, /readyz, /healthz and /version, via RBAC
		"api-audiences":             serviceAccountIssuer,
		"authorization-mode":        "RBAC",
		"bind-address":              cp.cfg.BindAddress.String(),
		"client-ca-file":            f.CA,
		"enable-aggregator-routing": "true",
		"endpoint-reconciler-type":  reconciler,
		"etcd-servers":              cp.etcd.Endpoint(),
		// /debug/pprof for cluster-admins (kube-apiserver's default): it
		// profiles the whole `virtkube server` process, every component.
		"profiling":                          "true",
		"proxy-client-cert-file":             f.ProxyClientCert,
		"proxy-client-key-file":              f.ProxyClientKey,
		"requestheader-allowed-names":        "front-proxy-client",
		"requestheader-client-ca-file":       f.FrontProxyCA,
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-username-headers":     "X-Remote-User",
		// On stop, end open watches within 2 s rather than wait for
		// their clients: kube-proxy's informers never stop theirs, and
		// held `virtkube server` 30 s past SIGTERM.
		"shutdown-watch-termination-grace-period": "2s",
		"secure-port":                      strconv.Itoa(cp.cfg.APIPort),
		"service-account-issuer":           serviceAccountIssuer,
		"service-account-key-file":         f.ServiceAccountKey,
		"service-account-signing-key-file": f.ServiceAccountKey,
		"service-cluster-ip-range":         cp.cfg.ServiceCIDR,
		"tls-cert-file":                    f.ServingCert,
		"tls-private-key-file":             f.ServingKey,
	}
}

func (cp *ControlPlane) controllerManagerArgs(f pkiFiles) map[string]string {
	return map[string]string{
		"allocate-node-cidrs":              "false", // the node declares its own podCIDR
		"cluster-cidr":                     cp.cfg.ClusterCIDR,
		"cluster-signing-cert-file":        f.CA,
		"cluster-signing-key-file":         f.CAKey,
		"controllers":                      "*",
		"kubeconfig":                       f.ControllerManagerKubeconfig,
		"leader-elect":                     "false",
		"profiling":                        "false",
		"root-ca-file":                     f.CA,
		"secure-port":                      "0", // no extra port; health is checked through the apiserver
		"service-account-private-key-file": f.ServiceAccountKey,
		"service-cluster-ip-range":         cp.cfg.ServiceCIDR,
		"use-service-account-credentials":  "true",
	}
}

func (cp *ControlPlane) schedulerArgs(f pkiFiles) map[string]string {
	return map[string]string{
		"kubeconfig":   f.SchedulerKubeconfig,
		"leader-elect": "false",
		"profiling":    "false",
		"secure-port":  "0",
	}
}

// CAFile is the cluster CA's certificate.
func (cp *ControlPlane) CAFile() string { return cp.ca.CertFile }

// IssueCertificate signs a fresh certificate of the cluster CA for a
// virtkube component (e.g. virt-handler's console server, virt-api's client
// identity) and writes it as <pki>/<name>.{crt,key}.
func (cp *ControlPlane) IssueCertificate(name, commonName string, server bool, dnsNames []string, ips []net.IP) (certFile, keyFile string, err error) {
	return cp.ca.issue(cp.cfg.pkiDir(), leaf{Name: name, CommonName: commonName, Server: server, Client: !server, DNSNames: dnsNames, IPs: ips})
}

// Client rate limits of the in-process components.
const (
	inProcessQPS   = 200
	inProcessBurst = 400
)

// RESTConfig is an admin client configuration for in-process users.
func (cp *ControlPlane) RESTConfig() *rest.Config { return rest.CopyConfig(cp.restConfig) }

// Start runs etcd and the apiserver and returns once the apiserver reports
// ready; then it starts the controller manager and the scheduler. A fatal
// error of any component after that arrives on Err.
func (cp *ControlPlane) Start(ctx context.Context) error {
	log := klog.FromContext(ctx)
	cp.errs = make(chan error, 4)

	begin := time.Now()
	if err := cp.etcd.Start(ctx); err != nil {
		return err
	}
	log.Info("etcd ready", "endpoint", cp.etcd.Endpoint(), "elapsed", time.Since(begin).Round(time.Millisecond))
	go func() {
		if err, ok := <-cp.etcd.Err(); ok && err != nil {
			cp.errs <- fmt.Errorf("etcd: %w", err)
		}
	}()

	apiCtx, stopAPI := context.WithCancel(context.WithoutCancel(ctx))
	cp.stopAPI, cp.apiDone = stopAPI, make(chan struct{})
	apiErr := make(chan error, 1)
	go func() {
		defer close(cp.apiDone)
		if err := cp.apiserver.Run(apiCtx); err != nil {
			apiErr <- err
			cp.errs <- fmt.Errorf("kube-apiserver: %w", err)
		}
	}()
	if err := cp.waitReady(ctx, apiErr); err != nil {
		cp.Stop()
		return err
	}
	log.Info("kube-apiserver ready", "elapsed", time.Since(begin).Round(time.Millisecond))

	restCtx, stopRest := context.WithCancel(context.WithoutCancel(ctx))
	cp.stopRest, cp.restDone = stopRest, make(chan struct{})
	components := map[string]func(context.Context) error{
		"kube-controller-manager": cp.kcm.Run,
		"kube-scheduler":          cp.scheduler.Run,
	}
	if cp.proxy != nil {
		components["kube-proxy"] = cp.proxy.Run
	}
	done := make(chan struct{}, len(components))
	for name, run := range components {
		go func() {
			defer func() { done <- struct{}{} }()
			if err := run(restCtx); err != nil && restCtx.Err() == nil {
				cp.errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	go func() {
		for range components {
			<-done
		}
		close(cp.restDone)
	}()
	return nil
}

// waitReady polls the apiserver's /readyz until it answers ok.
func (cp *ControlPlane) waitReady(ctx context.Context, apiErr <-chan error) error {
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		return err
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-apiErr:
			return false, err
		default:
		}
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			last = strings.TrimSpace(string(body))
			if last == "" {
				last = err.Error()
			}
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w (last answer: %s)", err, last)
	}
	return nil
}

// Err delivers the first fatal error of a running component.
func (cp *ControlPlane) Err() <-chan error { return cp.errs }

// Stop shuts down in the reverse order of start: controller manager and
// scheduler, then the apiserver (which drains its requests), then etcd.
func (cp *ControlPlane) Stop() {
	const grace = 30 * time.Second
	if cp.stopRest != nil {
		cp.stopRest()
		waitOrTimeout(cp.restDone, grace)
	}
	if cp.stopAPI != nil {
		cp.stopAPI()
		waitOrTimeout(cp.apiDone, grace)
	}
	cp.etcd.Stop()
}

func waitOrTimeout(done <-chan struct{}, d time.Duration) {
	select {
	case <-done:
	case <-time.After(d):
	}
}
