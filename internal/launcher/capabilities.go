package launcher

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// libvirt probes QEMU's capabilities (it starts QEMU and asks it over QMP)
// the first time a daemon needs them and caches the answer under
// /var/cache/libvirt/qemu/capabilities. A launcher's daemon is new for every
// pod, so every pod paid the probe: ≈3.4 s of the ≈4.3 s from create to
// Running under software emulation. A node-wide copy of that cache, shared
// by the launchers of one machine, makes every pod but the first skip it.
// libvirt checks a cache file against the QEMU and libvirt binaries, the
// kernel and the CPU before it trusts it, so a stale copy only costs a new
// probe.

// capabilitiesDir is where libvirt keeps the cache, under the daemon's Dir.
func capabilitiesDir(daemonDir string) string {
	return filepath.Join(daemonDir, "cache", "qemu", "capabilities")
}

// seedCapabilities copies the shared cache into the daemon's own before it
// starts.
func seedCapabilities(shared, daemonDir string) error {
	entries, err := os.ReadDir(shared)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	dst := capabilitiesDir(daemonDir)
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || filepath.Ext(e.Name()) != ".xml" {
			continue
		}
		body, err := os.ReadFile(filepath.Join(shared, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), body, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// shareCapabilities puts what the daemon probed into the shared cache, each
// file written aside and renamed so a launcher starting at the same time
// reads a whole file or none; files the shared cache has already are left.
func shareCapabilities(shared, daemonDir string) error {
	entries, err := os.ReadDir(capabilitiesDir(daemonDir))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(shared, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || filepath.Ext(e.Name()) != ".xml" {
			continue
		}
		body, err := os.ReadFile(filepath.Join(capabilitiesDir(daemonDir), e.Name()))
		if err != nil {
			return err
		}
		target := filepath.Join(shared, e.Name())
		if have, err := os.ReadFile(target); err == nil && bytes.Equal(have, body) {
			continue
		}
		tmp, err := os.CreateTemp(shared, ".tmp-*")
		if err != nil {
			return err
		}
		_, werr := tmp.Write(body)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr); err != nil {
			os.Remove(tmp.Name())
			return err
		}
		if err := os.Rename(tmp.Name(), target); err != nil {
			os.Remove(tmp.Name())
			return err
		}
	}
	return nil
}
