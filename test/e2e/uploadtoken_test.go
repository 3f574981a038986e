package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/test/framework"
)

// KubeVirt's own virtctl asks for an upload token as CDI serves it: one
// create of an UploadTokenRequest, whose answer carries status.token (CDI's
// aggregated apiserver signs it and stores nothing). kubectl does the same
// here: the token is in the create's output at once, and it uploads through
// the proxy into the DataVolume's claim. Someone without RBAC for
// uploadtokenrequests is Forbidden; an editor of the namespace is not; a
// request without spec.pvcName is Invalid, naming the field. While the
// upload runs the DataVolume shows its progress.
func TestUploadTokenRequest(t *testing.T) {
	s := shared
	c := cdiClient(t, s)
	ns := s.Namespace(t)

	kubectl(t, s, `apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: target}
spec:
  source: {upload: {}}
  storage: {resources: {requests: {storage: 64Mi}}}
`, "apply", "-n", ns, "-f", "-")

	out := kubectl(t, s, "", "api-resources", "--api-group", "upload.cdi.kubevirt.io", "-o", "wide", "--no-headers")
	if f := strings.Fields(out); len(f) < 6 || f[0] != "uploadtokenrequests" || f[2] != "upload.cdi.kubevirt.io/v1beta1" || f[4] != "UploadTokenRequest" || f[5] != "create" {
		t.Errorf("kubectl api-resources --api-group upload.cdi.kubevirt.io: want uploadtokenrequests, kind UploadTokenRequest, verbs create:\n%s", out)
	}

	const utr = `apiVersion: upload.cdi.kubevirt.io/v1beta1
kind: UploadTokenRequest
metadata: {name: token-for-target}
spec: {pvcName: target}
`
	token := kubectl(t, s, utr, "create", "-n", ns, "-f", "-", "-o", "jsonpath={.status.token}")
	if token == "" {
		t.Fatal("kubectl create uploadtokenrequest -o jsonpath={.status.token} printed no token")
	}
	generated := strings.Replace(utr, "{name: token-for-target}", "{generateName: token-}", 1)
	out = kubectl(t, s, generated, "create", "-n", ns, "-f", "-", "-o", "jsonpath={.metadata.name} {.status.token}")
	if name, tok, _ := strings.Cut(out, " "); !strings.HasPrefix(name, "token-") || len(name) == len("token-") || tok == "" {
		t.Errorf("create with generateName: %q, want a name token-<suffix> and a token", out)
	}

	_, errOut, err := s.Kubectl(ctxT(t, time.Minute), strings.NewReader(utr), "create", "--as", "nobody", "-n", ns, "-f", "-")
	if err == nil || !strings.Contains(errOut, "Forbidden") || !strings.Contains(errOut, `User "nobody" cannot create resource "uploadtokenrequests"`) {
		t.Errorf("create as nobody: %v\n%s\nwant Forbidden for uploadtokenrequests", err, errOut)
	}
	_, errOut, err = s.Kubectl(ctxT(t, time.Minute), strings.NewReader(strings.Replace(utr, "spec: {pvcName: target}", "spec: {}", 1)), "create", "-n", ns, "-f", "-")
	if err == nil || !strings.Contains(errOut, "spec.pvcName: Required value") {
		t.Errorf("create without spec.pvcName: %v\n%s\nwant Invalid naming spec.pvcName", err, errOut)
	}
	// kubevirt's users: the namespace's edit role carries CDI's
	// cdi.kubevirt.io:edit rules.
	kubectl(t, s, "", "create", "rolebinding", "uploader", "-n", ns, "--clusterrole", "edit", "--user", "uploader")
	framework.Eventually(t, 30*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		out, errOut, err := s.Kubectl(ctx, strings.NewReader(generated), "create", "--as", "uploader", "-n", ns, "-f", "-", "-o", "jsonpath={.status.token}")
		return err == nil && out != "", fmt.Sprintf("create as an editor of %s: %v %s", ns, err, errOut)
	})

	// The first token uploads.
	framework.Eventually(t, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, string) {
		dv := &cdiv1.DataVolume{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "target"}, dv); err != nil {
			return false, err.Error()
		}
		return dv.Status.Phase == cdiv1.UploadReady, fmt.Sprintf("DataVolume target: phase %s, want UploadReady", dv.Status.Phase)
	})
	config := &cdiv1.CDIConfig{}
	if err := c.Get(ctxT(t, time.Minute), client.ObjectKey{Name: "config"}, config); err != nil || config.Status.UploadProxyURL == nil {
		t.Fatalf("CDIConfig config: %v, %+v", err, config.Status)
	}
	// The proxy tells the DataVolume how far the upload has got.
	progress := watchProgress(t, s, c, ns, "target")
	content := bytes.Repeat([]byte("token-upload "), 80000) // ~1 MiB
	req, _ := http.NewRequestWithContext(ctxT(t, time.Minute), http.MethodPost, *config.Status.UploadProxyURL+"/v1beta1/upload", bytes.NewReader(content))
	req.Header.Set("Authorization", "Bearer "+token)
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := insecure.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload with the token kubectl printed: %s %s", resp.Status, body)
	}
	t.Logf("upload progress seen: %v", progress())
	disk := waitDataVolume(t, s, c, ns, "target")
	got, err := os.ReadFile(disk)
	if err != nil || len(got) != 64<<20 || !bytes.Equal(got[:len(content)], content) {
		t.Errorf("uploaded disk.img: %d bytes (%v); want 64 MiB starting with the upload", len(got), err)
	}
}
