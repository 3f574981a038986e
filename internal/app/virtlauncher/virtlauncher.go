// Package virtlauncher is the virt-launcher command: the compute container
// of a launcher pod. It owns one VMI's domain (see internal/launcher).
package virtlauncher

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/virtkube/virtkube/internal/launcher"
	"github.com/virtkube/virtkube/internal/storage"
	"github.com/virtkube/virtkube/internal/storage/cloudinit"
)

// ovmfCode is where Debian's ovmf package puts the EFI firmware.
const ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"

// Options are the flags virt-controller puts on the launcher's command line.
type Options struct {
	Name, Namespace, UID string
	GracePeriodSeconds   int64
	SocketsDir           string
	ContainerDisksDir    string
	EphemeralDir         string
	SecretsDir           string
	LibvirtDir           string
	PrivateLibvirt       bool
	CapabilitiesCache    string
}

// Validate names the first missing or bad flag.
func (o *Options) Validate() error {
	for _, f := range []struct{ flag, value string }{
		{"--name", o.Name}, {"--namespace", o.Namespace}, {"--uid", o.UID}, {"--sockets-dir", o.SocketsDir},
	} {
		if f.value == "" {
			return fmt.Errorf("%s must be set", f.flag)
		}
	}
	if o.GracePeriodSeconds < 0 {
		return errors.New("--grace-period-seconds must not be negative")
	}
	return nil
}

// NewCommand returns `virt-launcher`.
func NewCommand() *cobra.Command {
	o := &Options{
		GracePeriodSeconds: 30,
		ContainerDisksDir:  "/var/run/kubevirt/container-disks",
		EphemeralDir:       "/var/run/kubevirt-ephemeral-disks",
		SecretsDir:         cloudinit.SecretsDir,
		LibvirtDir:         "/var/run/kubevirt-private/libvirt",
	}
	cmd := &cobra.Command{
		Use:   "virt-launcher",
		Short: "Run one VMI's domain (the compute container of a launcher pod)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			cfg := launcher.Config{
				Name: o.Name, Namespace: o.Namespace, UID: o.UID,
				GracePeriod: time.Duration(o.GracePeriodSeconds) * time.Second,
				SocketsDir:  o.SocketsDir,
				Disks:       storage.Dirs{ContainerDisks: o.ContainerDisksDir, Ephemeral: o.EphemeralDir, Secrets: o.SecretsDir},
				Libvirt:     launcher.DaemonOptions{Dir: o.LibvirtDir, PrivateDirs: o.PrivateLibvirt, CapabilitiesCache: o.CapabilitiesCache, Stderr: os.Stderr},
			}
			if _, err := os.Stat(ovmfCode); err == nil {
				cfg.EFIFirmware = ovmfCode
			}
			// SIGTERM (the pod is deleted) cancels the context: the guest
			// is powered off within the grace period.
			sctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			ctx := klog.NewContext(sctx, klog.Background().WithName("virt-launcher"))
			return launcher.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", o.Name, "name of the VMI")
	f.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace of the VMI")
	f.StringVar(&o.UID, "uid", o.UID, "UID of the VMI")
	f.Int64Var(&o.GracePeriodSeconds, "grace-period-seconds", o.GracePeriodSeconds, "time the guest gets to power off before it is killed")
	f.StringVar(&o.SocketsDir, "sockets-dir", o.SocketsDir, "directory shared with virt-handler (launcher, console and VNC sockets)")
	f.StringVar(&o.ContainerDisksDir, "container-disks-dir", o.ContainerDisksDir, "where each containerDisk volume's container serves its disk (<volume>.sock)")
	f.StringVar(&o.SecretsDir, "secrets-dir", o.SecretsDir, "where the Secrets of the cloud-init volume are mounted (<volume>/userdata, <volume>/networkdata)")
	f.StringVar(&o.EphemeralDir, "ephemeral-dir", o.EphemeralDir, "where overlays, empty disks and cloud-init ISOs are made")
	f.StringVar(&o.LibvirtDir, "libvirt-dir", o.LibvirtDir, "state, configuration and socket of the launcher's libvirt daemon")
	f.StringVar(&o.CapabilitiesCache, "qemu-capabilities-cache", o.CapabilitiesCache, "a directory the launchers of this machine share for libvirt's QEMU capabilities cache, so only the first one probes QEMU (empty: none)")
	f.BoolVar(&o.PrivateLibvirt, "private-libvirt", o.PrivateLibvirt, "give libvirtd a mount namespace with private /etc, /run, /var/lib, /var/log and /var/cache libvirt dirs (for runtimes that share the host's filesystem)")
	return cmd
}
