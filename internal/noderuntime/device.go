package noderuntime

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// devRoot is where a container's volumeDevices must be.
const devRoot = "/dev"

// privateDev is a container's own /dev, for its volumeDevices: containers
// here share the host's root and so its /dev, and a device file made at a
// devicePath there would appear on the host and in every other pod. The
// container script instead mounts an overlay over /dev in the container's
// mount namespace — the host's /dev below, a tmpfs above — puts the host's
// /dev submounts (pts, shm, ...) back, and binds each device onto a file it
// makes at its devicePath in that overlay. Nothing reaches the host's /dev.
type privateDev struct {
	// Stage is an empty host directory of the pod's where the tmpfs is
	// mounted (in the container's namespace only) while /dev is built.
	Stage string
	// Submounts are the mounts under the host's /dev, relative to it,
	// outermost only (see devSubmounts).
	Submounts []string
	// Devices are the block devices: Source on the host, Target the
	// devicePath. ReadOnly is not used: a read-only bind mount does not
	// stop writes to a device node. A read-only claim is kept read-only by
	// its one user, the launcher, which hands it to QEMU read-only.
	Devices []bindMount
}

// devices is c's volumeDevices as a private /dev, nil when it has none.
// Each must name a claim volume the pod prepared as a block device, and
// its devicePath must be under /dev (as KubeVirt's /dev/<volume>).
func (w *podWorker) devices(c *container) (*privateDev, error) {
	spec := c.spec
	if len(spec.VolumeDevices) == 0 {
		return nil, nil
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("container %s: private /dev: %w", spec.Name, err)
	}
	d := &privateDev{
		Stage:     filepath.Join(w.dir, "containers", spec.Name, "dev"),
		Submounts: devSubmounts(string(mountinfo)),
	}
	for _, vd := range spec.VolumeDevices {
		src, ok := w.claimDevices[vd.Name]
		if !ok {
			return nil, fmt.Errorf("container %s: volume device %s: no bound persistentVolumeClaim volume %q in volumeMode Block in the pod", spec.Name, vd.DevicePath, vd.Name)
		}
		target := path.Clean(vd.DevicePath)
		rel, err := filepath.Rel(devRoot, target)
		if !path.IsAbs(vd.DevicePath) || err != nil || !filepath.IsLocal(rel) || rel == "." {
			return nil, fmt.Errorf("container %s: volume device %s: devicePath %q must be a path under %s: this node runtime gives a container with volumeDevices a /dev of its own and puts them there",
				spec.Name, vd.Name, vd.DevicePath, devRoot)
		}
		d.Devices = append(d.Devices, bindMount{Source: src, Target: target})
	}
	return d, nil
}

// devSubmounts are the mount points below /dev in a /proc/<pid>/mountinfo,
// relative to /dev, sorted, without those inside another (a recursive bind
// brings those along).
func devSubmounts(mountinfo string) []string {
	var all []string
	for _, line := range strings.Split(mountinfo, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if rel, ok := strings.CutPrefix(mp, devRoot+"/"); ok && rel != "" {
			all = append(all, rel)
		}
	}
	slices.Sort(all)
	all = slices.Compact(all)
	var out []string
	for _, m := range all {
		if n := len(out); n > 0 && strings.HasPrefix(m, out[n-1]+"/") {
			continue
		}
		out = append(out, m)
	}
	return out
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space)
// in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// script is the shell text that builds the private /dev (see
// containerScript, which defines fail).
func (d *privateDev) script() string {
	var b strings.Builder
	stage := shellQuote(d.Stage)
	step := func(cmd, what string) {
		fmt.Fprintf(&b, "%s || fail %s\n", cmd, shellQuote(what))
	}
	step("mount -t tmpfs -o mode=0700 tmpfs "+stage, "private /dev: tmpfs")
	step(fmt.Sprintf("mkdir %s/host %s/upper %s/work", stage, stage, stage), "private /dev: mkdir")
	step("mount --rbind /dev "+stage+"/host", "private /dev: bind the host's /dev")
	// Relative overlay paths: no escaping of the stage's path in options.
	step(fmt.Sprintf("(cd %s && mount -t overlay overlay -o lowerdir=host,upperdir=upper,workdir=work /dev)", stage), "private /dev: overlay")
	for _, m := range d.Submounts {
		step(fmt.Sprintf("mount --rbind %s %s", shellQuote(d.Stage+"/host/"+m), shellQuote(devRoot+"/"+m)), "private /dev: "+devRoot+"/"+m)
	}
	for _, dev := range d.Devices {
		dst := shellQuote(dev.Target)
		if dir := path.Dir(dev.Target); dir != devRoot {
			step("mkdir -p "+shellQuote(dir), "mkdir "+dir)
		}
		step(fmt.Sprintf("{ [ -e %s ] || touch %s; }", dst, dst), "device "+dev.Target)
		step(fmt.Sprintf("mount --bind %s %s", shellQuote(dev.Source), dst), "device "+dev.Target)
	}
	step("umount -l "+stage, "private /dev: unmount the stage")
	return b.String()
}
