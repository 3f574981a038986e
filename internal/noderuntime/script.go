package noderuntime

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// bindMount puts a host directory at a path of a container.
type bindMount struct {
	Source, Target string
	ReadOnly       bool
}

// exitStartError is the exit code a container reports when its mounts could
// not be set up, as runc's: the command never ran.
const exitStartError = 128

// containerScript is what /bin/sh runs as a container's first process, in
// the container's own mount namespace and its pod's network namespace. It
//
//   - makes every mount private, so nothing it mounts reaches the host;
//   - detaches /run/netns, so the container does not pin the network
//     namespaces of other pods (they are freed when their pods go);
//   - gives the container a /dev of its own with its volumeDevices in it,
//     when it has any (see privateDev);
//   - binds each volume at its path (creating empty mount points as
//     needed; these stay on the host as empty directories);
//   - runs the command ("$0" "$@") as a child and forwards SIGTERM and
//     SIGINT to it, so the command alone decides how to stop (virt-launcher
//     shuts its guest down within the grace period);
//   - writes the command's exit code to exitFile, so a runtime that did not
//     start this process (it restarted meanwhile) still learns how it ended.
//
// A failed mount writes "128 StartError" there and ends the script.
func containerScript(mounts []bindMount, dev *privateDev, cgroupProcs []string, exitFile string) string {
	var b strings.Builder
	tmp := shellQuote(exitFile + ".tmp")
	exit := shellQuote(exitFile)
	fmt.Fprintf(&b, "fail() { echo \"virtkube: container setup: $1 failed\" >&2; echo '%d StartError' >%s && mv -f %s %s; exit %d; }\n",
		exitStartError, tmp, tmp, exit, exitStartError)
	// Into the pod's cgroup first: everything started from here on is in it.
	for _, f := range cgroupProcs {
		fmt.Fprintf(&b, "echo $$ >%s || fail %s\n", shellQuote(f), shellQuote("join cgroup "+filepath.Dir(f)))
	}
	b.WriteString("mount --make-rprivate / || fail 'mount --make-rprivate /'\n")
	b.WriteString("umount -l /run/netns 2>/dev/null\n")
	if dev != nil {
		b.WriteString(dev.script())
	}
	for _, m := range mounts {
		src, dst := shellQuote(m.Source), shellQuote(m.Target)
		fmt.Fprintf(&b, "mkdir -p %s || fail %s\n", dst, shellQuote("mkdir "+m.Target))
		fmt.Fprintf(&b, "mount --bind %s %s || fail %s\n", src, dst, shellQuote("mount "+m.Target))
		if m.ReadOnly {
			fmt.Fprintf(&b, "mount -o remount,bind,ro %s || fail %s\n", dst, shellQuote("read-only "+m.Target))
		}
	}
	b.WriteString(`"$0" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
trap 'kill -INT "$child" 2>/dev/null' INT
while :; do
	wait "$child"
	rc=$?
	kill -0 "$child" 2>/dev/null || break
done
`)
	fmt.Fprintf(&b, "echo \"$rc\" >%s && mv -f %s %s\nexit \"$rc\"\n", tmp, tmp, exit)
	return b.String()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// exitRecord is how a container's process ended, as the script wrote it.
type exitRecord struct {
	Code   int32
	Reason string // empty: Completed or Error by the code
}

// parseExitRecord reads "<code>[ <reason>]".
func parseExitRecord(body string) (exitRecord, error) {
	fields := strings.Fields(body)
	if len(fields) == 0 {
		return exitRecord{}, fmt.Errorf("empty exit record")
	}
	code, err := strconv.ParseInt(fields[0], 10, 32)
	if err != nil {
		return exitRecord{}, fmt.Errorf("exit record %q: %w", body, err)
	}
	r := exitRecord{Code: int32(code)}
	if len(fields) > 1 {
		r.Reason = fields[1]
	}
	return r, nil
}
