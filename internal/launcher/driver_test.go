package launcher

import (
	"testing"

	"github.com/digitalocean/go-libvirt"

	"github.com/virtkube/virtkube/internal/launcherrpc"
)

func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		state  libvirt.DomainState
		reason int32
		want   Status
	}{
		{"running", libvirt.DomainRunning, int32(libvirt.DomainRunningBooted), Status{State: StateRunning}},
		{"blocked counts as running", libvirt.DomainBlocked, 0, Status{State: StateRunning}},
		{"paused by the user", libvirt.DomainPaused, int32(libvirt.DomainPausedUser), Status{State: StatePaused, PauseReason: PauseUser}},
		{"paused on an I/O error", libvirt.DomainPaused, int32(libvirt.DomainPausedIoerror), Status{State: StatePaused, PauseReason: PauseIOError}},
		{"paused while starting", libvirt.DomainPaused, int32(libvirt.DomainPausedStartingUp), Status{State: StatePaused, PauseReason: PauseStartingUp}},
		{"paused for migration", libvirt.DomainPaused, int32(libvirt.DomainPausedMigration), Status{State: StatePaused, PauseReason: PauseOther}},
		{"suspended to RAM by the guest", libvirt.DomainPmsuspended, 0, Status{State: StatePaused, PauseReason: PauseOther}},
		{"shutting down", libvirt.DomainShutdown, 0, Status{State: StateShutdown}},
		{"shut off", libvirt.DomainShutoff, int32(libvirt.DomainShutoffShutdown), Status{State: StateShutoff}},
		{"crashed", libvirt.DomainCrashed, 0, Status{State: StateCrashed}},
		{"no state", libvirt.DomainNostate, 0, Status{State: StateUnknown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := statusOf(tc.state, tc.reason); got != tc.want {
				t.Errorf("statusOf(%d, %d) = %+v, want %+v", tc.state, tc.reason, got, tc.want)
			}
		})
	}
}

func TestPauseRefusal(t *testing.T) {
	for _, tc := range []struct {
		state State
		pause bool
		want  string
	}{
		{StateRunning, true, ""},
		{StatePaused, true, launcherrpc.MsgAlreadyPaused},
		{StatePaused, false, ""},
		{StateRunning, false, launcherrpc.MsgNotPaused},
		{StateShutoff, true, launcherrpc.MsgNotRunning},
		{StateGone, false, launcherrpc.MsgNotRunning},
		{StateShutdown, true, launcherrpc.MsgNotRunning},
	} {
		if got := pauseRefusal(tc.state, tc.pause); got != tc.want {
			t.Errorf("pauseRefusal(%s, pause=%v) = %q, want %q", tc.state, tc.pause, got, tc.want)
		}
	}
}
