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

// PauseReason is why libvirt holds a domain paused, by libvirt's name for
// the reason (virDomainPausedReason). virt-handler shows User and IOError on
// the VMI, as KubeVirt does; the others are transient or foreign to
// virtkube and leave the VMI's conditions alone.
type PauseReason string

const (
	PauseUser         PauseReason = "User" // virDomainSuspend, or started paused
	PauseIOError      PauseReason = "IOError"
	PauseStartingUp   PauseReason = "StartingUp"
	PauseShuttingDown PauseReason = "ShuttingDown"
	PauseCrashed      PauseReason = "Crashed"
	PauseOther        PauseReason = "Other"
)

// Status is a domain's state and, while it is paused, why.
type Status struct {
	State       State
	PauseReason PauseReason
}

// Driver knows how to start, stop, pause and inspect one domain.
type Driver interface {
	// Start creates and starts the domain from its XML; with paused its
	// CPUs do not run until Resume (the VMI's startStrategy Paused).
	Start(ctx context.Context, xml string, paused bool) error
	// Shutdown asks the guest to power off (ACPI power button).
	Shutdown(ctx context.Context) error
	// Kill stops the domain at once.
	Kill(ctx context.Context) error
	// Suspend stops the guest's CPUs; Resume lets them run again.
	Suspend(ctx context.Context) error
	Resume(ctx context.Context) error
	// State reports the domain's state.
	State(ctx context.Context) (Status, error)
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

func (d *libvirtDriver) Start(_ context.Context, xml string, paused bool) error {
	// Transient: the domain exists only while it runs, so nothing of it
	// outlives the pod.
	var flags libvirt.DomainCreateFlags
	if paused {
		// libvirt then reports the domain paused with reason user, as
		// if it had been suspended right after starting.
		flags |= libvirt.DomainStartPaused
	}
	if _, err := d.conn.DomainCreateXML(xml, flags); err != nil {
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

func (d *libvirtDriver) Suspend(_ context.Context) error {
	dom, err := d.lookup()
	if err != nil {
		return err
	}
	if err := d.conn.DomainSuspend(dom); err != nil {
		return fmt.Errorf("suspend domain %s: %w", d.name, err)
	}
	return nil
}

func (d *libvirtDriver) Resume(_ context.Context) error {
	dom, err := d.lookup()
	if err != nil {
		return err
	}
	if err := d.conn.DomainResume(dom); err != nil {
		return fmt.Errorf("resume domain %s: %w", d.name, err)
	}
	return nil
}

func (d *libvirtDriver) State(_ context.Context) (Status, error) {
	dom, err := d.lookup()
	if isNoDomain(err) {
		return Status{State: StateGone}, nil
	}
	if err != nil {
		return Status{State: StateUnknown}, err
	}
	state, reason, err := d.conn.DomainGetState(dom, 0)
	if isNoDomain(err) {
		return Status{State: StateGone}, nil
	}
	if err != nil {
		return Status{State: StateUnknown}, err
	}
	return statusOf(libvirt.DomainState(state), reason), nil
}

// statusOf maps libvirt's state and state reason to a Status.
func statusOf(state libvirt.DomainState, reason int32) Status {
	switch state {
	case libvirt.DomainRunning, libvirt.DomainBlocked:
		return Status{State: StateRunning}
	case libvirt.DomainPaused:
		return Status{State: StatePaused, PauseReason: pauseReasonOf(libvirt.DomainPausedReason(reason))}
	case libvirt.DomainPmsuspended:
		// Suspended to RAM by the guest itself: not a pause anyone asked
		// for, so no reason the VMI would show.
		return Status{State: StatePaused, PauseReason: PauseOther}
	case libvirt.DomainShutdown:
		return Status{State: StateShutdown}
	case libvirt.DomainShutoff:
		return Status{State: StateShutoff}
	case libvirt.DomainCrashed:
		return Status{State: StateCrashed}
	}
	return Status{State: StateUnknown}
}

func pauseReasonOf(r libvirt.DomainPausedReason) PauseReason {
	switch r {
	case libvirt.DomainPausedUser:
		return PauseUser
	case libvirt.DomainPausedIoerror:
		return PauseIOError
	case libvirt.DomainPausedStartingUp:
		return PauseStartingUp
	case libvirt.DomainPausedShuttingDown:
		return PauseShuttingDown
	case libvirt.DomainPausedCrashed:
		return PauseCrashed
	}
	return PauseOther
}

func isNoDomain(err error) bool {
	return err != nil && libvirt.IsNotFound(err)
}

// shutdownRepeat is how often StopGracefully presses the power button
// again: a guest still booting (or between ACPI handlers) ignores a press,
// and a guest that took the first one ignores the rest.
const shutdownRepeat = time.Second

// StopGracefully asks the guest to power off and waits up to grace for the
// domain to end, pressing the power button again every few seconds, then
// kills it. It reports whether the guest stopped by itself. A paused guest
// cannot answer the button and is killed after grace: like KubeVirt, the
// launcher does not resume a guest the user paused.
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
		if err == nil && (st.State == StateGone || st.State == StateShutoff) {
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
