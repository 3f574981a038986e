// Command bench measures virtkube with bursts of VMIs against a running
// `virtkube server`: create → Scheduled, Running and the guest's ready
// line, delete → gone (P50/P95/P99/max), VMIs per second to Running, the
// launcher pods' memory and the server's CPU per VMI. It is a measurement,
// not a test: it asserts nothing about time.
//
//	go run ./test/bench --kubeconfig /var/lib/virtkube/kubeconfig --n 1,10 --guest halt
//	go run ./test/bench --ab --a "bin/virtkube server" --b "/tmp/old/virtkube server" --n 1 --runs 5
//
// With --ab it starts the two servers itself, one at a time, and runs the
// same burst on A, then B, --runs times, printing B/A pair by pair.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/handler"
)

type options struct {
	kubeconfig, kubeletRoot string
	serverPID               int
	sizes                   []int
	runs                    int
	guest                   string
	memory                  string
	cpu                     string
	podNetwork              bool
	grace                   int64
	timeout                 time.Duration
	json                    bool
	ab                      bool
	a, b                    string
}

func main() {
	ctrllog.SetLogger(logr.Discard()) // the client's own log; errors come back as values
	o := options{}
	sizes := "1,10,50"
	// A flag set of its own: imported packages register flags (kubeconfig)
	// on the global one.
	flag := flag.NewFlagSet("bench", flag.ExitOnError)
	flag.StringVar(&o.kubeconfig, "kubeconfig", envOr("KUBECONFIG", "/var/lib/virtkube/kubeconfig"), "kubeconfig of the server to measure")
	flag.StringVar(&o.kubeletRoot, "kubelet-root", "", "the server's kubelet root, for the guests' serial logs (default: <kubeconfig's dir>/kubelet)")
	flag.IntVar(&o.serverPID, "server-pid", 0, "pid of the `virtkube server` process, for its CPU time (default: found by its --data-dir)")
	flag.StringVar(&sizes, "n", sizes, "burst sizes, comma-separated")
	flag.IntVar(&o.runs, "runs", 1, "bursts of each size")
	flag.StringVar(&o.guest, "guest", "halt", "guest: halt (a boot sector that halts) or linux (the test guest; adds create→guest-ready)")
	flag.StringVar(&o.memory, "memory", "128Mi", "guest memory")
	flag.StringVar(&o.cpu, "cpu", "", "the VMIs' CPU request (resources.requests.cpu); empty leaves it to the server: 100m per vCPU by KubeVirt's default cpuAllocationRatio, so a 2-core node holds 20 VMIs")
	flag.BoolVar(&o.podNetwork, "pod-network", true, "give the VMIs the pod network (KubeVirt's default interface)")
	flag.Int64Var(&o.grace, "grace", -1, "terminationGracePeriodSeconds of the VMIs (default: 0 for halt, which cannot answer the ACPI power button, so delete→gone is a kill; 30 for linux)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "limit of one burst")
	flag.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	flag.BoolVar(&o.ab, "ab", false, "compare two servers: start --a and --b in turn, one burst each per round")
	flag.StringVar(&o.a, "a", "", "with --ab: command line of server A, e.g. \"bin/virtkube server --kube-proxy=false\"")
	flag.StringVar(&o.b, "b", "", "with --ab: command line of server B")
	_ = flag.Parse(os.Args[1:])
	var err error
	if o.sizes, err = parseSizes(sizes); err == nil {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if o.ab {
			err = runAB(ctx, o)
		} else {
			err = runLive(ctx, o)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// runLive runs every burst size --runs times against the server of
// --kubeconfig.
func runLive(ctx context.Context, o options) error {
	t, b, cleanup, err := prepare(ctx, o, o.kubeconfig, o.serverPID)
	if err != nil {
		return err
	}
	defer cleanup()
	var results []*Result
	for _, n := range o.sizes {
		var runs []*Result
		for i := range o.runs {
			r, err := b.run(ctx, t, n, i+1)
			if err != nil {
				return fmt.Errorf("N=%d run %d: %w", n, i+1, err)
			}
			fmt.Fprintf(os.Stderr, "N=%d run %d: create→Running P50 %.3fs\n", n, i+1, r.CreateToRunning.P50)
			runs = append(runs, r)
		}
		results = append(results, runs...)
		if len(runs) > 1 {
			results = append(results, Pool(runs))
		}
	}
	if o.json {
		return WriteJSON(os.Stdout, results)
	}
	return WriteTable(os.Stdout, results)
}

// runAB alternates servers A and B, each on its own data dir, one burst
// of the first size per server per round.
func runAB(ctx context.Context, o options) error {
	a, b := strings.Fields(o.a), strings.Fields(o.b)
	if len(a) == 0 || len(b) == 0 {
		return errors.New("--ab needs --a and --b, the command lines of two servers")
	}
	work, err := os.MkdirTemp("", "virtkube-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logs, err := os.Create(filepath.Join(work, "servers.log"))
	if err != nil {
		return err
	}
	defer logs.Close()
	side := func(command []string, name string, round int) (*Result, error) {
		s, err := startServer(ctx, command, filepath.Join(work, name), logs)
		if err != nil {
			return nil, fmt.Errorf("server %s: %w", name, err)
		}
		defer func() {
			if err := s.stop(); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
			}
		}()
		t, bu, cleanup, err := prepare(ctx, o, s.kubeconfig, s.cmd.Process.Pid)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		r, err := bu.run(ctx, t, o.sizes[0], round)
		if r != nil {
			r.Label = name
		}
		return r, err
	}
	var pairs []Pair
	for i := range o.runs {
		ra, err := side(a, "A", i+1)
		if err != nil {
			return err
		}
		rb, err := side(b, "B", i+1)
		if err != nil {
			return err
		}
		pairs = append(pairs, NewPair(ra, rb))
		fmt.Fprintf(os.Stderr, "round %d: create→Running P50 A %.3fs B %.3fs\n", i+1, ra.CreateToRunning.P50, rb.CreateToRunning.P50)
	}
	if o.json {
		return WriteJSON(os.Stdout, pairs)
	}
	for _, p := range pairs {
		if err := WriteTable(os.Stdout, []*Result{p.A, p.B}); err != nil {
			return err
		}
	}
	fmt.Println()
	return WriteRatios(os.Stdout, pairs)
}

// prepare connects to the server of kubeconfig, lets it emulate when this
// machine has no KVM, and pushes the guest's containerDisk to a registry on
// loopback; cleanup stops the registry.
func prepare(ctx context.Context, o options, kubeconfig string, pid int) (target, burst, func(), error) {
	fail := func(err error) (target, burst, func(), error) { return target{}, burst{}, nil, err }
	mem, err := resource.ParseQuantity(o.memory)
	if err != nil {
		return fail(fmt.Errorf("--memory: %w", err))
	}
	var cpu *resource.Quantity
	if o.cpu != "" {
		q, err := resource.ParseQuantity(o.cpu)
		if err != nil {
			return fail(fmt.Errorf("--cpu: %w", err))
		}
		cpu = &q
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fail(err)
	}
	cfg.QPS, cfg.Burst = 500, 1000 // as fast as the client can
	scheme, err := bootstrap.Scheme()
	if err != nil {
		return fail(err)
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fail(err)
	}
	if pid == 0 {
		if pid, err = findServer(kubeconfig); err != nil {
			return fail(err)
		}
	}
	root := o.kubeletRoot
	if root == "" {
		root = filepath.Join(filepath.Dir(kubeconfig), "kubelet")
	}
	if handler.KVMUsable() != nil {
		kv := &virtv1.KubeVirt{}
		kv.Namespace, kv.Name = bootstrap.KubeVirtNamespace, bootstrap.KubeVirtName
		patch := []byte(`{"spec":{"configuration":{"developerConfiguration":{"useEmulation":true}}}}`)
		if err := c.Patch(ctx, kv, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return fail(fmt.Errorf("allow emulation (no KVM here): %w", err))
		}
	}
	regCtx, stopRegistry := context.WithCancel(ctx)
	work, err := os.MkdirTemp("", "virtkube-bench-guest-")
	if err != nil {
		stopRegistry()
		return fail(err)
	}
	cleanup := func() { stopRegistry(); os.RemoveAll(work) }
	image, err := guestImage(regCtx, o.guest, work)
	if err != nil {
		cleanup()
		return fail(err)
	}
	grace := o.grace
	if grace < 0 {
		grace = map[string]int64{"halt": 0, "linux": 30}[o.guest]
	}
	t := target{client: c, kubeletRoot: root, serverPID: pid}
	return t, burst{guest: o.guest, image: image, memory: mem, cpu: cpu, podNetwork: o.podNetwork, grace: grace, timeout: o.timeout}, cleanup, nil
}

func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--n %q: want positive counts separated by commas", s)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
