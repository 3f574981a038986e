package launcher

import (
	"os"
	"path/filepath"
	"testing"
)

// What one daemon probed reaches the next one's cache; other files do not,
// and a missing shared cache is no error.
func TestCapabilitiesShared(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "shared")
	first, second := t.TempDir(), t.TempDir()
	if err := seedCapabilities(shared, first); err != nil {
		t.Fatalf("seed from a missing cache: %v", err)
	}
	probed := filepath.Join(capabilitiesDir(first), "abc.xml")
	if err := os.MkdirAll(filepath.Dir(probed), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(probed, []byte("<qemuCaps/>"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(capabilitiesDir(first), "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := shareCapabilities(shared, first); err != nil {
		t.Fatal(err)
	}
	if err := seedCapabilities(shared, second); err != nil {
		t.Fatal(err)
	}
	if body, err := os.ReadFile(filepath.Join(capabilitiesDir(second), "abc.xml")); err != nil || string(body) != "<qemuCaps/>" {
		t.Errorf("second daemon's cache: %q, %v", body, err)
	}
	entries, _ := os.ReadDir(shared)
	if len(entries) != 1 {
		t.Errorf("shared cache holds %d entries, want only abc.xml", len(entries))
	}
}
