package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/virtkube/virtkube/test/framework"
)

// TestDataVolumeAdmission: virt-api's DataVolume webhook refuses, as CDI's
// does, a clone from a namespace whose claims the creator may not read (an
// editor of namespace a only, cloning a claim of namespace b), naming
// spec.source.pvc and the missing permission; the same editor clones within
// a, and from b once granted create on datavolumes/source there. A
// DataVolume with two sources is refused naming spec.source. A VM whose
// dataVolumeTemplate clones from b is refused the same way, naming
// spec.dataVolumeTemplates[0].spec.source.pvc, until the grant; then its
// DataVolume, with no size, takes the source claim's. Any
// authenticated user reads the CDIConfig (CDI's config reader), where
// virtctl image-upload finds the upload proxy.
func TestDataVolumeAdmission(t *testing.T) {
	s := shared
	c := cdiClient(t, s)
	a, b := s.Namespace(t), s.Namespace(t)
	const user = "dv-editor"
	as := []string{"--as", user, "--as-group", "system:authenticated"}

	blank := func(name string) string {
		return fmt.Sprintf(`apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: %s}
spec:
  source: {blank: {}}
  storage: {resources: {requests: {storage: 16Mi}}}
`, name)
	}
	clone := func(name, ns, from string) string {
		return fmt.Sprintf(`apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: %s}
spec:
  source: {pvc: {namespace: %s, name: %s}}
  storage: {resources: {requests: {storage: 16Mi}}}
`, name, ns, from)
	}
	// A VM whose DataVolume template clones: virt-controller makes the
	// DataVolume, so virt-api's VM webhook asks about the user's right.
	// Halted, so no guest boots; the template gives no size, so the clone
	// takes the source claim's.
	vmCloning := func(name, ns string) string {
		return fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: %[1]s}
spec:
  runStrategy: Halted
  dataVolumeTemplates:
  - metadata: {name: %[1]s-root}
    spec:
      source: {pvc: {namespace: %[2]s, name: golden}}
      storage: {}
  template:
    spec:
      domain:
        resources: {requests: {memory: 64Mi}}
        devices: {disks: [{name: root, disk: {bus: virtio}}]}
      volumes: [{name: root, dataVolume: {name: %[1]s-root}}]
`, name, ns)
	}
	// dataVolume volumes need the gate the seed's KubeVirt CR turns on.
	gates, err := os.ReadFile("../testdata/seed/kubevirt-feature-gates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, string(gates), "apply", "-f", "-")
	kubectl(t, s, blank("golden"), "create", "-n", a, "-f", "-")
	kubectl(t, s, blank("golden"), "create", "-n", b, "-f", "-")
	kubectl(t, s, "", "create", "rolebinding", "editor", "-n", a, "--clusterrole", "edit", "--user", user)

	// Within a: no permission beyond a's edit role is needed. The first
	// try may come before the RoleBinding is in the authorizer's cache.
	framework.Eventually(t, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		_, errOut, err := s.Kubectl(ctx, strings.NewReader(clone("copy", a, "golden")), append([]string{"create", "-n", a, "-f", "-"}, as...)...)
		return err == nil, fmt.Sprintf("create a clone within %s as its editor: %v %s", a, err, errOut)
	})

	// From b, where the editor has no role: refused before anything is made.
	_, errOut, err := s.Kubectl(ctxT(t, time.Minute), strings.NewReader(clone("stolen", b, "golden")), append([]string{"create", "-n", a, "-f", "-"}, as...)...)
	for _, want := range []string{
		`The DataVolume "stolen" is invalid`, "spec.source.pvc: Forbidden",
		fmt.Sprintf("User %s has insufficient permissions in clone source namespace %s", user, b),
		fmt.Sprintf("no permission to create datavolumes/source (API group cdi.kubevirt.io) in namespace %s", b),
	} {
		if err == nil || !strings.Contains(errOut, want) {
			t.Errorf("clone from %s as an editor of %s only: %v\n%s\nwant an error saying %q", b, a, err, errOut, want)
		}
	}
	if _, _, err := s.Kubectl(ctxT(t, time.Minute), nil, "get", "dv", "stolen", "-n", a); err == nil {
		t.Error("the refused DataVolume stolen exists")
	}
	// The same clone through a VM's DataVolume template: refused naming the
	// template. virt-api reads the gate through an informer, so the first
	// tries may be refused for the gate instead.
	framework.Eventually(t, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		_, errOut, err = s.Kubectl(ctx, strings.NewReader(vmCloning("stolen-vm", b)), append([]string{"create", "-n", a, "-f", "-"}, as...)...)
		return err != nil && !strings.Contains(errOut, "feature gate"), fmt.Sprintf("create a VM cloning from %s: %v %s", b, err, errOut)
	})
	for _, want := range []string{
		`The VirtualMachine "stolen-vm" is invalid`, "spec.dataVolumeTemplates[0].spec.source.pvc: Forbidden",
		fmt.Sprintf("User system:serviceaccount:%s:default has insufficient permissions in clone source namespace %s", a, b),
		fmt.Sprintf("no permission to create datavolumes/source (API group cdi.kubevirt.io) in namespace %s", b),
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("VM cloning from %s as an editor of %s only:\n%s\nwant an error saying %q", b, a, errOut, want)
		}
	}
	for _, kind := range []string{"vm/stolen-vm", "dv/stolen-vm-root"} {
		if _, _, err := s.Kubectl(ctxT(t, time.Minute), nil, "get", kind, "-n", a); err == nil {
			t.Errorf("%s exists after the VM was refused", kind)
		}
	}

	// Granted exactly the permission the error names, in b, the clone goes
	// through.
	kubectl(t, s, fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: clone-source}
rules:
- apiGroups: [cdi.kubevirt.io]
  resources: [datavolumes/source]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: clone-source}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: clone-source}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: %s}
# A VM's DataVolume templates clone as the VM's ServiceAccount, as in
# KubeVirt's documentation.
- {kind: ServiceAccount, name: default, namespace: %s}
`, user, a), "apply", "-n", b, "-f", "-")
	framework.Eventually(t, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		_, errOut, err := s.Kubectl(ctx, strings.NewReader(clone("granted", b, "golden")), append([]string{"create", "-n", a, "-f", "-"}, as...)...)
		return err == nil, fmt.Sprintf("create a clone from %s with create datavolumes/source there: %v %s", b, err, errOut)
	})
	// And so does the VM; virt-controller makes its DataVolume, which
	// takes golden's 16Mi.
	kubectl(t, s, vmCloning("granted-vm", b), append([]string{"create", "-n", a, "-f", "-"}, as...)...)
	waitDataVolume(t, s, c, a, "copy")
	waitDataVolume(t, s, c, a, "granted")
	if got, err := os.Stat(waitDataVolume(t, s, c, a, "granted-vm-root")); err != nil || got.Size() != 16<<20 {
		t.Errorf("disk of the VM's clone without a size: %v %v; want golden's 16Mi", got, err)
	}
	if got := kubectl(t, s, "", "get", "pvc", "granted-vm-root", "-n", a, "-o", "jsonpath={.spec.resources.requests.storage}"); got != "16Mi" {
		t.Errorf("claim of the VM's clone without a size requests %q, want golden's 16Mi", got)
	}

	// Two sources.
	_, errOut, err = s.Kubectl(ctxT(t, time.Minute), strings.NewReader(strings.Replace(blank("two"), "{blank: {}}", "{blank: {}, upload: {}}", 1)),
		"create", "-n", a, "-f", "-")
	if err == nil || !strings.Contains(errOut, "spec.source: Invalid value") || !strings.Contains(errOut, "exactly one kind of source") {
		t.Errorf("a DataVolume with two sources: %v\n%s\nwant Invalid naming spec.source", err, errOut)
	}
	// The spec is fixed once created.
	_, errOut, err = s.Kubectl(ctxT(t, time.Minute), nil, "patch", "dv", "golden", "-n", a, "--type", "merge",
		"-p", `{"spec":{"storage":{"resources":{"requests":{"storage":"32Mi"}}}}}`)
	if err == nil || !strings.Contains(errOut, "spec.storage: Forbidden") {
		t.Errorf("a changed spec.storage: %v\n%s\nwant Forbidden naming spec.storage", err, errOut)
	}

	// CDI's config reader: a user with no role anywhere finds the proxy.
	out, errOut, err := s.Kubectl(ctxT(t, time.Minute), nil, "get", "cdiconfig", "config", "-o", "jsonpath={.status.uploadProxyURL}",
		"--as", "nobody-in-particular", "--as-group", "system:authenticated")
	if err != nil || !strings.HasPrefix(out, "https://") {
		t.Errorf("get cdiconfig config as an authenticated user: %q %v %s; want the upload proxy's URL", out, err, errOut)
	}
}
