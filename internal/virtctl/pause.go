package virtctl

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/clientcmd"
	virtv1 "kubevirt.io/api/core/v1"
)

func newPauseCommand(cc clientcmd.ClientConfig) *cobra.Command {
	return newFreezeCommand(cc, "pause", "Pause a virtual machine",
		"Pauses a virtual machine by freezing it. Machine state is kept in memory.")
}

func newUnpauseCommand(cc clientcmd.ClientConfig) *cobra.Command {
	return newFreezeCommand(cc, "unpause", "Unpause a virtual machine", "Unpauses a virtual machine.")
}

// newFreezeCommand builds pause and unpause, which differ only in the
// subresource and the words: both act on the VMI, a VM argument naming the
// VMI it runs (same name).
func newFreezeCommand(cc clientcmd.ClientConfig, verb, short, long string) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   verb + " vm|vmi (VM)|(VMI)",
		Short: short,
		Long: long + `
First argument is the resource type, possible types are (case insensitive, both singular and plural forms) virtualmachineinstance (vmi) or virtualmachine (vm).
Second argument is the name of the resource.`,
		Example: fmt.Sprintf("  # %s a virtualmachine called 'myvm':\n  virtctl %s vm myvm", strings.ToUpper(verb[:1])+verb[1:], verb),
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cc)
			if err != nil {
				return fmt.Errorf("Cannot obtain KubeVirt client: %v", err)
			}
			dry := dryRunOption(cmd.OutOrStdout(), dryRun)
			var opts any = &virtv1.PauseOptions{DryRun: dry}
			if verb == "unpause" {
				opts = &virtv1.UnpauseOptions{DryRun: dry}
			}
			name, err := freeze(cmd.Context(), c, verb, strings.ToLower(args[0]), args[1], opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "VMI %s was scheduled to %s\n", name, verb)
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, dryRunUsage)
	return cmd
}

// freeze calls the VMI's pause or unpause subresource and returns the VMI's
// name. For a VM it first checks the VM exists so a stopped VM gets a
// clearer message than "not found".
func freeze(ctx context.Context, c *client, verb, kind, name string, opts any) (string, error) {
	gerund := map[string]string{"pause": "pausing", "unpause": "unpausing"}[verb]
	switch kind {
	case "vm", "vms", "virtualmachine", "virtualmachines":
		vm, err := c.getVM(ctx, name)
		if err != nil {
			return "", fmt.Errorf("Error getting VirtualMachine %s: %v", name, err)
		}
		err = c.put(ctx, resourceVMI, vm.Name, verb, opts)
		if apierrors.IsNotFound(err) && verb == "pause" {
			if rs, rsErr := vm.RunStrategy(); rsErr == nil && rs == virtv1.RunStrategyHalted {
				return "", fmt.Errorf("Error pausing VirtualMachineInstance %s. VirtualMachine %s is not set to run", vm.Name, vm.Name)
			}
			return "", fmt.Errorf("Error pausing VirtualMachineInstance %s, it was not found", vm.Name)
		}
		if err != nil {
			return "", fmt.Errorf("Error %s VirtualMachineInstance %s: %v", gerund, vm.Name, err)
		}
		return vm.Name, nil
	case "vmi", "vmis", "virtualmachineinstance", "virtualmachineinstances":
		if err := c.put(ctx, resourceVMI, name, verb, opts); err != nil {
			return "", fmt.Errorf("Error %s VirtualMachineInstance %s: %v", gerund, name, err)
		}
		return name, nil
	default:
		return "", fmt.Errorf("unsupported resource type: %s", kind)
	}
}
