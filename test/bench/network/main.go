// Command network measures the pod network a guest sits on, per binding:
// TCP throughput and latency from this machine to a guest and from one guest
// to another, beside the same figures for a plain veth between two network
// namespaces. It runs against a live `virtkube server` on this machine (it
// reads guests' serial consoles from the server's data directory) and boots
// four test guests (two per binding). It is a benchmark, not a test: it
// prints figures and asserts nothing.
//
//	go run ./test/bench/network --kubeconfig /var/lib/virtkube/kubeconfig --data-dir /var/lib/virtkube [--json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/launcherrpc"
	"github.com/virtkube/virtkube/test/containerdisk"
	"github.com/virtkube/virtkube/test/guest"
)

// Result is one measured path.
type Result struct {
	Path          string  `json:"path"`
	ThroughputMBs float64 `json:"throughputMBps"`
	TCPRTTms      float64 `json:"tcpRequestMs,omitempty"`
	PingMs        float64 `json:"pingMs"`
}

const bigMiB = 64

func main() {
	kubeconfig := flag.String("kubeconfig", "/var/lib/virtkube/kubeconfig", "kubeconfig of the server")
	dataDir := flag.String("data-dir", "/var/lib/virtkube", "the server's --data-dir (for the guests' consoles)")
	asJSON := flag.Bool("json", false, "print JSON instead of a table")
	flag.Parse()
	if err := run(*kubeconfig, *dataDir, *asJSON); err != nil {
		log.Fatal(err)
	}
}

func run(kubeconfig, dataDir string, asJSON bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var results []Result
	veth, err := vethBaseline()
	if err != nil {
		return fmt.Errorf("veth baseline: %w", err)
	}
	results = append(results, veth...)

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	scheme, err := bootstrap.Scheme()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	disk, err := guest.Disk()
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go http.Serve(l, registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	ref, err := containerdisk.Push(ctx, l.Addr().String(), "virtkube/test-guest", "netbench", disk)
	if err != nil {
		return err
	}
	ns := fmt.Sprintf("netbench-%d", time.Now().Unix())
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})

	bindings := map[string]string{"bridge": "bridge: {}", "masquerade": "masquerade: {}"}
	guests := map[string]*vmGuest{}
	for _, b := range []string{"bridge", "masquerade"} {
		for _, n := range []string{"a", "b"} {
			name := b[:2] + "-" + n
			vmi := &virtv1.VirtualMachineInstance{}
			doc := fmt.Sprintf(`metadata: {name: %s, namespace: %s}
spec:
  domain:
    resources: {requests: {memory: 192Mi}}
    devices:
      disks: [{name: root, disk: {bus: virtio}}]
      interfaces: [{name: default, %s}]
  networks: [{name: default, pod: {}}]
  volumes: [{name: root, containerDisk: {image: %s}}]
`, name, ns, bindings[b], ref)
			if err := yaml.Unmarshal([]byte(doc), vmi); err != nil {
				return err
			}
			if err := c.Create(ctx, vmi); err != nil {
				return err
			}
			guests[name] = &vmGuest{name: name}
		}
	}
	for name, g := range guests {
		if err := g.wait(ctx, c, ns, dataDir); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	for _, b := range []string{"bridge", "masquerade"} {
		a, other := guests[b[:2]+"-a"], guests[b[:2]+"-b"]
		host, err := hostToGuest(other)
		if err != nil {
			return fmt.Errorf("%s host to guest: %w", b, err)
		}
		host.Path = "host → guest (" + b + ")"
		results = append(results, host)
		gg, err := guestToGuest(a, other)
		if err != nil {
			return fmt.Errorf("%s guest to guest: %w", b, err)
		}
		gg.Path = "guest → guest (" + b + ")"
		results = append(results, gg)
	}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(results)
	}
	fmt.Printf("%-30s %14s %16s %10s\n", "PATH", "TCP MB/s", "HTTP request ms", "ping ms")
	for _, r := range results {
		rtt := "-"
		if r.TCPRTTms > 0 {
			rtt = fmt.Sprintf("%.3f", r.TCPRTTms)
		}
		fmt.Printf("%-30s %14.1f %16s %10.3f\n", r.Path, r.ThroughputMBs, rtt, r.PingMs)
	}
	return nil
}

// vmGuest is a booted test guest and its serial console.
type vmGuest struct {
	name  string
	podIP string
	con   net.Conn
	buf   []byte
}

// wait waits until the guest runs and has its address, opens its console
// and makes the file the throughput runs download.
func (g *vmGuest) wait(ctx context.Context, c client.Client, ns, dataDir string) error {
	deadline := time.Now().Add(5 * time.Minute)
	var vmi virtv1.VirtualMachineInstance
	for {
		if time.Now().After(deadline) {
			return fmt.Errorf("not running with an address after 5 minutes (phase %s)", vmi.Status.Phase)
		}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: g.name}, &vmi); err == nil &&
			vmi.Status.Phase == virtv1.Running && len(vmi.Status.Interfaces) > 0 && len(vmi.Status.ActivePods) > 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	g.podIP = vmi.Status.Interfaces[0].IP
	var sockets string
	for uid := range vmi.Status.ActivePods {
		sockets = filepath.Join(dataDir, "kubelet", "pods", string(uid), "volumes", "kubernetes.io~empty-dir", "sockets")
	}
	for !strings.Contains(readFile(filepath.Join(sockets, "serial0.log")), "GUEST-IP") {
		if time.Now().After(deadline) {
			return fmt.Errorf("no DHCP lease on the console")
		}
		time.Sleep(500 * time.Millisecond)
	}
	con, err := launcherrpc.DialUnix(ctx, filepath.Join(sockets, "serial0"))
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	g.con = con
	_, err = g.run(fmt.Sprintf("dd if=/dev/zero of=/www/big bs=1M count=%d 2>/dev/null", bigMiB), time.Minute)
	return err
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// run types cmd on the guest's console and returns what it printed until
// the end marker.
func (g *vmGuest) run(cmd string, timeout time.Duration) (string, error) {
	const marker = "NETBENCH-DONE"
	if _, err := fmt.Fprintf(g.con, "\n%s; echo %s-$((40+2))\n", cmd, marker); err != nil {
		return "", err
	}
	want := marker + "-42"
	_ = g.con.SetReadDeadline(time.Now().Add(timeout))
	chunk := make([]byte, 4096)
	for {
		if i := strings.Index(string(g.buf), want); i >= 0 {
			out := string(g.buf[:i])
			g.buf = g.buf[i+len(want):]
			return out, nil
		}
		n, err := g.con.Read(chunk)
		if err != nil {
			return string(g.buf), fmt.Errorf("%q: %w", cmd, err)
		}
		g.buf = append(g.buf, chunk[:n]...)
	}
}

var (
	realRE = regexp.MustCompile(`real\s+(\d+)m\s*([\d.]+)s`)
	pingRE = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)
)

// hostToGuest: HTTP downloads of the big file, small requests, ping.
func hostToGuest(g *vmGuest) (Result, error) {
	httpc := &http.Client{Timeout: time.Minute}
	var mbs []float64
	for range 3 {
		begin := time.Now()
		resp, err := httpc.Get("http://" + g.podIP + "/big")
		if err != nil {
			return Result{}, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != bigMiB<<20 {
			return Result{}, fmt.Errorf("download: %d bytes, %v", n, err)
		}
		mbs = append(mbs, float64(n)/(1<<20)/time.Since(begin).Seconds())
	}
	var rtts []float64
	for range 30 {
		begin := time.Now()
		resp, err := http.Get("http://" + g.podIP + "/")
		if err != nil {
			return Result{}, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		rtts = append(rtts, float64(time.Since(begin).Microseconds())/1000)
	}
	out, err := exec.Command("ping", "-c", "10", "-i", "0.2", g.podIP).CombinedOutput()
	if err != nil {
		return Result{}, fmt.Errorf("ping: %v: %s", err, out)
	}
	return Result{ThroughputMBs: median(mbs), TCPRTTms: median(rtts), PingMs: pingAvg(string(out))}, nil
}

// guestToGuest: from a's console, wget of b's big file, and ping.
func guestToGuest(a, b *vmGuest) (Result, error) {
	var mbs []float64
	for range 3 {
		out, err := a.run("time wget -q -O /dev/null http://"+b.podIP+"/big", 2*time.Minute)
		if err != nil {
			return Result{}, err
		}
		m := realRE.FindStringSubmatch(out)
		if m == nil {
			return Result{}, fmt.Errorf("no time in %q", out)
		}
		min, _ := strconv.ParseFloat(m[1], 64)
		sec, _ := strconv.ParseFloat(m[2], 64)
		mbs = append(mbs, bigMiB/(min*60+sec))
	}
	out, err := a.run("ping -c 10 -i 0.2 "+b.podIP, time.Minute)
	if err != nil {
		return Result{}, err
	}
	return Result{ThroughputMBs: median(mbs), PingMs: pingAvg(out)}, nil
}

func pingAvg(out string) float64 {
	m := pingRE.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
