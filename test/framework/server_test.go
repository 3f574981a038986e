package framework

import "testing"

// FlagValue reads a command line as the parser does: both spellings, the
// last one wins, the default when absent.
func TestFlagValue(t *testing.T) {
	args := []string{"server", "--bridge", "a", "--pod-cidr=10.0.0.0/24", "--bridge=b", "--kube-proxy=false"}
	for _, tc := range []struct{ name, def, want string }{
		{"--bridge", "virtkube0", "b"},
		{"--pod-cidr", "", "10.0.0.0/24"},
		{"--kube-proxy", "true", "false"},
		{"--data-dir", "/var/lib/virtkube", "/var/lib/virtkube"},
	} {
		if got := FlagValue(args, tc.name, tc.def); got != tc.want {
			t.Errorf("FlagValue(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
