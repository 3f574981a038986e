package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"
)

// The baseline: a plain veth between two network namespaces, measured the
// same way as a guest (an HTTP server on port 80 in one, the downloads,
// requests and ping from the other). This program runs itself in each
// namespace with a role flag.
var (
	role   = flag.String("role", "", "internal: server or client, inside a baseline namespace")
	target = flag.String("target", "", "internal: the client's server address")
)

func init() {
	// Roles run before main's flags matter.
	for _, a := range os.Args {
		if strings.HasPrefix(a, "--role=") || strings.HasPrefix(a, "-role=") {
			flag.Parse()
			os.Exit(runRole())
		}
	}
}

func runRole() int {
	switch *role {
	case "server":
		big := bytes.Repeat([]byte{0}, bigMiB<<20)
		mux := http.NewServeMux()
		mux.HandleFunc("/big", func(w http.ResponseWriter, _ *http.Request) { w.Write(big) })
		mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "baseline") })
		if err := http.ListenAndServe(":80", mux); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "client":
		r, err := hostToGuest(&vmGuest{podIP: *target})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_ = json.NewEncoder(os.Stdout).Encode(r)
	default:
		fmt.Fprintln(os.Stderr, "unknown role", *role)
		return 2
	}
	return 0
}

func vethBaseline() ([]Result, error) {
	a, b := fmt.Sprintf("nb-a-%d", os.Getpid()), fmt.Sprintf("nb-b-%d", os.Getpid())
	sh := func(args ...string) error {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %v: %s", args, err, out)
		}
		return nil
	}
	defer exec.Command("ip", "netns", "del", a).Run()
	defer exec.Command("ip", "netns", "del", b).Run()
	for _, step := range [][]string{
		{"ip", "netns", "add", a}, {"ip", "netns", "add", b},
		{"ip", "link", "add", "nbveth-a", "netns", a, "type", "veth", "peer", "name", "nbveth-b", "netns", b},
		{"ip", "-n", a, "addr", "add", "10.199.0.1/24", "dev", "nbveth-a"},
		{"ip", "-n", b, "addr", "add", "10.199.0.2/24", "dev", "nbveth-b"},
		{"ip", "-n", a, "link", "set", "nbveth-a", "up"}, {"ip", "-n", b, "link", "set", "nbveth-b", "up"},
		{"ip", "-n", a, "link", "set", "lo", "up"}, {"ip", "-n", b, "link", "set", "lo", "up"},
	} {
		if err := sh(step...); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	srv := exec.Command("ip", "netns", "exec", b, self, "--role=server")
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(500 * time.Millisecond)
	out, err := exec.Command("ip", "netns", "exec", a, self, "--role=client", "--target=10.199.0.2").Output()
	if err != nil {
		return nil, fmt.Errorf("baseline client: %w", err)
	}
	var r Result
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, err
	}
	r.Path = "veth between two netns"
	return []Result{r}, nil
}
