package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	hostpathdeploy "github.com/virtkube/virtkube/deploy/hostpath"
	"github.com/virtkube/virtkube/internal/hostpath"
	"github.com/virtkube/virtkube/test/framework"
)

// `virtkube hostpath-provisioner` refuses bad flags before it talks to any
// cluster, naming the flag.
func TestHostPathProvisionerFlags(t *testing.T) {
	bin := mustBinary(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--default-pool-path", "/tmp/x"}, "--node-name: must be set, or the NODE_NAME environment variable"},
		{[]string{"--node-name", "Node_2"}, `--node-name "Node_2"`},
		{[]string{"--node-name", "n2", "--default-pool-path", "relative/dir"}, `--default-pool-path "relative/dir": must be an absolute path`},
		{[]string{"--node-name", "n2", "--healthz-address", "8081"}, `--healthz-address "8081"`},
	} {
		cmd := exec.Command(bin, append([]string{"hostpath-provisioner", "--kubeconfig", "/nonexistent"}, tc.args...)...)
		cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "NODE_NAME=") })
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || !strings.Contains(string(out), tc.want) {
			t.Errorf("hostpath-provisioner %v: %v, output %q; want a failure saying %q", tc.args, err, out, tc.want)
		}
	}
	// NODE_NAME stands in for --node-name, as a DaemonSet passes it.
	cmd := exec.Command(bin, "hostpath-provisioner", "--default-pool-path", "relative")
	cmd.Env = append(os.Environ(), "NODE_NAME=n2")
	if out, _ := cmd.CombinedOutput(); !strings.Contains(string(out), "--default-pool-path") {
		t.Errorf("with NODE_NAME set: output %q, want the next flag's error", out)
	}
}

// The standalone provisioner serves its node alone, beside virtkube
// server's own: a claim the scheduler put on node2 gets its volume from the
// node2 process (pinned to node2, a directory in node2's pool); one on the
// server's node is served by the server and left alone by node2's; deleting
// the claim removes the volume and its directory. A second process for
// node3 runs as the ServiceAccount of deploy/hostpath with its ClusterRole
// only, which shows the manifest's RBAC is enough; the manifests pass a
// server-side dry run.
func TestHostPathProvisionerStandalone(t *testing.T) {
	s := framework.Start(t)
	ctx := ctxT(t, 10*time.Minute)
	nodes, err := s.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes of a fresh server: %v, %v; want its own one", nodes, err)
	}
	serverNode := nodes.Items[0].Name

	// deploy/hostpath as a real cluster applies it: everything passes a
	// server-side dry run; the ServiceAccount and its RBAC are applied for
	// real (the DaemonSet is not: no image here).
	kubectl(t, s, withoutKind(t, hostpathdeploy.Provisioner, "DaemonSet"), "apply", "-f", "-")
	dir := filepath.Join("..", "..", "deploy", "hostpath")
	kubectl(t, s, "", "apply", "--dry-run=server", "-f", dir)
	kubectl(t, s, "", "apply", "--dry-run=server", "-f", filepath.Join(dir, "examples", "hostpathprovisioner.yaml"))
	saKubeconfig := serviceAccountKubeconfig(t, s, "hostpath-provisioner", "hostpath-provisioner")

	addNode(t, s, "node2")
	addNode(t, s, "node3")
	pool2, pool3 := t.TempDir(), t.TempDir()
	node2 := startProvisioner(t, s.Kubeconfig, "node2", pool2)
	node3 := startProvisioner(t, saKubeconfig, "node3", pool3)

	ns := s.Namespace(t)
	onNode2 := createSelectedClaim(t, s, ns, "on-node2", "node2", "64Mi")
	onServer := createSelectedClaim(t, s, ns, "on-server", serverNode, "32Mi")
	onNode3 := createSelectedClaim(t, s, ns, "on-node3", "node3", "16Mi")

	pv2 := waitBound(t, s, ns, onNode2, "64Mi", "node2", filepath.Join(pool2, "csi"))
	pvServer := waitBound(t, s, ns, onServer, "32Mi", serverNode, filepath.Join(s.DataDir, "hpvolumes", "csi"))
	pv3 := waitBound(t, s, ns, onNode3, "16Mi", "node3", filepath.Join(pool3, "csi"))

	// Each pool holds its own node's volume and nothing else: the server
	// did not make node2's or node3's, node2's process not the server's.
	for pool, want := range map[string]string{pool2: pv2, pool3: pv3} {
		if got := dirEntries(t, filepath.Join(pool, "csi")); !slices.Equal(got, []string{want}) {
			t.Errorf("%s/csi holds %v, want only %s", pool, got, want)
		}
	}
	for _, pv := range []string{pv2, pv3} {
		if _, err := os.Stat(filepath.Join(s.DataDir, "hpvolumes", "csi", pv)); !os.IsNotExist(err) {
			t.Errorf("the server's pool has a directory for %s (another node's volume): %v", pv, err)
		}
	}
	if got := dirEntries(t, filepath.Join(s.DataDir, "hpvolumes", "csi")); !slices.Equal(got, []string{pvServer}) {
		t.Errorf("the server's pool holds %v, want only %s", got, pvServer)
	}
	// Events are part of the ClusterRole: the ServiceAccount's process
	// recorded one on its claim.
	framework.Eventually(t, time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, string) {
		evs, err := s.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.AndSelectors(
			fields.OneTermEqualSelector("involvedObject.name", onNode3.Name),
			fields.OneTermEqualSelector("reason", "ProvisioningSucceeded")).String()})
		if err != nil {
			return false, err.Error()
		}
		return len(evs.Items) > 0 && strings.Contains(evs.Items[0].Message, pv3), fmt.Sprintf("events of %s: %d ProvisioningSucceeded", onNode3.Name, len(evs.Items))
	})

	// Reclaim Delete: the claim goes, so do its volume and directory.
	for _, c := range []struct {
		claim *corev1.PersistentVolumeClaim
		pv    string
		dir   string
	}{{onNode2, pv2, filepath.Join(pool2, "csi", pv2)}, {onNode3, pv3, filepath.Join(pool3, "csi", pv3)}} {
		if err := s.Client.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, c.claim.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		framework.Eventually(t, 2*time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, string) {
			_, err := s.Client.CoreV1().PersistentVolumes().Get(ctx, c.pv, metav1.GetOptions{})
			_, statErr := os.Stat(c.dir)
			return apierrors.IsNotFound(err) && os.IsNotExist(statErr),
				fmt.Sprintf("after deleting claim %s: PV %s: %v; directory: %v", c.claim.Name, c.pv, err, statErr)
		})
	}
	// The server's volume is still there: node2's and node3's processes saw
	// it, and left it alone.
	if _, err := os.Stat(filepath.Join(s.DataDir, "hpvolumes", "csi", pvServer)); err != nil {
		t.Errorf("the server's volume directory: %v", err)
	}
	if log := node3.Log(); strings.Contains(log, "forbidden") {
		t.Errorf("the ServiceAccount's provisioner was refused something:\n%s", log)
	}
	// SIGTERM, as a DaemonSet pod is stopped: a clean exit.
	for _, p := range []*framework.Process{node2, node3} {
		if err := p.Stop(30 * time.Second); err != nil {
			t.Errorf("%s on SIGTERM: %v\n%s", p.Name, err, p.Log())
		}
	}
}

// addNode registers a Node object with no kubelet behind it: enough for
// claims to be scheduled there by annotation.
func addNode(t *testing.T, s *framework.Server, name string) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}}}
	if _, err := s.Client.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// createSelectedClaim makes a claim of the class hostpath-csi that the
// scheduler has put on node (as it does for WaitForFirstConsumer).
func createSelectedClaim(t *testing.T, s *framework.Server, ns, name, node, size string) *corev1.PersistentVolumeClaim {
	t.Helper()
	pvc, err := s.Client.CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{hostpath.AnnSelectedNode: node}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To(hostpath.DefaultStorageClass),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pvc
}

// waitBound waits until claim is Bound and checks its volume: the claim's
// capacity, pinned to node, a directory pvc-<uid> in poolDir. It returns
// the volume's name.
func waitBound(t *testing.T, s *framework.Server, ns string, claim *corev1.PersistentVolumeClaim, size, node, poolDir string) string {
	t.Helper()
	var pvc *corev1.PersistentVolumeClaim
	framework.Eventually(t, 2*time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, string) {
		var err error
		pvc, err = s.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return pvc.Status.Phase == corev1.ClaimBound, fmt.Sprintf("claim %s is %s", claim.Name, pvc.Status.Phase)
	})
	want := "pvc-" + string(claim.UID)
	if pvc.Spec.VolumeName != want {
		t.Fatalf("claim %s bound to %q, want %s", claim.Name, pvc.Spec.VolumeName, want)
	}
	if got := pvc.Status.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse(size)) != 0 {
		t.Errorf("claim %s capacity %s, want %s", claim.Name, got.String(), size)
	}
	pv, err := s.Client.CoreV1().PersistentVolumes().Get(context.Background(), want, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := hostpath.Node(pv); got != node {
		t.Errorf("PV %s pinned to node %q (nodeAffinity %+v), want %s", pv.Name, got, pv.Spec.NodeAffinity, node)
	}
	dir := filepath.Join(poolDir, want)
	if pv.Spec.HostPath == nil || pv.Spec.HostPath.Path != dir {
		t.Errorf("PV %s hostPath %+v, want %s", pv.Name, pv.Spec.HostPath, dir)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Errorf("volume directory %s: %v", dir, err)
	}
	return want
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// withoutKind is a multi-document manifest without its documents of kind.
func withoutKind(t *testing.T, manifest []byte, kind string) string {
	t.Helper()
	var docs []string
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		if tm.Kind != kind {
			docs = append(docs, string(doc))
		}
	}
	return strings.Join(docs, "\n---\n")
}

// serviceAccountKubeconfig is a kubeconfig for s that authenticates with a
// token of the ServiceAccount namespace/name, as a pod of it would.
func serviceAccountKubeconfig(t *testing.T, s *framework.Server, namespace, name string) string {
	t.Helper()
	token := strings.TrimSpace(kubectl(t, s, "", "create", "token", name, "-n", namespace))
	admin, err := clientcmd.LoadFromFile(s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cluster := admin.Clusters[admin.Contexts[admin.CurrentContext].Cluster]
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["virtkube"] = cluster
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["sa"] = &clientcmdapi.Context{Cluster: "virtkube", AuthInfo: name}
	cfg.CurrentContext = "sa"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// startProvisioner runs the provisioner of node with kubeconfig and pool as
// its default pool, and waits until it is ready (/readyz: caches filled).
func startProvisioner(t *testing.T, kubeconfig, node, pool string) *framework.Process {
	t.Helper()
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	health := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(mustBinary(t), "hostpath-provisioner", "--kubeconfig", kubeconfig, "--node-name", node,
		"--default-pool-path", pool, "--healthz-address", health)
	return startProcess(t, "hostpath-provisioner "+node, cmd, func(ctx context.Context) (bool, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+health+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && string(body) == "ok", fmt.Sprintf("/readyz: %d %s", resp.StatusCode, body)
	})
}

// startProcess runs cmd as name for t, its output in a log in t's temporary
// directory, and waits up to a minute for ready to hold; t fails at once if
// the process exits first. When t ends the process is stopped (SIGTERM,
// then its process group killed after 10 s) and, if t failed, its log
// printed.
func startProcess(t *testing.T, name string, cmd *exec.Cmd, ready func(ctx context.Context) (bool, string)) *framework.Process {
	t.Helper()
	p, err := framework.StartProcess(name, cmd, filepath.Join(t.TempDir(), "process.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.Log())
		}
	})
	framework.Eventually(t, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		if p.Exited() {
			t.Fatalf("%s exited: %v\n%s", name, p.Err(), p.Log())
		}
		return ready(ctx)
	})
	return p
}
