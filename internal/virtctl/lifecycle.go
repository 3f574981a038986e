package virtctl

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	virtv1 "kubevirt.io/api/core/v1"
)

const (
	dryRunUsage      = "--dry-run=false: Flag used to set whether to perform a dry run or not. If true the command will be executed without performing any changes."
	forceUsage       = "--force=false: Only used when grace-period=0. If true, immediately remove VMI pod from API and bypass graceful deletion. Note that immediate deletion of some resources may result in inconsistency or data loss and requires confirmation."
	gracePeriodUsage = "--grace-period=-1: Period of time in seconds given to the VMI to terminate gracefully. Can only be set to 0 when --force is true (force deletion). Currently only setting 0 is supported."
)

// errForceWithGrace is KubeVirt's answer when --force and --grace-period are
// not given together.
var errForceWithGrace = errors.New("Must both use --force=true and set --grace-period.")

// dryRunOption announces a dry run on out, as KubeVirt's virtctl does, and
// returns the dryRun value the subresource options carry.
func dryRunOption(out io.Writer, dryRun bool) []string {
	if !dryRun {
		return nil
	}
	fmt.Fprintln(out, "Dry Run execution")
	return []string{metav1.DryRunAll}
}

func newStartCommand(cc clientcmd.ClientConfig) *cobra.Command {
	var paused, dryRun bool
	cmd := &cobra.Command{
		Use:     "start (VM)",
		Short:   "Start a virtual machine.",
		Example: "  # Start a virtual machine called 'myvm':\n  virtctl start myvm",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cc)
			if err != nil {
				return err
			}
			opts := &virtv1.StartOptions{Paused: paused, DryRun: dryRunOption(cmd.OutOrStdout(), dryRun)}
			if err := c.put(cmd.Context(), resourceVM, args[0], "start", opts); err != nil {
				return fmt.Errorf("Error starting VirtualMachine %v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "VM %s was scheduled to start\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&paused, "paused", false, "--paused=false: If set to true, start virtual machine in paused state")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, dryRunUsage)
	return cmd
}

func newStopCommand(cc clientcmd.ClientConfig) *cobra.Command {
	var force, dryRun bool
	var grace int64
	cmd := &cobra.Command{
		Use:     "stop (VM)",
		Short:   "Stop a virtual machine.",
		Example: "  # Stop a virtual machine called 'myvm':\n  virtctl stop myvm",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cc)
			if err != nil {
				return err
			}
			opts := &virtv1.StopOptions{DryRun: dryRunOption(cmd.OutOrStdout(), dryRun)}
			if cmd.Flags().Changed("grace-period") != force {
				return errForceWithGrace
			}
			errFmt := "error stopping VirtualMachine %v"
			if force {
				opts.GracePeriod = &grace
				errFmt = "error force stopping VirtualMachine: %v"
			}
			if err := c.put(cmd.Context(), resourceVM, args[0], "stop", opts); err != nil {
				return fmt.Errorf(errFmt, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "VM %s was scheduled to stop\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, forceUsage)
	cmd.Flags().Int64Var(&grace, "grace-period", -1, gracePeriodUsage)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, dryRunUsage)
	return cmd
}

func newRestartCommand(cc clientcmd.ClientConfig) *cobra.Command {
	var force, dryRun bool
	var grace int64
	cmd := &cobra.Command{
		Use:     "restart (VM)",
		Short:   "Restart a virtual machine.",
		Example: "  # Restart a virtual machine called 'myvm':\n  virtctl restart myvm",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cc)
			if err != nil {
				return err
			}
			opts := &virtv1.RestartOptions{DryRun: dryRunOption(cmd.OutOrStdout(), dryRun)}
			if cmd.Flags().Changed("grace-period") != force {
				return errForceWithGrace
			}
			errFmt := "error restarting VirtualMachine: %v"
			if force {
				opts.GracePeriodSeconds = &grace
				errFmt = "error force restarting VirtualMachine: %v"
			}
			if err := c.put(cmd.Context(), resourceVM, args[0], "restart", opts); err != nil {
				return fmt.Errorf(errFmt, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "VM %s was scheduled to restart\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, forceUsage)
	cmd.Flags().Int64Var(&grace, "grace-period", -1, gracePeriodUsage)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, dryRunUsage)
	return cmd
}

func newMigrateCommand(cc clientcmd.ClientConfig) *cobra.Command {
	var dryRun bool
	var nodeSelector map[string]string
	cmd := &cobra.Command{
		Use:     "migrate (VM)",
		Short:   "Migrate a virtual machine.",
		Example: "  # Migrate a virtual machine called 'myvm':\n  virtctl migrate myvm",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newClient(cc)
			if err != nil {
				return err
			}
			opts := &virtv1.MigrateOptions{
				DryRun:            dryRunOption(cmd.OutOrStdout(), dryRun),
				AddedNodeSelector: nodeSelector,
			}
			if err := c.put(cmd.Context(), resourceVM, args[0], "migrate", opts); err != nil {
				return fmt.Errorf("Error migrating VirtualMachine %v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "VM %s was scheduled to migrate\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringToStringVar(&nodeSelector, "addedNodeSelector", nil, "--addedNodeSelector=key=value1,key2=value2: configure an additional node selector for the one-off migration attempt. AddedNodeSelector can only restrict constraints already set on the VM.")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, dryRunUsage)
	return cmd
}
