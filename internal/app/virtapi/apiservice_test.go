package virtapi

import (
	"context"
	"net"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggfake "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset/fake"
)

// Embedded mode: a selector-less Service whose one EndpointSlice points at
// virt-api's node address, and both APIServices on it. A restart on another
// port rewrites the same objects.
func TestRegisterAPIServiceEmbedded(t *testing.T) {
	ctx := context.Background()
	c, agg := k8sfake.NewClientset(), aggfake.NewClientset()
	for _, port := range []int{1111, 2222} {
		err := RegisterAPIService(ctx, c, agg, APITarget{
			Namespace: "kubevirt", Endpoint: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: port}, CABundle: []byte("ca"),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	svc, err := c.CoreV1().Services("kubevirt").Get(ctx, "virt-api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Selector != nil || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].Name != "https" {
		t.Errorf("service spec %+v, want selector-less, port https 443", svc.Spec)
	}
	slices, _ := c.DiscoveryV1().EndpointSlices("kubevirt").List(ctx, metav1.ListOptions{})
	if len(slices.Items) != 1 {
		t.Fatalf("%d EndpointSlices, want 1", len(slices.Items))
	}
	sl := slices.Items[0]
	if sl.Labels["kubernetes.io/service-name"] != "virt-api" || sl.Endpoints[0].Addresses[0] != "192.0.2.2" ||
		*sl.Ports[0].Port != 2222 || *sl.Ports[0].Name != "https" || !*sl.Endpoints[0].Conditions.Ready {
		t.Errorf("EndpointSlice %+v, want ready 192.0.2.2:2222 for service virt-api, port https", sl)
	}
	list, _ := agg.ApiregistrationV1().APIServices().List(ctx, metav1.ListOptions{})
	want := map[string]string{
		"v1.subresources.kubevirt.io":       "subresources.kubevirt.io",
		"v1alpha3.subresources.kubevirt.io": "subresources.kubevirt.io",
		"v1beta1.upload.cdi.kubevirt.io":    "upload.cdi.kubevirt.io",
	}
	if len(list.Items) != len(want) {
		t.Fatalf("%d APIServices, want %v", len(list.Items), want)
	}
	for _, as := range list.Items {
		sp := as.Spec
		if sp.Group != want[as.Name] || as.Name != sp.Version+"."+sp.Group || sp.Service.Name != "virt-api" ||
			sp.Service.Namespace != "kubevirt" || *sp.Service.Port != 443 || string(sp.CABundle) != "ca" ||
			sp.GroupPriorityMinimum != 1000 || sp.VersionPriority != 15 || sp.InsecureSkipTLSVerify {
			t.Errorf("APIService %s: %+v", as.Name, sp)
		}
	}

	err = RegisterAPIService(ctx, c, agg, APITarget{Namespace: "kubevirt", Endpoint: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, CABundle: []byte("ca")})
	if err == nil {
		t.Error("a loopback endpoint was accepted; EndpointSlices refuse it")
	}
}

// A real cluster: the Service is the manifests'; only APIServices are
// written, naming it.
func TestRegisterAPIServiceBehindService(t *testing.T) {
	ctx := context.Background()
	// The aggregator's own APIService for a CRD of the group (an
	// UploadTokenRequest CRD of older virtkube) is taken over.
	crdService := &apiregv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: "v1beta1.upload.cdi.kubevirt.io", Labels: map[string]string{"kube-aggregator.kubernetes.io/automanaged": "true"}},
		Spec:       apiregv1.APIServiceSpec{Group: "upload.cdi.kubevirt.io", Version: "v1beta1", GroupPriorityMinimum: 1000, VersionPriority: 100},
	}
	c, agg := k8sfake.NewClientset(), aggfake.NewClientset(crdService)
	if err := RegisterAPIService(ctx, c, agg, APITarget{Namespace: "kv", Name: "api", Port: 8443, CABundle: []byte("ca")}); err != nil {
		t.Fatal(err)
	}
	if svcs, _ := c.CoreV1().Services("kv").List(ctx, metav1.ListOptions{}); len(svcs.Items) != 0 {
		t.Errorf("a Service was written: %+v", svcs.Items)
	}
	as, err := agg.ApiregistrationV1().APIServices().Get(ctx, "v1.subresources.kubevirt.io", metav1.GetOptions{})
	if err != nil || as.Spec.Service.Namespace != "kv" || as.Spec.Service.Name != "api" || *as.Spec.Service.Port != 8443 {
		t.Errorf("APIService %+v (%v)", as, err)
	}
	upload, err := agg.ApiregistrationV1().APIServices().Get(ctx, "v1beta1.upload.cdi.kubevirt.io", metav1.GetOptions{})
	if err != nil || upload.Spec.Service == nil || upload.Spec.Service.Name != "api" || upload.Labels["kube-aggregator.kubernetes.io/automanaged"] != "" {
		t.Errorf("upload APIService %+v (%v), want it on Service api without the automanaged label", upload, err)
	}
}
