package virtctl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	virtv1 "kubevirt.io/api/core/v1"

	"github.com/virtkube/virtkube/internal/vmispec"
)

// exposeOptions are expose's flags.
type exposeOptions struct {
	name, clusterIP, externalIP string
	port, nodePort              int32
	protocol, targetPort        string
	serviceType, portName       string
	ipFamily, ipFamilyPolicy    string
}

func newExposeCommand(cc clientcmd.ClientConfig) *cobra.Command {
	o := exposeOptions{}
	cmd := &cobra.Command{
		Use:   "expose (TYPE NAME)",
		Short: "Expose a virtual machine instance, virtual machine, or virtual machine instance replica set as a new service.",
		Long: `Looks up a virtual machine instance, virtual machine or virtual machine instance replica set by name and use its selector as the selector for a new service on the specified port.
A virtual machine instance replica set will be exposed as a service only if its selector is convertible to a selector that service supports, i.e. when the selector contains only the matchLabels component.
Note that if no port is specified via --port and the exposed resource has multiple ports, all will be re-used by the new service.

Possible types are (case insensitive, both single and plurant forms):

virtualmachineinstance (vmi), virtualmachine (vm), virtualmachineinstancereplicaset (vmirs)`,
		Example: `  # Expose SSH to a virtual machine instance called 'myvm' on each node via a NodePort service:
  virtctl expose vmi myvm --port=22 --name=myvm-ssh --type=NodePort

  # Expose port 8080 as port 80 from a virtual machine instance replicaset on a service:
  virtctl expose vmirs myvmirs --port=80 --target-port=8080 --name=vmirs-service`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name := strings.ToLower(args[0]), args[1]
			c, err := newClient(cc)
			if err != nil {
				return fmt.Errorf("cannot obtain KubeVirt virtClient: %v", err)
			}
			svc, err := o.service(cmd.Context(), c, kind, name)
			if err != nil {
				return err
			}
			if _, err := c.kube.CoreV1().Services(c.namespace).Create(cmd.Context(), svc, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("service creation failed: %v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Service %s successfully exposed for %s %s\n", o.name, kind, name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "Name of the service created for the exposure of the VM.")
	_ = cmd.MarkFlagRequired("name")
	f.StringVar(&o.clusterIP, "cluster-ip", "", "ClusterIP to be assigned to the service. Leave empty to auto-allocate, or set to 'None' to create a headless service.")
	f.StringVar(&o.externalIP, "external-ip", "", "Additional external IP address (not managed by the cluster) to accept for the service. If this IP is routed to a node, the service can be accessed by this IP in addition to its generated service IP. Optional.")
	f.Int32Var(&o.port, "port", 0, "The port that the service should serve on.")
	f.Int32Var(&o.nodePort, "node-port", 0, "Port used to expose the service on each node in a cluster (with --type NodePort or LoadBalancer). Optional.")
	f.StringVar(&o.protocol, "protocol", "TCP", "The network protocol for the service to be created.")
	f.StringVar(&o.targetPort, "target-port", "", "Name or number for the port on the VM that the service should direct traffic to. Optional.")
	f.StringVar(&o.serviceType, "type", "ClusterIP", "Type for this service: ClusterIP, NodePort, or LoadBalancer.")
	f.StringVar(&o.portName, "port-name", "", "Name of the port. Optional.")
	f.StringVar(&o.ipFamily, "ip-family", "", "IP family over which the service will be exposed. Valid values are 'IPv4', 'IPv6', 'IPv4,IPv6' or 'IPv6,IPv4'")
	f.StringVar(&o.ipFamilyPolicy, "ip-family-policy", "", "IP family policy defines whether the service can use IPv4, IPv6, or both. Valid values are 'SingleStack', 'PreferDualStack' or 'RequireDualStack'")
	return cmd
}

// service builds the Service for the object kind/name as KubeVirt's virtctl
// does: VMs and VMIs are selected by the vmi.kubevirt.io/id label every
// launcher pod carries, a VMIRS by its matchLabels; without --port the ports
// declared on the pod-network interface are reused.
func (o *exposeOptions) service(ctx context.Context, c *client, kind, name string) (*corev1.Service, error) {
	spec := corev1.ServiceSpec{ClusterIP: o.clusterIP}
	var err error
	if spec.Type, err = parseServiceType(o.serviceType); err != nil {
		return nil, err
	}
	protocol, err := parseProtocol(o.protocol)
	if err != nil {
		return nil, err
	}
	if spec.IPFamilies, err = parseIPFamilies(o.ipFamily); err != nil {
		return nil, err
	}
	if spec.IPFamilyPolicy, err = parseIPFamilyPolicy(o.ipFamilyPolicy, spec.IPFamilies); err != nil {
		return nil, err
	}

	var template *virtv1.VirtualMachineInstanceSpec
	switch kind {
	case "vmi", "vmis", "virtualmachineinstance", "virtualmachineinstances":
		vmi := &virtv1.VirtualMachineInstance{}
		if err := c.get(ctx, resourceVMI, name, vmi); err != nil {
			return nil, fmt.Errorf("error fetching VirtualMachineInstance: %v", err)
		}
		template = &vmi.Spec
		spec.Selector = map[string]string{virtv1.VirtualMachineInstanceIDLabel: vmispec.IDLabelValue(vmi.Name)}
	case "vm", "vms", "virtualmachine", "virtualmachines":
		vm, err := c.getVM(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("error fetching VirtualMachine: %v", err)
		}
		if vm.Spec.Template != nil {
			template = &vm.Spec.Template.Spec
		}
		spec.Selector = map[string]string{virtv1.VirtualMachineInstanceIDLabel: vmispec.IDLabelValue(vm.Name)}
	case "vmirs", "vmirss", "virtualmachineinstancereplicaset", "virtualmachineinstancereplicasets":
		rs := &virtv1.VirtualMachineInstanceReplicaSet{}
		if err := c.get(ctx, resourceVMIRS, name, rs); err != nil {
			return nil, fmt.Errorf("error fetching VirtualMachineInstanceReplicaSet: %v", err)
		}
		if rs.Spec.Template != nil {
			template = &rs.Spec.Template.Spec
		}
		if rs.Spec.Selector == nil || len(rs.Spec.Selector.MatchLabels) == 0 {
			return nil, errors.New("cannot expose VirtualMachineInstanceReplicaSet without any selector labels")
		}
		if len(rs.Spec.Selector.MatchExpressions) > 0 {
			return nil, errors.New("cannot expose VirtualMachineInstanceReplicaSet with match expressions")
		}
		spec.Selector = rs.Spec.Selector.MatchLabels
	default:
		return nil, fmt.Errorf("unsupported resource type: %s", kind)
	}

	if o.port != 0 {
		spec.Ports = []corev1.ServicePort{{
			Name: o.portName, Protocol: protocol, Port: o.port,
			TargetPort: intstr.Parse(o.targetPort), NodePort: o.nodePort,
		}}
	} else if template != nil {
		spec.Ports = podNetworkPorts(template)
	}
	if len(spec.Ports) == 0 {
		return nil, errors.New("couldn't find port via --port flag or introspection")
	}
	if o.externalIP != "" {
		spec.ExternalIPs = []string{o.externalIP}
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: o.name, Namespace: c.namespace},
		Spec:       spec,
	}, nil
}

// podNetworkPorts lists the ports declared on the interface bound to the pod
// network, named port-1, port-2, ...
func podNetworkPorts(spec *virtv1.VirtualMachineInstanceSpec) []corev1.ServicePort {
	podNetwork := ""
	for _, n := range spec.Networks {
		if n.Pod != nil {
			podNetwork = n.Name
			break
		}
	}
	if podNetwork == "" {
		return nil
	}
	for _, iface := range spec.Domain.Devices.Interfaces {
		if iface.Name != podNetwork {
			continue
		}
		var ports []corev1.ServicePort
		for i, p := range iface.Ports {
			protocol := corev1.Protocol(p.Protocol)
			if protocol == "" {
				protocol = corev1.ProtocolTCP
			}
			ports = append(ports, corev1.ServicePort{Name: fmt.Sprintf("port-%d", i+1), Protocol: protocol, Port: p.Port})
		}
		return ports
	}
	return nil
}

func parseProtocol(s string) (corev1.Protocol, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return corev1.ProtocolTCP, nil
	case "udp":
		return corev1.ProtocolUDP, nil
	}
	return "", fmt.Errorf("unknown protocol: %s", s)
}

func parseServiceType(s string) (corev1.ServiceType, error) {
	switch strings.ToLower(s) {
	case "clusterip":
		return corev1.ServiceTypeClusterIP, nil
	case "nodeport":
		return corev1.ServiceTypeNodePort, nil
	case "loadbalancer":
		return corev1.ServiceTypeLoadBalancer, nil
	case "externalname":
		return "", fmt.Errorf("type: %s not supported", s)
	}
	return "", fmt.Errorf("unknown service type: %s", s)
}

func parseIPFamilies(s string) ([]corev1.IPFamily, error) {
	switch strings.ToLower(s) {
	case "":
		return nil, nil
	case "ipv4":
		return []corev1.IPFamily{corev1.IPv4Protocol}, nil
	case "ipv6":
		return []corev1.IPFamily{corev1.IPv6Protocol}, nil
	case "ipv4,ipv6":
		return []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}, nil
	case "ipv6,ipv4":
		return []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}, nil
	}
	return nil, fmt.Errorf("unknown IPFamily/s: %s", s)
}

// parseIPFamilyPolicy defaults to PreferDualStack when two families were
// asked for, since the API server would refuse them under SingleStack.
func parseIPFamilyPolicy(s string, families []corev1.IPFamily) (*corev1.IPFamilyPolicy, error) {
	var p corev1.IPFamilyPolicy
	switch strings.ToLower(s) {
	case "":
		if len(families) < 2 {
			return nil, nil
		}
		p = corev1.IPFamilyPolicyPreferDualStack
	case "singlestack":
		p = corev1.IPFamilyPolicySingleStack
	case "preferdualstack":
		p = corev1.IPFamilyPolicyPreferDualStack
	case "requiredualstack":
		p = corev1.IPFamilyPolicyRequireDualStack
	default:
		return nil, fmt.Errorf("unknown IPFamilyPolicy/s: %s", s)
	}
	return &p, nil
}
