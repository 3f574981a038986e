package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/handler"
	"github.com/virtkube/virtkube/internal/version"
	"github.com/virtkube/virtkube/test/framework"
)

const subresourcesV1 = "/apis/subresources.kubevirt.io/v1"

// The aggregated API is registered and Available; its discovery lists the
// subresources; /version is KubeVirt's version document of this build, and
// virtctl prints it as the server version.
func TestSubresourceDiscoveryAndVersion(t *testing.T) {
	s := shared
	out := kubectl(t, s, "", "get", "apiservice", "v1.subresources.kubevirt.io", "v1alpha3.subresources.kubevirt.io")
	if strings.Count(out, "kubevirt/virt-api") != 2 || strings.Count(out, "True") != 2 {
		t.Errorf("APIServices not both served by kubevirt/virt-api and Available:\n%s", out)
	}

	var list metav1.APIResourceList
	if err := json.Unmarshal([]byte(kubectl(t, s, "", "get", "--raw", subresourcesV1)), &list); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range list.APIResources {
		names[r.Name] = r.Namespaced
	}
	for _, want := range []string{"virtualmachines/start", "virtualmachines/stop", "virtualmachines/restart",
		"virtualmachineinstances/console", "virtualmachineinstances/vnc", "virtualmachineinstances/pause", "virtualmachineinstances/unpause"} {
		if !names[want] {
			t.Errorf("discovery of %s lacks namespaced %s: %+v", subresourcesV1, want, list.APIResources)
		}
	}
	if list.GroupVersion != "subresources.kubevirt.io/v1" {
		t.Errorf("groupVersion %q", list.GroupVersion)
	}
	// kubectl's discovery (aggregated, through the apiserver) knows the group.
	if out := kubectl(t, s, "", "api-versions"); !strings.Contains(out, "subresources.kubevirt.io/v1\n") || !strings.Contains(out, "subresources.kubevirt.io/v1alpha3\n") {
		t.Errorf("kubectl api-versions lacks subresources.kubevirt.io:\n%s", out)
	}

	var info version.Info
	if err := json.Unmarshal([]byte(kubectl(t, s, "", "get", "--raw", subresourcesV1+"/version")), &info); err != nil {
		t.Fatal(err)
	}
	if info.GitVersion != version.Version || !strings.HasPrefix(info.GoVersion, "go") || !strings.Contains(info.Platform, "/") || info.Compiler == "" {
		t.Errorf("version %+v, want this build's (%s)", info, version.Version)
	}
	if out := kubectl(t, s, "", "get", "--raw", subresourcesV1+"/healthz"); out != "ok" {
		t.Errorf("healthz = %q", out)
	}

	virtctl := filepath.Join(filepath.Dir(mustBinary(t)), "virtctl")
	got, err := exec.CommandContext(ctxT(t, time.Minute), virtctl, "--kubeconfig", s.Kubeconfig, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("virtctl version: %v\n%s", err, got)
	}
	if !strings.Contains(string(got), "Server Version: version.Info{GitVersion:"+fmt.Sprintf("%q", version.Version)) {
		t.Errorf("virtctl version does not print the server version:\n%s", got)
	}
}

// KubeVirt's ClusterRoles are installed and aggregate into Kubernetes' own:
// someone with the plain edit role in a namespace may start VMs and open
// consoles there, a viewer may not; the manifests of deploy/virt-api are
// valid for a real cluster.
func TestSubresourceRBACAndManifests(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	ctx := ctxT(t, 2*time.Minute)
	for _, role := range []struct{ user, clusterRole string }{{"ed", "edit"}, {"vi", "view"}} {
		if _, err := s.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role.user},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.clusterRole},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: role.user}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Authorized requests reach virt-api and find no VM (404); refused
	// ones stop at RBAC (403).
	vmStart := fmt.Sprintf("%s/namespaces/%s/virtualmachines/nope/start", subresourcesV1, ns)
	console := fmt.Sprintf("%s/namespaces/%s/virtualmachineinstances/nope/console", subresourcesV1, ns)
	framework.Eventually(t, time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, string) {
		startCode, _ := statusOf(put(ctx, asUser(s, "ed"), vmStart, "{}"))
		consoleCode, _ := statusOf(get(ctx, asUser(s, "ed"), console))
		return startCode == http.StatusNotFound && consoleCode == http.StatusNotFound,
			fmt.Sprintf("as an editor: start %d, console %d; want 404 (allowed, no such object)", startCode, consoleCode)
	})
	if code, msg := statusOf(put(ctx, asUser(s, "vi"), vmStart, "{}")); code != http.StatusForbidden {
		t.Errorf("a viewer starting a VM: %d %q, want 403", code, msg)
	}
	if code, msg := statusOf(get(ctx, asUser(s, "vi"), console)); code != http.StatusForbidden {
		t.Errorf("a viewer opening a console: %d %q, want 403", code, msg)
	}

	for _, f := range []string{"clusterroles.yaml", "virt-api.yaml"} {
		kubectl(t, s, "", "apply", "--dry-run=server", "-f", filepath.Join("..", "..", "deploy", "virt-api", f))
	}
}

func mustBinary(t *testing.T) string {
	t.Helper()
	bin, err := framework.Binary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// put sends a subresource request through the apiserver as cfg's user and
// returns the error the client sees.
func put(ctx context.Context, cfg *rest.Config, path, body string) error {
	c, err := rest.UnversionedRESTClientFor(withJSON(cfg))
	if err != nil {
		return err
	}
	return c.Put().AbsPath(path).Body([]byte(body)).SetHeader("Content-Type", "application/json").Do(ctx).Error()
}

// get is put's GET.
func get(ctx context.Context, cfg *rest.Config, path string) error {
	c, err := rest.UnversionedRESTClientFor(withJSON(cfg))
	if err != nil {
		return err
	}
	return c.Get().AbsPath(path).Do(ctx).Error()
}

// asUser is the admin's configuration impersonating user.
func asUser(s *framework.Server, user string) *rest.Config {
	cfg := rest.CopyConfig(s.RESTConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	return cfg
}

func withJSON(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	return c
}

// statusOf is the code and message of a failed request, for assertions.
func statusOf(err error) (int32, string) {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().Code, s.Status().Message
	}
	if err != nil {
		return 0, err.Error()
	}
	return http.StatusOK, ""
}

// A VM that is Halted: `kubectl replace --raw .../start` switches it to
// Always and the VM controller makes the VMI; the guest's serial console
// answers through the apiserver's websocket; KubeVirt's refusals come with
// their status codes; someone without RBAC gets 403 and an editor bound to
// kubevirt.io:edit does not; stop halts the VM again and the VMI goes.
func TestSubresourceStartConsoleStop(t *testing.T) {
	s := shared
	image := testGuestImage(t, s, "subresource")
	ns := s.Namespace(t)
	c := crClient(t, s)
	ctx := ctxT(t, 10*time.Minute)
	vmPath := fmt.Sprintf("%s/namespaces/%s/virtualmachines/vm1", subresourcesV1, ns)
	vmiPath := fmt.Sprintf("%s/namespaces/%s/virtualmachineinstances/vm1", subresourcesV1, ns)

	code, msg := statusOf(put(ctx, s.RESTConfig, fmt.Sprintf("%s/namespaces/%s/virtualmachines/missing/start", subresourcesV1, ns), "{}"))
	if code != http.StatusNotFound || !strings.Contains(msg, `virtualmachine.kubevirt.io "missing" not found`) {
		t.Errorf("start of a missing VM: %d %q, want 404 naming it", code, msg)
	}

	kubectl(t, s, `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: vm1
spec:
  runStrategy: Halted
`+guestTemplate("kubevirt.io/vm: vm1", image), "apply", "-n", ns, "-f", "-")

	code, msg = statusOf(put(ctx, s.RESTConfig, vmPath+"/stop", "{}"))
	if code != http.StatusConflict || !strings.Contains(msg, "VM is not running") {
		t.Errorf("stop of a halted VM: %d %q, want 409 VM is not running", code, msg)
	}
	// A dry run changes nothing.
	if err := put(ctx, s.RESTConfig, vmPath+"/start", `{"dryRun":["All"]}`); err != nil {
		t.Fatalf("dry-run start: %v", err)
	}
	vm := &virtv1.VirtualMachine{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "vm1"}, vm); err != nil || *vm.Spec.RunStrategy != virtv1.RunStrategyHalted {
		t.Fatalf("after a dry run: %v, runStrategy %v", err, vm.Spec.RunStrategy)
	}

	kubectl(t, s, "{}", "replace", "--raw", vmPath+"/start", "-f", "-")
	waitVM(t, c, ns, "vm1", time.Minute, "runStrategy Always", func(vm *virtv1.VirtualMachine) bool {
		return vm.Spec.RunStrategy != nil && *vm.Spec.RunStrategy == virtv1.RunStrategyAlways
	})
	vmi := waitVMIFor(t, c, ns, "vm1", 5*time.Minute, "Running", func(v *virtv1.VirtualMachineInstance) bool {
		return v.Status.Phase == virtv1.Running
	})

	code, msg = statusOf(put(ctx, s.RESTConfig, vmPath+"/start", "{}"))
	if code != http.StatusConflict || !strings.Contains(msg, "VM is already running") {
		t.Errorf("start of a running VM: %d %q, want 409 VM is already running", code, msg)
	}
	code, msg = statusOf(put(ctx, s.RESTConfig, vmiPath+"/unpause", "{}"))
	if code != http.StatusConflict || !strings.Contains(msg, "VMI is not paused") {
		t.Errorf("unpause of a running VMI: %d %q, want 409 VMI is not paused", code, msg)
	}

	// RBAC decides: nobody may not open the console; an editor may.
	if _, stderr, err := s.Kubectl(ctx, nil, "--as=nobody", "get", "--raw", vmiPath+"/console"); err == nil ||
		!strings.Contains(stderr, "Forbidden") || !strings.Contains(stderr, `cannot get resource "virtualmachineinstances/console"`) {
		t.Errorf("console as a user without RBAC: err %v, stderr %q; want 403 naming the subresource", err, stderr)
	}
	if _, err := s.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "editor"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kubevirt.io:edit"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "editor"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	code, msg = statusOf(put(ctx, asUser(s, "nobody"), vmiPath+"/pause", "{}"))
	if code != http.StatusForbidden || !strings.Contains(msg, `User "nobody" cannot update resource "virtualmachineinstances/pause"`) {
		t.Errorf("pause as nobody: %d %q, want 403", code, msg)
	}
	framework.Eventually(t, 30*time.Second, 500*time.Millisecond, func(ctx context.Context) (bool, string) {
		code, msg := statusOf(put(ctx, asUser(s, "editor"), vmiPath+"/pause", `{"dryRun":["All"]}`))
		return code == http.StatusOK, fmt.Sprintf("dry-run pause as editor: %d %s", code, msg)
	})

	// The console, as virtctl opens it: a websocket through the apiserver.
	ws := dialSubresource(t, s.RESTConfig, vmiPath+"/console")
	defer ws.Close()
	if ws.Subprotocol() != handler.PlainSubprotocol {
		t.Errorf("subprotocol %q, want %s", ws.Subprotocol(), handler.PlainSubprotocol)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		for sc := wsLines(ws); sc.Scan(); {
			lines <- sc.Text()
		}
	}()
	// The guest's shell evaluates the arithmetic, so the answer cannot be
	// the terminal echoing the command back.
	answered := false
	for deadline := time.Now().Add(4 * time.Minute); !answered && time.Now().Before(deadline); {
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte("echo SUBRESOURCE-$((6*7))\r")); err != nil {
			t.Fatalf("write to the console: %v", err)
		}
		answered = waitLine(lines, "SUBRESOURCE-42", 5*time.Second)
	}
	if !answered {
		t.Fatal("the guest's shell never answered on the console")
	}
	ws.Close()

	// Pause and unpause go through virt-handler, which reports the Paused
	// condition; a second pause is KubeVirt's 409.
	isPaused := func(v *virtv1.VirtualMachineInstance) bool {
		for _, c := range v.Status.Conditions {
			if c.Type == virtv1.VirtualMachineInstancePaused && c.Status == "True" {
				return true
			}
		}
		return false
	}
	if err := put(ctx, s.RESTConfig, vmiPath+"/pause", "{}"); err != nil {
		t.Fatalf("pause: %v", err)
	}
	waitVMIFor(t, c, ns, "vm1", time.Minute, "Paused", isPaused)
	code, msg = statusOf(put(ctx, s.RESTConfig, vmiPath+"/pause", "{}"))
	if code != http.StatusConflict || !strings.Contains(msg, "VMI is already paused") {
		t.Errorf("pause of a paused VMI: %d %q, want 409", code, msg)
	}
	if err := put(ctx, s.RESTConfig, vmiPath+"/unpause", "{}"); err != nil {
		t.Fatalf("unpause: %v", err)
	}
	waitVMIFor(t, c, ns, "vm1", time.Minute, "no longer paused", func(v *virtv1.VirtualMachineInstance) bool { return !isPaused(v) })

	kubectl(t, s, `{"gracePeriod":null}`, "replace", "--raw", vmPath+"/stop", "-f", "-")
	waitVM(t, c, ns, "vm1", time.Minute, "runStrategy Halted", func(vm *virtv1.VirtualMachine) bool {
		return vm.Spec.RunStrategy != nil && *vm.Spec.RunStrategy == virtv1.RunStrategyHalted
	})
	framework.Eventually(t, 3*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		got := &virtv1.VirtualMachineInstance{}
		err := c.Get(ctx, client.ObjectKeyFromObject(vmi), got)
		return apierrors.IsNotFound(err), fmt.Sprintf("VMI still there: phase %s (%v)", got.Status.Phase, err)
	})
	code, msg = statusOf(put(ctx, s.RESTConfig, vmiPath+"/pause", "{}"))
	if code != http.StatusNotFound || !strings.Contains(msg, `virtualmachineinstance.kubevirt.io "vm1" not found`) {
		t.Errorf("pause of a gone VMI: %d %q, want 404", code, msg)
	}
}

// dialSubresource opens a websocket on the apiserver with cfg's
// credentials, as virtctl does for console and vnc.
func dialSubresource(t *testing.T, cfg *rest.Config, path string) *websocket.Conn {
	t.Helper()
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme, u.Path = "wss", path
	header := http.Header{}
	if cfg.BearerToken != "" {
		header.Set("Authorization", "Bearer "+cfg.BearerToken)
	}
	d := websocket.Dialer{TLSClientConfig: tlsConfig, Subprotocols: []string{handler.PlainSubprotocol}, HandshakeTimeout: 30 * time.Second}
	ws, resp, err := d.Dial(u.String(), header)
	if err != nil {
		body := ""
		if resp != nil {
			b := make([]byte, 4096)
			n, _ := resp.Body.Read(b)
			body = fmt.Sprintf("%d %s", resp.StatusCode, b[:n])
		}
		t.Fatalf("dial %s: %v %s", path, err, body)
	}
	return ws
}

// A Manual VM is started and stopped through state change requests on its
// status, which the VM controller carries out: start makes the VMI, stop
// deletes it. No guest needs to boot for that.
func TestSubresourceManualStateChangeRequests(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	c := crClient(t, s)
	ctx := ctxT(t, 5*time.Minute)
	vmPath := fmt.Sprintf("%s/namespaces/%s/virtualmachines/manual", subresourcesV1, ns)
	kubectl(t, s, `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: manual
spec:
  runStrategy: Manual
`+guestTemplate("kubevirt.io/vm: manual", "registry.invalid/no-such-image:1"), "apply", "-n", ns, "-f", "-")

	if err := put(ctx, s.RESTConfig, vmPath+"/start", "{}"); err != nil {
		t.Fatalf("start: %v", err)
	}
	vmi := &virtv1.VirtualMachineInstance{}
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "manual"}, vmi)
		return err == nil, fmt.Sprintf("no VMI yet (%v)", err)
	})
	vm := waitVM(t, c, ns, "manual", time.Minute, "the start request carried out", func(vm *virtv1.VirtualMachine) bool {
		return len(vm.Status.StateChangeRequests) == 0
	})
	if *vm.Spec.RunStrategy != virtv1.RunStrategyManual {
		t.Errorf("runStrategy %s, want Manual kept", *vm.Spec.RunStrategy)
	}

	if err := put(ctx, s.RESTConfig, vmPath+"/stop", "{}"); err != nil {
		t.Fatalf("stop: %v", err)
	}
	framework.Eventually(t, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		err := c.Get(ctx, client.ObjectKeyFromObject(vmi), &virtv1.VirtualMachineInstance{})
		return apierrors.IsNotFound(err), fmt.Sprintf("VMI still there (%v)", err)
	})
}

// After a restart virt-api listens on a new port; the EndpointSlice follows
// it, so the aggregated API answers again as soon as the server is ready.
func TestSubresourceAfterRestart(t *testing.T) {
	s := framework.Start(t)
	endpoint := func() string {
		return kubectl(t, s, "", "get", "endpointslice", "virt-api", "-n", "kubevirt",
			"-o", "jsonpath={.endpoints[0].addresses[0]}:{.ports[0].port}")
	}
	before := endpoint()
	if err := s.Stop(time.Minute); err != nil {
		t.Fatalf("stop: %v\n%s", err, s.LogTail(30))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if after := endpoint(); after == before {
		t.Logf("same endpoint %s after the restart (the port happened to be free again)", after)
	}
	var info version.Info
	if err := json.Unmarshal([]byte(kubectl(t, s, "", "get", "--raw", subresourcesV1+"/version")), &info); err != nil || info.GitVersion != version.Version {
		t.Errorf("version after a restart: %+v (%v)", info, err)
	}
}
