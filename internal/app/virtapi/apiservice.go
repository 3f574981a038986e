package virtapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"k8s.io/utils/ptr"

	"github.com/virtkube/virtkube/internal/subresource"
)

// ServiceName is the Service in front of virt-api, in the kubevirt
// namespace, as KubeVirt names it; ServicePort is its port.
const (
	ServiceName = "virt-api"
	ServicePort = 443
	// servicePortName names the port in the Service and its EndpointSlice:
	// the aggregator matches them by name.
	servicePortName = "https"
)

// APITarget says how the aggregator reaches virt-api's
// subresources.kubevirt.io: always through Service Namespace/ServiceName
// (the APIService can name nothing else), whose endpoints either come from
// the virt-api pods the Service selects (a real cluster: the manifests
// under deploy/virt-api make that Service) or, when Endpoint is set, from
// an EndpointSlice written here (embedded mode: virt-api is a listener of
// `virtkube server` on the node's address).
type APITarget struct {
	Namespace string
	// Name and Port are the Service's; empty means ServiceName and
	// ServicePort.
	Name string
	Port int32
	// Endpoint is virt-api's own address; it must not be loopback, which
	// EndpointSlices refuse.
	Endpoint *net.TCPAddr
	// CABundle is the CA that signed virt-api's serving certificate, which
	// must name virt-api.<namespace>.svc.
	CABundle []byte
}

// RegisterAPIService creates or updates the APIServices
// v1.subresources.kubevirt.io, v1alpha3.subresources.kubevirt.io and
// v1beta1.upload.cdi.kubevirt.io (and, with t.Endpoint, the selector-less
// Service and its EndpointSlice). Run again after a restart on a new port or
// CA, it rewrites the same objects. An APIService the aggregator made for a
// CRD of the same group and version (an UploadTokenRequest CRD of older
// virtkube) is taken over: its automanaged label goes, so the aggregator
// leaves it alone.
func RegisterAPIService(ctx context.Context, c kubernetes.Interface, agg aggregator.Interface, t APITarget) error {
	if len(t.CABundle) == 0 {
		return errors.New("register APIService: no CA bundle")
	}
	if t.Name == "" {
		t.Name = ServiceName
	}
	if t.Port == 0 {
		t.Port = ServicePort
	}
	if t.Endpoint != nil {
		if t.Endpoint.IP.IsLoopback() || t.Endpoint.IP.IsUnspecified() {
			return fmt.Errorf("register APIService: endpoint %s: the aggregator cannot be pointed at a loopback or unspecified address", t.Endpoint)
		}
		svc, slice := embeddedService(t)
		if err := applyService(ctx, c, svc); err != nil {
			return err
		}
		if err := applyEndpointSlice(ctx, c, slice); err != nil {
			return err
		}
	}
	for _, want := range apiServices(t) {
		api := agg.ApiregistrationV1().APIServices()
		err := createOrUpdate(ctx, want, api.Get, api.Create, api.Update,
			func(dst, src *apiregv1.APIService) { dst.Spec = src.Spec })
		if err != nil {
			return err
		}
	}
	return nil
}

var managedLabels = map[string]string{"app.kubernetes.io/managed-by": "virt-api", "kubevirt.io": "virt-api"}

// groupVersions are the group versions virt-api serves behind the
// aggregator: KubeVirt's subresources.kubevirt.io (v1 preferred: the
// version priority ties and "v1" sorts before "v1alpha3") and CDI's
// upload.cdi.kubevirt.io, which CDI serves from its own apiserver.
func groupVersions() []schema.GroupVersion {
	var out []schema.GroupVersion
	for _, v := range subresource.Versions {
		out = append(out, schema.GroupVersion{Group: subresource.Group, Version: v})
	}
	for _, v := range subresource.UploadVersions {
		out = append(out, schema.GroupVersion{Group: subresource.UploadGroup, Version: v})
	}
	return out
}

// apiServiceName is the APIService of gv, as the aggregator wants it named.
func apiServiceName(gv schema.GroupVersion) string {
	return gv.Version + "." + gv.Group
}

// apiServices are one APIService per group version, all on the same
// Service, with KubeVirt's and CDI's priorities.
func apiServices(t APITarget) []*apiregv1.APIService {
	var out []*apiregv1.APIService
	for _, gv := range groupVersions() {
		out = append(out, &apiregv1.APIService{
			ObjectMeta: metav1.ObjectMeta{Name: apiServiceName(gv), Labels: managedLabels},
			Spec: apiregv1.APIServiceSpec{
				Service:              &apiregv1.ServiceReference{Namespace: t.Namespace, Name: t.Name, Port: ptr.To(t.Port)},
				Group:                gv.Group,
				Version:              gv.Version,
				CABundle:             t.CABundle,
				GroupPriorityMinimum: 1000,
				VersionPriority:      15,
			},
		})
	}
	return out
}

// embeddedService is a Service without a selector, so no controller
// manages its endpoints, and the one EndpointSlice that gives them.
func embeddedService(t APITarget) (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: t.Name, Labels: managedLabels},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{
				Name: servicePortName, Protocol: corev1.ProtocolTCP, Port: t.Port,
				TargetPort: intstr.FromInt32(int32(t.Endpoint.Port)),
			}},
		},
	}
	addressType := discoveryv1.AddressTypeIPv4
	if t.Endpoint.IP.To4() == nil {
		addressType = discoveryv1.AddressTypeIPv6
	}
	labels := map[string]string{
		discoveryv1.LabelServiceName: t.Name,
		discoveryv1.LabelManagedBy:   "virtkube.io",
	}
	for k, v := range managedLabels {
		labels[k] = v
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: t.Namespace, Name: t.Name, Labels: labels},
		AddressType: addressType,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{t.Endpoint.IP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		}},
		Ports: []discoveryv1.EndpointPort{{
			Name: ptr.To(servicePortName), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(t.Endpoint.Port)),
		}},
	}
	return svc, slice
}

// applyService creates svc or brings the stored one's ports, selector and
// labels to it; the ClusterIP the apiserver allocated stays.
func applyService(ctx context.Context, c kubernetes.Interface, want *corev1.Service) error {
	api := c.CoreV1().Services(want.Namespace)
	return createOrUpdate(ctx, want, api.Get, api.Create, api.Update,
		func(dst, src *corev1.Service) {
			dst.Spec.Ports, dst.Spec.Selector, dst.Spec.Type = src.Spec.Ports, src.Spec.Selector, src.Spec.Type
		})
}

func applyEndpointSlice(ctx context.Context, c kubernetes.Interface, want *discoveryv1.EndpointSlice) error {
	api := c.DiscoveryV1().EndpointSlices(want.Namespace)
	return createOrUpdate(ctx, want, api.Get, api.Create, api.Update,
		func(dst, src *discoveryv1.EndpointSlice) {
			dst.AddressType, dst.Endpoints, dst.Ports = src.AddressType, src.Endpoints, src.Ports
		})
}

// WaitAPIServiceAvailable returns once the aggregator reports every
// APIService of virt-api Available, i.e. it reached virt-api and read its
// discovery; until then `virtctl` would get 503s.
func WaitAPIServiceAvailable(ctx context.Context, cfg *rest.Config, timeout time.Duration) error {
	agg, err := aggregator.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var why string
	for {
		why = ""
		for _, gv := range groupVersions() {
			name := apiServiceName(gv)
			as, err := agg.ApiregistrationV1().APIServices().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				why = err.Error()
				break
			}
			if msg, ok := available(as); !ok {
				why = fmt.Sprintf("APIService %s not available: %s", name, msg)
				break
			}
		}
		if why == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("virt-api aggregated API: %s", why)
		case <-tick.C:
		}
	}
}

func available(as *apiregv1.APIService) (string, bool) {
	for _, c := range as.Status.Conditions {
		if c.Type == apiregv1.Available {
			return c.Reason + ": " + c.Message, c.Status == apiregv1.ConditionTrue
		}
	}
	return "no Available condition yet", false
}
