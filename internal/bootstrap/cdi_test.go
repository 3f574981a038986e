package bootstrap

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/virtkube/virtkube/internal/cdi"
)

// UploadProxyURL makes CDIConfig config when missing and shows the URL in
// its status, or the spec's override when one is set.
func TestUploadProxyURL(t *testing.T) {
	ctx := context.Background()
	scheme := runtime.NewScheme()
	if err := cdi.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&cdiv1.CDIConfig{}).Build()
	shown := func() string {
		t.Helper()
		config := &cdiv1.CDIConfig{}
		if err := c.Get(ctx, client.ObjectKey{Name: cdi.ConfigName}, config); err != nil {
			t.Fatal(err)
		}
		if config.Status.UploadProxyURL == nil {
			return ""
		}
		return *config.Status.UploadProxyURL
	}

	if err := UploadProxyURL(ctx, c, "https://node1:31001"); err != nil {
		t.Fatal(err)
	}
	if got := shown(); got != "https://node1:31001" {
		t.Errorf("status.uploadProxyURL %q, want https://node1:31001", got)
	}

	override := "https://uploads.example.com"
	config := &cdiv1.CDIConfig{ObjectMeta: metav1.ObjectMeta{Name: cdi.ConfigName}}
	if err := c.Get(ctx, client.ObjectKeyFromObject(config), config); err != nil {
		t.Fatal(err)
	}
	config.Spec.UploadProxyURLOverride = &override
	if err := c.Update(ctx, config); err != nil {
		t.Fatal(err)
	}
	if err := UploadProxyURL(ctx, c, "https://node1:31001"); err != nil {
		t.Fatal(err)
	}
	if got := shown(); got != override {
		t.Errorf("status.uploadProxyURL %q, want the override %q", got, override)
	}
}
