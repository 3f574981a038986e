package launcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/digitalocean/go-libvirt"
)

// State is a domain's state as virt-handler reports it.
type State string

const (
	StateRunning  State = "Running"
	StatePaused   State = "Paused"
	StateShutdown State = "Shutdown" // shutting down
	StateShutoff  State = "Shutoff"
	StateCrashed  State = "Crashed"
	StateUnknown  State = "Unknown"
	// StateGone: no such domain (it was never started, or it ended and,
	// being transient, was undefined).
	StateGone State = "Gone"
)

// Driver knows how to start, stop and inspect one domain.
type Driver interface {
	// Start creates and starts the domain from its XML.
	Start(ctx context.Context, xml string) error
	// Shutdown asks the guest to power off (ACPI power button).
	Shutdown(ctx context.Context) error
	// Kill stops the domain at once.
	Kill(ctx context.Context) error
	// State reports the domain's state.
	State(ctx context.Context) (State, error)
}

// libvirtDriver drives one transient domain through a libvirt connection.
type libvirtDriver struct {
	conn *libvirt.Libvirt
	name string
}

var _ Driver = (*libvirtDriver)(nil)

// NewDriver returns a Driver for the domain called name on conn.
func NewDriver(conn *libvirt.Libvirt, name string) Driver {
	return &libvirtDriver{conn: conn, name: name}
}

func (d *libvirtDriver) Start(_ context.Context, xml string) error {
	// Transient: the domain exists only while it runs, so nothing of it
	// outlives the pod.
	if _, err := d.conn.DomainCreateXML(xml, 0); err != nil {
		return fmt.Errorf("start domain %s: %w", d.name, err)
	}
	return nil
}

func (d *libvirtDriver) lookup() (libvirt.Domain, error) {
	return d.conn.DomainLookupByName(d.name)
}

func (d *libvirtDriver) Shutdown(_ context.Context) error {
	dom, err := d.lookup()
	if isNoDomain(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := d.conn.DomainShutdownFlags(dom, libvirt.DomainShutdownAcpiPowerBtn); err != nil && !isNoDomain(err) {
		return fmt.Errorf("shut down domain %s: %w", d.name, err)
	}
	return nil
}

func (d *libvirtDriver) Kill(_ context.Context) error {
	dom, err := d.lookup()
	if isNoDomain(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := d.conn.DomainDestroy(dom); err != nil && !isNoDomain(err) {
		return fmt.Errorf("destroy domain %s: %w", d.name, err)
	}
	return nil
}

func (d *libvirtDriver) State(_ context.Context) (State, error) {
	dom, err := d.lookup()
	if isNoDomain(err) {
		return StateGone, nil
	}
	if err != nil {
		return StateUnknown, err
	}
	state, _, err := d.conn.DomainGetState(dom, 0)
	if isNoDomain(err) {
		return StateGone, nil
	}
	if err != nil {
		return StateUnknown, err
	}
	switch libvirt.DomainState(state) {
	case libvirt.DomainRunning, libvirt.DomainBlocked:
		return StateRunning, nil
	case libvirt.DomainPaused, libvirt.DomainPmsuspended:
		return StatePaused, nil
	case libvirt.DomainShutdown:
		return StateShutdown, nil
	case libvirt.DomainShutoff:
		return StateShutoff, nil
	case libvirt.DomainCrashed:
		return StateCrashed, nil
	}
	return StateUnknown, nil
}

func isNoDomain(err error) bool {
	return err != nil && libvirt.IsNotFound(err)
}

// shutdownRepeat is how often StopGracefully presses the power button
// again: a guest still booting (or between ACPI handlers) ignores a press.
const shutdownRepeat = 5 * time.Second

// StopGracefully asks the guest to power off and waits up to grace for the
// domain to end, pressing the power button again every few seconds, then
// kills it. It reports whether the guest stopped by itself.
func StopGracefully(ctx context.Context, d Driver, grace time.Duration) (bool, error) {
	if err := d.Shutdown(ctx); err != nil {
		return false, err
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastPress := time.Now()
	for {
		st, err := d.State(ctx)
		if err == nil && (st == StateGone || st == StateShutoff) {
			return true, nil
		}
		if time.Since(lastPress) >= shutdownRepeat {
			if err := d.Shutdown(ctx); err != nil {
				return false, err
			}
			lastPress = time.Now()
		}
		select {
		case <-deadline.C:
			return false, d.Kill(ctx)
		case <-ctx.Done():
			return false, errors.Join(ctx.Err(), d.Kill(context.WithoutCancel(ctx)))
		case <-tick.C:
		}
	}
}
