package noderuntime

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestIPAM(t *testing.T) {
	type step struct {
		op   string // allocate, release
		uid  types.UID
		want string // allocated IP, or "full"
	}
	tests := []struct {
		name  string
		cidr  string
		steps []step
	}{
		{"first address after the gateway, then the next", "10.250.0.0/24", []step{
			{"allocate", "a", "10.250.0.2"},
			{"allocate", "b", "10.250.0.3"},
			{"allocate", "a", "10.250.0.2"}, // a pod keeps its address
		}},
		{"a released address is handed out again", "10.250.0.0/24", []step{
			{"allocate", "a", "10.250.0.2"},
			{"allocate", "b", "10.250.0.3"},
			{"release", "a", ""},
			{"allocate", "c", "10.250.0.2"},
			{"allocate", "a", "10.250.0.4"},
		}},
		{"exhaustion: a /29 has five pod addresses", "192.168.7.8/29", []step{
			{"allocate", "a", "192.168.7.10"},
			{"allocate", "b", "192.168.7.11"},
			{"allocate", "c", "192.168.7.12"},
			{"allocate", "d", "192.168.7.13"},
			{"allocate", "e", "192.168.7.14"},
			{"allocate", "f", "full"},
			{"release", "c", ""},
			{"allocate", "f", "192.168.7.12"},
		}},
		{"releasing what is not held is fine", "10.250.0.0/30", []step{
			{"release", "x", ""},
			{"allocate", "a", "10.250.0.2"},
			{"allocate", "b", "full"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ipam")
			for i, s := range tt.steps {
				// A fresh ipam each step: the state is the directory,
				// as after a restart.
				a, err := newIPAM(dir, tt.cidr)
				if err != nil {
					t.Fatal(err)
				}
				switch s.op {
				case "allocate":
					got, err := a.Allocate(s.uid)
					if s.want == "full" {
						if !errors.Is(err, ErrPodCIDRExhausted) {
							t.Fatalf("step %d: allocate %s = %v, %v; want exhausted", i, s.uid, got, err)
						}
						continue
					}
					if err != nil || got.IP.String() != s.want {
						t.Fatalf("step %d: allocate %s = %v, %v; want %s", i, s.uid, got, err, s.want)
					}
					if ones, _ := got.Mask.Size(); ones != maskLen(t, tt.cidr) {
						t.Errorf("step %d: mask /%d", i, ones)
					}
					body, err := os.ReadFile(filepath.Join(dir, s.want))
					if err != nil || string(body) != string(s.uid) {
						t.Errorf("step %d: reservation file = %q, %v", i, body, err)
					}
				case "release":
					if err := a.Release(s.uid); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					if held, _ := a.Held(s.uid); len(held) != 0 {
						t.Fatalf("step %d: %s still holds %v", i, s.uid, held)
					}
				}
			}
		})
	}
}

func maskLen(t *testing.T, cidr string) int {
	a, err := newIPAM(t.TempDir(), cidr)
	if err != nil {
		t.Fatal(err)
	}
	ones, _ := a.network.Mask.Size()
	return ones
}

func TestIPAMGatewayAndBadCIDRs(t *testing.T) {
	a, err := newIPAM(t.TempDir(), "10.244.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	if got := a.gateway().String(); got != "10.244.0.1/24" {
		t.Errorf("gateway = %s", got)
	}
	for _, bad := range []string{"", "10.0.0.0", "fd00::/64", "10.0.0.0/31", "10.0.0.0/32"} {
		if _, err := newIPAM(t.TempDir(), bad); err == nil {
			t.Errorf("newIPAM(%q) accepted", bad)
		}
	}
}

// A reservation another pod made meanwhile (another runtime process, or a
// file left by a crash) is never handed out twice.
func TestIPAMSkipsForeignReservations(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "10.250.0.2"), []byte("other"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, _ := newIPAM(dir, "10.250.0.0/24")
	got, err := a.Allocate("mine")
	if err != nil || got.IP.String() != "10.250.0.3" {
		t.Fatalf("allocate = %v, %v; want 10.250.0.3", got, err)
	}
	owners, err := a.Owners()
	if err != nil || owners["10.250.0.2"] != "other" || owners["10.250.0.3"] != "mine" || len(owners) != 2 {
		t.Errorf("owners = %v, %v", owners, err)
	}
}
