package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/virtkube/virtkube/test/framework"
)

// refused applies manifest with a server-side dry run and returns kubectl's
// error output; the test fails if the server accepted it.
func refused(t *testing.T, s *framework.Server, ns, manifest string) string {
	t.Helper()
	out, errOut, err := s.Kubectl(ctxT(t, time.Minute), strings.NewReader(manifest), "apply", "--dry-run=server", "-n", ns, "-f", "-")
	if err == nil {
		t.Fatalf("accepted:\n%s\nstdout: %s", manifest, out)
	}
	return errOut
}

const admissionVMI = `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: bad}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      disks:
      - {name: root, disk: {bus: virtio}%s}
      - {name: %s%s}
  volumes:
  - {name: root, containerDisk: {image: registry.example/disk:v1}}
  - %s
`

// Manifests the schema accepts but KubeVirt's validating webhook refuses are
// refused, and the message names the field and what is allowed, in the API
// server's own shape.
func TestAdmissionRefusesBadManifests(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	vmi := func(rootBoot, second, secondBoot, volume string) string {
		return fmt.Sprintf(admissionVMI, rootBoot, second, secondBoot, volume)
	}
	for _, tc := range []struct {
		name, manifest string
		want           []string
	}{
		{"disk without volume", vmi("", "data", "", "{name: cloud, cloudInitNoCloud: {userData: x}}"),
			[]string{`The VirtualMachineInstance "bad" is invalid`, "spec.domain.devices.disks[1].name", `"data"`, "no volume"}},
		{"duplicate bootOrder", vmi(", bootOrder: 1", "cloud", ", bootOrder: 1", "{name: cloud, cloudInitNoCloud: {userData: x}}"),
			[]string{"spec.domain.devices.disks[1].bootOrder", "already used by spec.domain.devices.disks[0].bootOrder"}},
		{"hostDisk of an unknown type", vmi("", "hd", "", "{name: hd, hostDisk: {path: /d.img, type: File}}"),
			[]string{"spec.volumes[1].hostDisk.type", `supported values: "Disk", "DiskOrCreate"`}},
		{"running and runStrategy", `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: bad}
spec:
  running: true
  runStrategy: Always
  template:
    spec:
      domain: {resources: {requests: {memory: 64Mi}}, devices: {}}
`, []string{`The VirtualMachine "bad" is invalid`, "spec.running", "mutually exclusive"}},
		{"unknown runStrategy, written as v1alpha3", `apiVersion: kubevirt.io/v1alpha3
kind: VirtualMachine
metadata: {name: bad}
spec:
  runStrategy: Sometimes
  template:
    spec:
      domain: {resources: {requests: {memory: 64Mi}}, devices: {}}
`, []string{"spec.runStrategy", `supported values: "Always", "Halted"`}},
		{"VMIRS selector not matching its template", `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstanceReplicaSet
metadata: {name: bad}
spec:
  replicas: 1
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: b}}
    spec:
      domain: {resources: {requests: {memory: 64Mi}}, devices: {}}
`, []string{"spec.template.metadata.labels", "does not match"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errOut := refused(t, s, ns, tc.manifest)
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error does not mention %q:\n%s", w, errOut)
				}
			}
		})
	}
}

// A VMI stored without machine type, networks or CPU topology comes back
// with KubeVirt's defaults; one written as v1alpha3 is defaulted as well.
func TestAdmissionDefaults(t *testing.T) {
	s := shared
	ns := s.Namespace(t)
	kubectl(t, s, `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: bare}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices: {}
`, "apply", "-n", ns, "-f", "-")
	get := func(path string) string {
		return kubectl(t, s, "", "get", "vmi", "bare", "-n", ns, "-o", "jsonpath={"+path+"}")
	}
	for path, want := range map[string]string{
		".spec.domain.machine.type":                 "q35",
		".spec.architecture":                        "amd64",
		".spec.networks[0].name":                    "default",
		".spec.networks[0].pod":                     "{}",
		".spec.domain.devices.interfaces[0].name":   "default",
		".spec.domain.devices.interfaces[0].bridge": "{}",
		".spec.domain.cpu.sockets":                  "1",
		".spec.domain.cpu.cores":                    "1",
		".metadata.finalizers[0]":                   "kubevirt.io/foregroundDeleteVirtualMachine",
	} {
		if got := get(path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}

	out := kubectl(t, s, `apiVersion: kubevirt.io/v1alpha3
kind: VirtualMachineInstance
metadata: {name: disks}
spec:
  domain:
    memory: {guest: 96Mi}
    devices:
      disks:
      - {name: root}
      - {name: iso, cdrom: {}}
  volumes:
  - {name: root, containerDisk: {image: registry.example/disk:v1}}
  - {name: iso, containerDisk: {image: registry.example/iso:v1}}
  - {name: cloud, cloudInitNoCloud: {userData: x}}
`, "apply", "--dry-run=server", "-n", ns, "-f", "-", "-o",
		`jsonpath={.spec.domain.devices.disks[*].name}/{.spec.domain.devices.disks[0].disk.bus}/{.spec.domain.devices.disks[1].cdrom.bus}/{.spec.domain.devices.disks[2].disk.bus}/{.spec.domain.resources.requests.memory}`)
	if want := "root iso cloud/virtio/sata/virtio/96Mi"; out != want {
		t.Errorf("disks/buses/memory = %q, want %q", out, want)
	}
}

// Feature gates come from the KubeVirt CR as it is now: a VMI with a
// hostDisk is refused until the seed's CR (gate spelt "HardDisk") is applied,
// then accepted with a warning about the spelling; so is the seed's VM, as
// in KubeVirt (the seed enables the gate before it creates the VM). A restart moves virt-api to a
// new port; the two webhook configurations follow it and are not duplicated.
func TestAdmissionFeatureGatesAndRestart(t *testing.T) {
	s := framework.Start(t)
	ns := s.Namespace(t)
	hostDiskVMI := fmt.Sprintf(admissionVMI, "", "hd", "", "{name: hd, hostDisk: {path: /data/disk.img, type: DiskOrCreate, capacity: 1Gi}}")
	errOut := refused(t, s, ns, hostDiskVMI)
	for _, w := range []string{"spec.volumes[1].hostDisk", "HostDisk feature gate is not enabled", "featureGates"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("hostDisk without a gate: error does not mention %q:\n%s", w, errOut)
		}
	}

	win10, err := os.ReadFile("../testdata/seed/win10.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, err = s.Kubectl(ctxT(t, time.Minute), strings.NewReader(string(win10)), "apply", "-n", ns, "-f", "-")
	if err == nil || !strings.Contains(errOut, "spec.template.spec.volumes[1].hostDisk") || !strings.Contains(errOut, "HostDisk feature gate is not enabled") {
		t.Errorf("the seed VM before its gate is on: %v\n%s", err, errOut)
	}

	gates, err := os.ReadFile("../testdata/seed/kubevirt-feature-gates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, s, string(gates), "apply", "-f", "-")
	// The webhook reads the CR through an informer: poll until it sees it.
	framework.Eventually(t, 30*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		_, errOut, err := s.Kubectl(ctx, strings.NewReader(hostDiskVMI), "apply", "--dry-run=server", "-n", ns, "-f", "-")
		if err != nil {
			return false, errOut
		}
		if !strings.Contains(errOut, `spell it "HostDisk"`) {
			t.Errorf("no warning about the HardDisk spelling:\n%s", errOut)
		}
		return true, ""
	})
	kubectl(t, s, string(win10), "apply", "-n", ns, "-f", "-")
	if got := kubectl(t, s, "", "get", "vm", "win10", "-n", ns, "-o", "jsonpath={.spec.template.spec.domain.machine.type}"); got != "q35" {
		t.Errorf("seed VM machine type = %q, want q35 as written", got)
	}

	urls := func() string {
		ctx := ctxT(t, time.Minute)
		ms, err := s.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vs, err := s.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ms.Items) != 1 || ms.Items[0].Name != "virt-api-mutator" || len(vs.Items) != 1 || vs.Items[0].Name != "virt-api-validator" {
			t.Fatalf("webhook configurations: %d mutating, %d validating; want virt-api-mutator and virt-api-validator only", len(ms.Items), len(vs.Items))
		}
		return *vs.Items[0].Webhooks[0].ClientConfig.URL
	}
	before := urls()
	if err := s.Stop(time.Minute); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// Hold the old port so the restarted virt-api cannot take it again.
	if l, err := listenOn(before); err == nil {
		defer l.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if after := urls(); after == before {
		t.Errorf("webhooks still point at %s after a restart", after)
	}
	errOut = refused(t, s, ns, fmt.Sprintf(admissionVMI, "", "data", "", "{name: cloud, cloudInitNoCloud: {userData: x}}"))
	if !strings.Contains(errOut, "spec.domain.devices.disks[1].name") {
		t.Errorf("after a restart, a disk without volume: %s", errOut)
	}
}

// listenOn takes the host:port of a webhook URL, so nothing else gets it.
func listenOn(webhookURL string) (net.Listener, error) {
	u, err := url.Parse(webhookURL)
	if err != nil {
		return nil, err
	}
	return net.Listen("tcp", u.Host)
}
