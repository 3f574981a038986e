package virtctl

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	virtv1 "kubevirt.io/api/core/v1"
)

const (
	// subresourceRoot is virt-api's aggregated API, the one every VM action
	// goes through (KubeVirt's subresources.kubevirt.io/v1).
	subresourceRoot = "/apis/subresources.kubevirt.io/v1"
	// kubevirtRoot is where the VM, VMI and VMIRS objects themselves live.
	kubevirtRoot = "/apis/kubevirt.io/v1"
)

// Resources the commands address, as they appear in API paths.
const (
	resourceVM    = "virtualmachines"
	resourceVMI   = "virtualmachineinstances"
	resourceVMIRS = "virtualmachineinstancereplicasets"
)

// client is the connection one command uses: the kubeconfig's REST config,
// the namespace the flags and kubeconfig select, and a REST client on them.
type client struct {
	config    *rest.Config
	namespace string
	kube      kubernetes.Interface
	rest      rest.Interface
}

// newClient resolves the kubeconfig the way kubectl does (flags, $KUBECONFIG,
// ~/.kube/config, in-cluster) for one command run.
func newClient(cc clientcmd.ClientConfig) (*client, error) {
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, err
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &client{config: cfg, namespace: ns, kube: kube, rest: kube.CoreV1().RESTClient()}, nil
}

// get reads one kubevirt.io/v1 object of resource into into. Errors are
// client-go's, so a missing object reads like kubectl's
// (`virtualmachines.kubevirt.io "x" not found`).
func (c *client) get(ctx context.Context, resource, name string, into any) error {
	path := fmt.Sprintf("%s/namespaces/%s/%s/%s", kubevirtRoot, c.namespace, resource, name)
	// Do, not DoRaw: only Result.Error turns the server's Status into the
	// error, so a missing object reads `... "x" not found`.
	res := c.rest.Get().AbsPath(path).Do(ctx)
	if err := res.Error(); err != nil {
		return err
	}
	body, err := res.Raw()
	if err != nil {
		return err
	}
	return json.Unmarshal(body, into)
}

// getVM reads a VirtualMachine.
func (c *client) getVM(ctx context.Context, name string) (*virtv1.VirtualMachine, error) {
	vm := &virtv1.VirtualMachine{}
	return vm, c.get(ctx, resourceVM, name, vm)
}

// put calls a subresource the way KubeVirt's virtctl does: PUT with the
// options object as JSON body. The server's Status message becomes the error.
func (c *client) put(ctx context.Context, resource, name, subresource string, options any) error {
	path := fmt.Sprintf("%s/namespaces/%s/%s/%s/%s", subresourceRoot, c.namespace, resource, name, subresource)
	req := c.rest.Put().AbsPath(path)
	if options != nil {
		body, err := json.Marshal(options)
		if err != nil {
			return err
		}
		req = req.SetHeader("Content-Type", "application/json").Body(body)
	}
	return req.Do(ctx).Error()
}
