package virtctl

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/tools/clientcmd"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const cloudInitDisk = "cloudinitdisk"

var runStrategies = []string{
	string(virtv1.RunStrategyAlways),
	string(virtv1.RunStrategyManual),
	string(virtv1.RunStrategyHalted),
	string(virtv1.RunStrategyOnce),
	string(virtv1.RunStrategyRerunOnFailure),
}

// createVMOptions are `create vm`'s flags: the part of KubeVirt's that needs
// no server (no DataVolume cloning or import).
type createVMOptions struct {
	name                 string
	runStrategy          string
	terminationGrace     int64
	memory               string
	instancetype         string
	preference           string
	containerdisks       []string
	pvcs                 []string
	cloudInitUserData    string
	cloudInitNetworkData string
}

func newCreateCommand(cc clientcmd.ClientConfig) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a manifest for the specified Kind.",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newCreateVMCommand(cc))
	return cmd
}

func newCreateVMCommand(cc clientcmd.ClientConfig) *cobra.Command {
	o := createVMOptions{
		runStrategy:      string(virtv1.RunStrategyAlways),
		terminationGrace: 180,
		memory:           "512Mi",
	}
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Create a VirtualMachine manifest.",
		Long:  "Create a VirtualMachine manifest.\n\nIf no boot order was specified volumes have the following fixed boot order:\nContainerdisk > PVC",
		Example: `  # Create a manifest for a VirtualMachine with a random name:
  virtctl create vm

  # Create a manifest for a VirtualMachine booting a containerdisk, with cloud-init user data:
  virtctl create vm --name my-vm --volume-containerdisk=src:my.registry/my-image:my-tag --cloud-init-user-data=$(base64 -w0 user-data)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.name == "" {
				o.name = "vm-" + rand.String(5)
			}
			ns, overridden, err := cc.Namespace()
			if err != nil {
				return err
			}
			if !overridden {
				ns = ""
			}
			vm, err := o.virtualMachine(ns, cmd.Flags().Changed("memory"))
			if err != nil {
				return err
			}
			out, err := yaml.Marshal(vm)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "Specify the name of the VM.")
	f.StringVar(&o.runStrategy, "run-strategy", o.runStrategy, "Specify the RunStrategy of the VM.")
	f.Int64Var(&o.terminationGrace, "termination-grace-period", o.terminationGrace, "Specify the termination grace period of the VM.")
	f.StringVar(&o.memory, "memory", o.memory, "Specify the memory of the VM.")
	f.StringVar(&o.instancetype, "instancetype", "", "Specify the Instance Type of the VM.")
	f.StringVar(&o.preference, "preference", "", "Specify the Preference of the VM.")
	cmd.MarkFlagsMutuallyExclusive("memory", "instancetype")
	f.StringArrayVar(&o.containerdisks, "volume-containerdisk", nil, "Specify a containerdisk to be used by the VM. Can be provided multiple times.\nSupported parameters: type:containerdisk,src:<string>,name:<string>,bootorder:<uint>")
	f.StringArrayVar(&o.pvcs, "volume-pvc", nil, "Specify a PVCs to be used by the VM. Can be provided multiple times.\nSupported parameters: src:<string>,name:<string>,bootorder:<uint>")
	f.StringVar(&o.cloudInitUserData, "cloud-init-user-data", "", "Specify the base64 encoded cloud-init user data of the VM.")
	f.StringVar(&o.cloudInitNetworkData, "cloud-init-network-data", "", "Specify the base64 encoded cloud-init network data of the VM.")
	f.SortFlags = false
	return cmd
}

// virtualMachine builds the manifest. Like KubeVirt's, a VM without an
// instancetype gets 512Mi of guest memory, and when its first boot volume is
// a PVC it asks the server to infer instancetype and preference from it,
// ignoring failure (the PVC may carry no hints).
func (o *createVMOptions) virtualMachine(namespace string, memoryChanged bool) (*virtv1.VirtualMachine, error) {
	if !slices.Contains(runStrategies, o.runStrategy) {
		return nil, flagErr("run-strategy", "invalid RunStrategy %q, supported values are: %s", o.runStrategy, strings.Join(runStrategies, ", "))
	}
	runStrategy := virtv1.VirtualMachineRunStrategy(o.runStrategy)
	memory, err := resource.ParseQuantity(o.memory)
	if err != nil {
		return nil, flagErr("memory", "%v", err)
	}
	grace := o.terminationGrace
	vm := &virtv1.VirtualMachine{
		TypeMeta:   metav1.TypeMeta{Kind: "VirtualMachine", APIVersion: virtv1.GroupVersion.String()},
		ObjectMeta: metav1.ObjectMeta{Name: o.name, Namespace: namespace},
		Spec: virtv1.VirtualMachineSpec{
			RunStrategy: &runStrategy,
			Template: &virtv1.VirtualMachineInstanceTemplateSpec{Spec: virtv1.VirtualMachineInstanceSpec{
				TerminationGracePeriodSeconds: &grace,
				Domain:                        virtv1.DomainSpec{Memory: &virtv1.Memory{Guest: &memory}},
			}},
		},
	}
	if o.instancetype != "" {
		kind, name := splitPrefixed(o.instancetype)
		vm.Spec.Instancetype = &virtv1.InstancetypeMatcher{Kind: kind, Name: name}
		vm.Spec.Template.Spec.Domain.Memory = nil
	}
	if o.preference != "" {
		kind, name := splitPrefixed(o.preference)
		vm.Spec.Preference = &virtv1.PreferenceMatcher{Kind: kind, Name: name}
	}

	b := volumeBuilder{vm: vm, bootOrders: map[uint]string{}}
	for i, spec := range o.containerdisks {
		if err := b.add("volume-containerdisk", spec, fmt.Sprintf("%s-containerdisk-%d", vm.Name, i), containerdiskSource); err != nil {
			return nil, err
		}
	}
	for _, spec := range o.pvcs {
		if err := b.add("volume-pvc", spec, "", pvcSource); err != nil {
			return nil, err
		}
	}
	if o.cloudInitUserData != "" || o.cloudInitNetworkData != "" {
		vm.Spec.Template.Spec.Volumes = append(vm.Spec.Template.Spec.Volumes, virtv1.Volume{
			Name: cloudInitDisk,
			VolumeSource: virtv1.VolumeSource{CloudInitNoCloud: &virtv1.CloudInitNoCloudSource{
				UserDataBase64:    o.cloudInitUserData,
				NetworkDataBase64: o.cloudInitNetworkData,
			}},
		})
	}

	if boot := b.firstBootVolume(); boot != nil && boot.PersistentVolumeClaim != nil {
		ignore := virtv1.IgnoreInferFromVolumeFailure
		if o.instancetype == "" && !memoryChanged {
			vm.Spec.Instancetype = &virtv1.InstancetypeMatcher{InferFromVolume: boot.Name, InferFromVolumeFailurePolicy: &ignore}
		}
		if o.preference == "" {
			vm.Spec.Preference = &virtv1.PreferenceMatcher{InferFromVolume: boot.Name, InferFromVolumeFailurePolicy: &ignore}
		}
	}
	return vm, nil
}

// volumeBuilder adds volumes (and disks, when a boot order is given) to a
// VM, refusing duplicate names and boot orders.
type volumeBuilder struct {
	vm         *virtv1.VirtualMachine
	bootOrders map[uint]string
}

// volumeSource makes the source of a volume from its src parameter.
type volumeSource func(flag, src string) (virtv1.VolumeSource, string, error)

func containerdiskSource(_, src string) (virtv1.VolumeSource, string, error) {
	return virtv1.VolumeSource{ContainerDisk: &virtv1.ContainerDiskSource{Image: src}}, "", nil
}

// pvcSource names the volume after the claim by default.
func pvcSource(flag, src string) (virtv1.VolumeSource, string, error) {
	if strings.Contains(src, "/") {
		return virtv1.VolumeSource{}, "", flagErr(flag, "not allowed to specify namespace of pvc '%s'", src)
	}
	return virtv1.VolumeSource{PersistentVolumeClaim: &virtv1.PersistentVolumeClaimVolumeSource{
		PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: src},
	}}, src, nil
}

func (b *volumeBuilder) add(flag, spec, defaultName string, source volumeSource) error {
	params, err := parseParams(flag, spec, "src", "name", "bootorder")
	if err != nil {
		return err
	}
	if params["src"] == "" {
		return flagErr(flag, "src must be specified")
	}
	vs, sourceName, err := source(flag, params["src"])
	if err != nil {
		return err
	}
	name := params["name"]
	if name == "" {
		name = defaultName
	}
	if name == "" {
		name = sourceName
	}
	for _, v := range b.vm.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return flagErr(flag, "there is already a volume with name '%s'", name)
		}
	}
	b.vm.Spec.Template.Spec.Volumes = append(b.vm.Spec.Template.Spec.Volumes, virtv1.Volume{Name: name, VolumeSource: vs})
	if s, ok := params["bootorder"]; ok {
		n, err := strconv.ParseUint(s, 10, 0)
		if err != nil || n == 0 {
			return flagErr(flag, "bootorder must be greater than 0")
		}
		order := uint(n)
		if _, dup := b.bootOrders[order]; dup {
			return flagErr(flag, "bootorder %d was specified multiple times", order)
		}
		b.bootOrders[order] = name
		devices := &b.vm.Spec.Template.Spec.Domain.Devices
		devices.Disks = append(devices.Disks, virtv1.Disk{Name: name, BootOrder: &order})
	}
	return nil
}

// firstBootVolume is the volume with the lowest boot order, else the first.
func (b *volumeBuilder) firstBootVolume() *virtv1.Volume {
	vols := b.vm.Spec.Template.Spec.Volumes
	if len(vols) == 0 {
		return nil
	}
	name := vols[0].Name
	if len(b.bootOrders) > 0 {
		name = b.bootOrders[slices.Min(mapKeys(b.bootOrders))]
	}
	for i := range vols {
		if vols[i].Name == name {
			return &vols[i]
		}
	}
	return nil
}

func mapKeys(m map[uint]string) []uint {
	keys := make([]uint, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// parseParams reads KubeVirt's "key:value,key:value" flag values.
func parseParams(flag, s string, allowed ...string) (map[string]string, error) {
	params := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			return nil, flagErr(flag, "params need to have at least one colon: %s", kv)
		}
		k = strings.ToLower(k)
		if !slices.Contains(allowed, k) {
			return nil, flagErr(flag, "unknown param(s): %s", kv)
		}
		params[k] = v
	}
	return params, nil
}

// splitPrefixed splits "kind/name" (e.g. virtualmachineinstancetype/small).
func splitPrefixed(s string) (kind, name string) {
	if k, n, ok := strings.Cut(s, "/"); ok {
		return k, n
	}
	return "", s
}

func flagErr(flag, format string, a ...any) error {
	return fmt.Errorf("failed to parse %q flag: %w", "--"+flag, fmt.Errorf(format, a...))
}
